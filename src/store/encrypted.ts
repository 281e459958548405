/**
 * `--encrypt`: any transport, with the bundle encrypted as it is written (bundle/crypto.ts). The
 * sink cannot seek (the ciphertext of a patched header would change), so the bundle writer cuts
 * members into parts, as on a pipe.
 */
import type { Readable } from 'node:stream';
import { CHUNK, newKey, sealChunk, type EncHeader, type Keyed } from '../bundle/crypto.js';
import type { BundleSink, Transport } from './transport.js';

class EncryptingSink implements BundleSink {
  readonly seekable = false;
  position = 0;
  private buf: Buffer[] = [];
  private len = 0;
  private counter = 0n;
  private started = false;

  constructor(
    private readonly inner: BundleSink,
    private readonly k: Keyed,
  ) {}

  get location() {
    return this.inner.location;
  }

  async write(chunk: Buffer): Promise<void> {
    if (!this.started) {
      this.started = true;
      await this.inner.write(this.k.header);
    }
    this.position += chunk.length;
    this.buf.push(chunk);
    this.len += chunk.length;
    // Hold at least one byte back: the last chunk must carry the final flag.
    while (this.len > CHUNK) {
      const all = Buffer.concat(this.buf, this.len);
      await this.inner.write(sealChunk(this.k, this.counter++, all.subarray(0, CHUNK), false));
      const rest = Buffer.from(all.subarray(CHUNK));
      this.buf = [rest];
      this.len = rest.length;
    }
  }

  async writeAt(): Promise<void> {
    throw new Error('an encrypted bundle cannot be patched in place');
  }

  async commit(): Promise<void> {
    if (!this.started) await this.inner.write(this.k.header);
    await this.inner.write(sealChunk(this.k, this.counter++, Buffer.concat(this.buf, this.len), true));
    this.buf = [];
    this.len = 0;
    await this.inner.commit();
  }

  abort(): Promise<void> {
    return this.inner.abort();
  }
}

export class EncryptingTransport implements Transport {
  constructor(
    private readonly inner: Transport,
    private readonly passphrase: string,
    private readonly meta: EncHeader['meta'],
  ) {}
  describe() {
    return this.inner.describe();
  }
  get rereadable() {
    return this.inner.rereadable;
  }
  async createBundle(suggestedName: string): Promise<BundleSink> {
    const k = await newKey(this.passphrase, this.meta);
    return new EncryptingSink(await this.inner.createBundle(suggestedName), k);
  }
  openBundle(): Promise<{ stream: Readable; location: string; size?: number }> {
    return this.inner.openBundle();
  }
  close() {
    return this.inner.close();
  }
}
