/**
 * A bundle being written (BundleSink), and one bundle location as the backup, restore and drill
 * operations take it (Transport). Both come from a Store (store.ts): a Transport is a handle on
 * one bundle of a store (target.ts, made by the registry from a command-line location), not a
 * storage abstraction of its own.
 */
import type { Readable } from 'node:stream';

/** A bundle being written. Nothing at its final name until commit(). */
export interface BundleSink {
  /** Where the bundle will be once committed (for messages). */
  readonly location: string;
  /** Its name in its store (chosen by Store.create(): may differ from the one asked for). */
  readonly name: string;
  /** True when writeAt() can patch bytes already written (files, SFTP); false for pipes. */
  readonly seekable: boolean;
  /** Bytes written so far. */
  readonly position: number;
  write(chunk: Buffer): Promise<void>;
  /** Optional: append several buffers in one gathered write, without joining them first. */
  writev?(chunks: Buffer[], written?: () => void): Promise<void>;
  writeAt(chunk: Buffer, position: number): Promise<void>;
  /**
   * Optional (local files): forget everything written from `position` on, so that the next write
   * goes there. A member whose source failed half-way can then be written again from its start.
   */
  rewind?(position: number): Promise<void>;
  /** Flush, fsync and move the bundle to its final name. */
  commit(): Promise<void>;
  /** Remove whatever was written. Safe to call more than once, and after commit() it does nothing. */
  abort(): Promise<void>;
}

/** One bundle location: where a bundle is written to (createBundle) or read from (openBundle). */
export interface Transport {
  describe(): string;
  /** True when openBundle() can be called again for a second, independent read (files, SFTP; not a pipe). */
  readonly rereadable: boolean;
  /** Start a new bundle. `suggestedName` is used when the target is a store (a directory). */
  createBundle(suggestedName: string): Promise<BundleSink>;
  /** Open a bundle for reading, as a stream. */
  openBundle(): Promise<{ stream: Readable; location: string; size?: number }>;
  close(): Promise<void>;
}
