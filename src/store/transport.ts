/**
 * A bundle being written (BundleSink), and one bundle location as the backup, restore and drill
 * operations take it (Transport). Both come from a Store (store.ts): a Transport is a handle on
 * one bundle of a store (target.ts, made by the registry from a command-line location), not a
 * storage abstraction of its own.
 */
import type { Readable } from 'node:stream';
import type { HostAccess } from '../hostaccess/access.js';
import type { VolumeTree } from '../data/volumes.js';
import type { DataPath } from '../data/paths.js';

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

/**
 * A bundle location some of whose volumes can also be written without going through the bundle
 * (a restic snapshot's file trees, written by `restic restore`: store/restic/snapshot.ts).
 * restore asks it before it opens the bundle.
 */
export interface DirectSource {
  /**
   * Given what the target engine's host offers: the volume members this source writes itself
   * (by member name), and the bundle to read for the rest, in which those members are empty
   * placeholders; or why it writes none (`members`: those it would have written).
   */
  take(access: HostAccess): Promise<DirectVolumes | NoDirectVolumes>;
}

export interface DirectVolumes {
  transport: Transport;
  volumes: Map<string, VolumeTree>;
}

export interface NoDirectVolumes {
  refused: string;
  /** The volume members it would have written, and by which path (their fallback's `from`). */
  members: string[];
  path: DataPath;
}
