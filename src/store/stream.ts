/**
 * `-`: write the bundle to stdout, read it from stdin. A pipe cannot seek back to patch a tar
 * header, so the bundle writer cuts members into parts (see bundle/writer.ts).
 */
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { IoError, UsageError } from '../errors.js';
import type { BundleSink, Transport } from './transport.js';

class StreamSink implements BundleSink {
  readonly seekable = false;
  position = 0;
  constructor(private readonly out: Writable) {}
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

export class StreamTransport implements Transport {
  readonly rereadable = false;
  constructor(
    private readonly out: Writable = process.stdout,
    private readonly inp: Readable = process.stdin,
  ) {}
  describe() {
    return '-';
  }
  async createBundle(): Promise<BundleSink> {
    if ((this.out as { isTTY?: boolean }).isTTY)
      throw new UsageError('refusing to write a bundle to a terminal', 'redirect stdout to a file or a pipe');
    return new StreamSink(this.out);
  }
  async openBundle() {
    if ((this.inp as { isTTY?: boolean }).isTTY)
      throw new UsageError(
        'expected a bundle on stdin, but stdin is a terminal',
        'pipe a bundle in, e.g. `ferry restore - < bundle.tar`',
      );
    return { stream: this.inp, location: 'stdin' };
  }
  async close() {}
}
