/**
 * `-`: write the bundle to stdout, read it from stdin. A pipe cannot seek back to patch a tar
 * header, so the bundle writer cuts members into parts (see bundle/writer.ts).
 */
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { IoError, UsageError } from '../errors.js';
import { NO_CAPABILITIES, type BundleInfo, type OpenedBundle, type Store, type StoreCapabilities } from './store.js';
import type { StoreLock } from './lock.js';
import type { BundleSink } from './transport.js';

class StreamSink implements BundleSink {
  readonly seekable = false;
  position = 0;
  constructor(
    private readonly out: Writable,
    readonly name: string,
  ) {}
  get location() {
    return 'stdout';
  }
  async write(chunk: Buffer): Promise<void> {
    if (this.out.destroyed) throw new IoError('stdout was closed before the bundle was complete');
    this.position += chunk.length;
    if (!this.out.write(chunk))
      await Promise.race([
        once(this.out, 'drain'),
        once(this.out, 'close').then(() => {
          throw new IoError('stdout was closed before the bundle was complete');
        }),
      ]);
  }
  async writeAt(): Promise<void> {
    throw new Error('stdout is not seekable');
  }
  async commit(): Promise<void> {
    await new Promise<void>((resolve, reject) =>
      this.out.write(Buffer.alloc(0), (err) => (err ? reject(err) : resolve())),
    );
  }
  async abort(): Promise<void> {
    // A consumer of a truncated stream sees no trailer and rejects the bundle.
  }
}

/**
 * `-`: one bundle written to stdout or read from stdin (in tests, any pair of streams). It has no
 * names: create() and open() ignore theirs, and stdin can be read only once.
 */
export class StreamStore implements Store {
  /** A pipe: written and read once, front to back; nothing but the bytes. */
  readonly capabilities: StoreCapabilities = NO_CAPABILITIES;
  private read = false;

  constructor(
    private readonly out: Writable = process.stdout,
    private readonly inp: Readable = process.stdin,
  ) {}

  describe(): string {
    return '-';
  }

  async exists(): Promise<boolean> {
    return false;
  }

  async create(name: string): Promise<BundleSink> {
    if ((this.out as { isTTY?: boolean }).isTTY)
      throw new UsageError('refusing to write a bundle to a terminal', 'redirect stdout to a file or a pipe');
    return new StreamSink(this.out, name);
  }

  async open(_name: string, range?: unknown): Promise<OpenedBundle> {
    if (range) throw this.cannot('read part of a bundle');
    if ((this.inp as { isTTY?: boolean }).isTTY)
      throw new UsageError(
        'expected a bundle on stdin, but stdin is a terminal',
        'pipe a bundle in, e.g. `ferry restore - < bundle.tar`',
      );
    if (this.read) throw this.cannot('read the bundle a second time');
    this.read = true;
    return { stream: this.inp, location: 'stdin' };
  }

  private cannot(what: string): UsageError {
    return new UsageError(`- (stdin/stdout) cannot ${what}: it is a stream`, 'use a file or a store directory');
  }

  async list(): Promise<BundleInfo[]> {
    throw this.cannot('list bundles');
  }

  async stat(): Promise<BundleInfo | undefined> {
    throw this.cannot('look a bundle up');
  }

  async remove(): Promise<void> {
    throw this.cannot('remove a bundle');
  }

  async rename(): Promise<void> {
    throw this.cannot('rename a bundle');
  }

  async lock(): Promise<StoreLock> {
    throw this.cannot('be locked');
  }

  async close(): Promise<void> {}
}
