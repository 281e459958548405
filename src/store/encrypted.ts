/**
 * `--encrypt`: any store, with its bundles encrypted as they are written and decrypted as they are
 * read (bundle/crypto.ts). The sink cannot seek (the ciphertext of a patched header would change)
 * nor rewind, so the bundle writer cuts members into parts, as on a pipe; nor can a range be read
 * without the chunks before it. Listing, removing, renaming and locking are the inner store's.
 */
import { CHUNK, DecryptStream, newKey, sealChunk, type Keyed } from '../bundle/crypto.js';
import { UsageError } from '../errors.js';
import type { LockOptions, StoreLock } from './lock.js';
import type { BundleInfo, ByteRange, CreateOptions, OpenedBundle, Store, StoreCapabilities } from './store.js';
import type { BundleSink } from './transport.js';

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

  get name() {
    return this.inner.name;
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

/** A store whose bundles are encrypted with a passphrase: written encrypted, read back decrypted. */
export class EncryptedStore implements Store {
  readonly capabilities: StoreCapabilities;

  constructor(
    readonly inner: Store,
    private readonly passphrase: string,
  ) {
    this.capabilities = { ...inner.capabilities, seekable: false, rewindable: false, rangeReads: false };
  }

  describe(name?: string): string {
    return this.inner.describe(name);
  }

  exists(): Promise<boolean> {
    return this.inner.exists();
  }

  /** `opts.meta` goes into the clear header (for `ls` and `prune` without the passphrase). */
  async create(name: string, opts: CreateOptions = {}): Promise<BundleSink> {
    const k = await newKey(this.passphrase, opts.meta);
    return new EncryptingSink(await this.inner.create(name, opts), k);
  }

  /** The plaintext (a bundle that is not encrypted passes through as it is). */
  async open(name: string, range?: ByteRange): Promise<OpenedBundle> {
    if (range)
      throw new UsageError(`${this.describe(name)}: part of an encrypted bundle cannot be read without the rest`);
    const src = await this.inner.open(name);
    const dec = new DecryptStream(this.passphrase, src.location, true);
    src.stream.on('error', (err) => dec.destroy(err));
    dec.on('close', () => src.stream.destroy());
    return {
      stream: src.stream.pipe(dec),
      location: src.location,
      ...(src.size !== undefined ? { size: src.size } : {}),
    };
  }

  list(): Promise<BundleInfo[]> {
    return this.inner.list();
  }

  stat(name: string): Promise<BundleInfo | undefined> {
    return this.inner.stat(name);
  }

  remove(name: string): Promise<void> {
    return this.inner.remove(name);
  }

  rename(name: string, to: string): Promise<void> {
    return this.inner.rename(name, to);
  }

  lock(opts: LockOptions): Promise<StoreLock> {
    return this.inner.lock(opts);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
