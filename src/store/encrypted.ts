/**
 * `--encrypt`, `--recipient`: any store, with its bundles encrypted as they are written (age,
 * bundle/age.ts) and decrypted as they are read (bundle/envelope.ts). The sink cannot seek (the ciphertext of a patched header would change)
 * nor rewind, so the bundle writer cuts members into parts, as on a pipe; nor can a range be read
 * without the chunks before it. Listing, removing, renaming and locking are the inner store's.
 */
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { ageEncrypt, type AgeKeys, type AgeMeta, type AgeTarget } from '../bundle/age.js';
import { openEnvelope } from '../bundle/envelope.js';
import { UsageError } from '../errors.js';
import type { LockOptions, StoreLock } from './lock.js';
import type { BundleInfo, ByteRange, CreateOptions, OpenedBundle, Store, StoreCapabilities } from './store.js';
import type { BundleSink } from './transport.js';

/**
 * The bundle written through age (bundle/age.ts): the plaintext goes into a pipe the encrypter
 * reads, the ciphertext it gives is written to the inner sink as it comes. Memory: the pipe's
 * buffer (1 MiB) and one 64 KiB chunk.
 */
class AgeSink implements BundleSink {
  readonly seekable = false;
  position = 0;
  private readonly plain = new PassThrough({ highWaterMark: 1 << 20 });
  private readonly pump: Promise<void>;
  private failed?: Error;

  constructor(
    private readonly inner: BundleSink,
    target: AgeTarget,
    meta: AgeMeta | undefined,
  ) {
    this.pump = (async () => {
      const cipher = await ageEncrypt(this.plain, target, meta);
      for await (const c of cipher) await this.inner.write(c as Buffer);
    })();
    this.pump.catch((err: Error) => {
      this.failed = err;
      this.plain.destroy();
    });
  }

  get location() {
    return this.inner.location;
  }

  get name() {
    return this.inner.name;
  }

  private check(): void {
    if (this.failed) throw this.failed;
  }

  async write(chunk: Buffer): Promise<void> {
    this.check();
    this.position += chunk.length;
    if (!this.plain.write(chunk))
      await Promise.race([once(this.plain, 'drain'), this.pump.then(() => undefined)]).catch(() => undefined);
    this.check();
  }

  async writeAt(): Promise<void> {
    throw new Error('an encrypted bundle cannot be patched in place');
  }

  async commit(): Promise<void> {
    this.plain.end();
    await this.pump;
    await this.inner.commit();
  }

  async abort(): Promise<void> {
    this.plain.destroy();
    await this.pump.catch(() => undefined);
    return this.inner.abort();
  }
}

/** How an EncryptedStore writes (a passphrase, or age recipients) and reads (a passphrase, identities). */
export type EncryptOptions = AgeTarget & AgeKeys;

/**
 * A store whose bundles are encrypted: written as age files (to a passphrase, or to recipients),
 * read back decrypted (age, ferry's former format, or plain).
 */
export class EncryptedStore implements Store {
  readonly capabilities: StoreCapabilities;

  constructor(
    readonly inner: Store,
    private readonly keys: EncryptOptions,
  ) {
    this.capabilities = { ...inner.capabilities, seekable: false, rewindable: false, rangeReads: false };
  }

  describe(name?: string): string {
    return this.inner.describe(name);
  }

  exists(): Promise<boolean> {
    return this.inner.exists();
  }

  /** `opts.meta` goes into the clear header when encrypting to recipients (for `ls` and `prune` without the key). */
  async create(name: string, opts: CreateOptions = {}): Promise<BundleSink> {
    const target: AgeTarget = this.keys.recipients?.length
      ? { recipients: this.keys.recipients }
      : { passphrase: this.keys.passphrase };
    const meta = opts.meta ? { createdAt: opts.meta.createdAt, containers: opts.meta.containers } : undefined;
    return new AgeSink(await this.inner.create(name, opts), target, meta);
  }

  /** The plaintext (a bundle that is not encrypted passes through as it is). */
  async open(name: string, range?: ByteRange): Promise<OpenedBundle> {
    if (range)
      throw new UsageError(`${this.describe(name)}: part of an encrypted bundle cannot be read without the rest`);
    const src = await this.inner.open(name);
    const env = await openEnvelope(src.stream, src.location, {
      passphrase: this.keys.passphrase,
      identities: this.keys.identities,
    });
    return {
      stream: env.stream,
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
