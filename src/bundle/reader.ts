/**
 * Reads a bundle from a stream, one pass, nothing staged: the manifest first (validated), then
 * each data member as a stream whose bytes are hashed as they pass, then the trailer, against
 * which every member's size and sha256 are checked. Any surprise (unknown, repeated or misordered
 * member, non-file entry, missing trailer, wrong checksum) is a BundleError naming the member.
 * Callers must treat what they did with a member as provisional until members() has finished.
 */
import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { BundleError, FerryError, TrustError } from '../errors.js';
import { decompressor } from './codec.js';
import { openEnvelope, type Encryption } from './envelope.js';
import { SizeLimit } from './limit.js';
import {
  MANIFEST_MEMBER,
  MAX_JSON_MEMBER,
  SIG_MEMBER,
  SUMS_MEMBER,
  TRAILER_MEMBER,
  parseManifest,
  parseTrailer,
  sha256sums,
  signedSums,
  type Manifest,
  type MemberPlan,
  type Trailer,
  type TrailerMember,
} from './manifest.js';
import { partName } from './writer.js';
import { fingerprint, parseSignature, verifyMessage } from './sshsig.js';
import { BUNDLE_NAMESPACE, checkNamespace, checkSigner, describeKey, type Trust } from './trust.js';

/** Who signed a bundle, once its signature has been checked (BundleReader.signer). */
export interface SignerInfo {
  /** `ssh-ed25519 AAAA...` */
  key: string;
  fingerprint: string;
  /** With --trust: the principals of the allowed_signers line that allows the key. */
  principals?: string[];
  /** With --trust: the allowed_signers file consulted. */
  trustedBy?: string;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

type Entry = Readable & { header: tar.Header };

export interface DataMember {
  plan: MemberPlan;
  /**
   * The member's bytes: as stored (possibly compressed), or, with members({ decode: true }),
   * decompressed and held to the sizes the manifest declares. Consume it, or leave it: the reader
   * drains the rest.
   */
  stream: Readable;
  /** How many of the member's tar entries (parts) have been read so far; 1 for a member in one entry. */
  partsRead: () => number;
}

const PART = /^(.*)\.part(\d{6})$/;

async function readSmall(e: Entry, member: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of e) {
    n += (c as Buffer).length;
    if (n > MAX_JSON_MEMBER) throw new BundleError(`${member} is larger than ${MAX_JSON_MEMBER} bytes`, { member });
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

export class BundleReader {
  private trailerValue?: Trailer;
  /** The encryption header of an encrypted bundle (undefined for a plain one). */
  encryption?: Encryption;
  /** The first problem found in the bundle itself, if any: what a failed consumer should report. */
  failure?: BundleError;
  /** The trailer as read, before it was checked (set even when a check fails): for `ferry verify`. */
  unverifiedTrailer?: Trailer;
  /** A signed bundle, after members() has completed: its checked signer. */
  signer?: SignerInfo;
  private readonly seen: TrailerMember[] = [];
  private manifestSha = '';
  private trust?: Trust;

  private constructor(
    readonly manifest: Manifest,
    readonly location: string,
    private readonly next: () => Promise<Entry | undefined>,
    private readonly destroy: (err?: Error) => void,
  ) {}

  /**
   * `trust` (--trust): the bundle must be signed by a key its allowed_signers allow. An unsigned
   * bundle or one declaring an unknown or revoked key is refused here, right after the manifest
   * (a TrustError); the signature itself is checked after the last member (members()). Without
   * it, a signed bundle's signature must still be valid (a BundleError otherwise).
   */
  static async open(
    src: Readable,
    location: string,
    opts: { passphrase?: string; identities?: string[]; trust?: Trust } = {},
  ): Promise<BundleReader> {
    const extract = tar.extract();
    // Encrypted bundles (age, or ferry's own format) are decrypted on the way; plain ones pass through untouched.
    let env: Awaited<ReturnType<typeof openEnvelope>>;
    try {
      env = await openEnvelope(src, location, { passphrase: opts.passphrase, identities: opts.identities });
    } catch (err) {
      src.destroy();
      if (err instanceof FerryError) throw err;
      throw new BundleError(`${location} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    const dec = env.stream;
    if (dec !== src) src.on('error', (err) => dec.destroy(err));
    dec.on('error', (err) => extract.destroy(err));
    extract.on('error', () => {}); // surfaced through the iterator
    dec.pipe(extract);
    const it = extract[Symbol.asyncIterator]() as AsyncIterator<Entry>;
    const next = async (): Promise<Entry | undefined> => {
      let r: IteratorResult<Entry>;
      try {
        r = await it.next();
      } catch (err) {
        if (err instanceof FerryError) throw err; // decryption: wrong passphrase, damaged ciphertext
        throw new BundleError(`${location} is not a complete bundle: ${(err as Error).message}`, {
          cause: err,
          hint: 'the file is truncated or damaged; run `ferry verify` on it',
        });
      }
      if (r.done) return undefined;
      const e = r.value;
      if (e.header.type !== 'file') {
        e.resume();
        throw new BundleError(`${location}: member ${e.header.name} is a ${e.header.type}, not a file`, {
          member: e.header.name,
        });
      }
      return e;
    };
    const destroy = (err?: Error) => {
      dec.unpipe(extract);
      extract.destroy(err);
      dec.destroy();
      src.destroy();
    };
    let first: Entry | undefined;
    try {
      first = await next();
    } catch (err) {
      destroy();
      if (err instanceof BundleError && !env.encryption())
        throw new BundleError(`${location} is not a ferry bundle (not a tar archive)`, {
          cause: err,
          hint: 'check the path',
        });
      throw err;
    }
    if (!first || first.header.name !== MANIFEST_MEMBER) {
      destroy();
      throw new BundleError(
        `${location} is not a ferry bundle: its first member is ${first ? first.header.name : 'missing'}, not ${MANIFEST_MEMBER}`,
        {
          member: MANIFEST_MEMBER,
        },
      );
    }
    let manifest: Manifest;
    let manifestSha: string;
    try {
      const bytes = await readSmall(first, MANIFEST_MEMBER);
      manifestSha = sha256(bytes);
      manifest = parseManifest(bytes.toString('utf8'));
    } catch (err) {
      destroy();
      throw asBundleError(err, location);
    }
    const reader = new BundleReader(manifest, location, next, destroy);
    reader.encryption = env.encryption();
    reader.manifestSha = manifestSha;
    reader.trust = opts.trust;
    if (opts.trust) {
      try {
        const trust = opts.trust;
        if (!manifest.signature)
          throw new TrustError(`${location} is not signed; --trust ${trust.file} accepts only signed bundles`, {
            hint: 'nothing was changed; sign backups with --sign-key (FERRY_SIGN_KEY), or restore without --trust',
          });
        checkSigner(trust, declaredKey(manifest), BUNDLE_NAMESPACE);
      } catch (err) {
        destroy();
        throw err;
      }
    }
    return reader;
  }

  /** After members() has completed: the verified trailer. */
  get trailer(): Trailer {
    if (!this.trailerValue) throw new Error('BundleReader: trailer not read yet');
    return this.trailerValue;
  }

  close(): void {
    this.destroy();
  }

  /**
   * The data members, in order. With `decode`, each stream carries the decompressed bytes, and a
   * member may not inflate past what the manifest declared before its data: its rawBytes (bundles
   * written to a file), or partRawBytes for each of its parts (bundles written to a stream, where
   * every part is a frame of its own and is decompressed on its own). Past that it is stopped
   * with a BundleError (decompression bombs).
   */
  async *members(opts: { decode?: boolean } = {}): AsyncGenerator<DataMember> {
    let pending: Entry | undefined;
    let lastIndex = -1;
    const order = this.manifest.members.map((m) => m.name);
    try {
      pending = await this.next();
      while (pending) {
        const entryName = pending.header.name;
        if (entryName === TRAILER_MEMBER) {
          await this.readTrailer(pending);
          return;
        }
        const pm = PART.exec(entryName);
        const name = pm ? pm[1]! : entryName;
        if (pm && pm[2] !== '000000')
          throw new BundleError(`member ${entryName} starts in the middle of a member`, { member: name });
        const idx = order.indexOf(name);
        if (idx < 0)
          throw new BundleError(`unknown member ${JSON.stringify(entryName)}: the manifest does not list it`, {
            member: entryName,
          });
        if (idx <= lastIndex) throw new BundleError(`member ${name} appears twice or out of order`, { member: name });
        lastIndex = idx;
        const plan = this.manifest.members[idx]!;
        const decode = !!opts.decode && plan.codec !== 'none';
        const partRaw = this.manifest.partRawBytes;
        // Part by part: each part through a decompressor of its own, held to partRawBytes.
        const perPart = decode && partRaw !== undefined;
        const out = new PassThrough({ highWaterMark: 1 << 20 });
        // The consumer may not be reading yet when the feed fails; the failure reaches it through
        // the destroyed stream and, below, through `await feeding`.
        out.on('error', () => {});
        const hash = createHash('sha256');
        let bytes = 0;
        let parts = 0;
        let following: Entry | undefined;
        let first: Entry = pending;
        const feed = async () => {
          let e: Entry | undefined = first;
          while (e) {
            parts++;
            const stored = async function* (src: AsyncIterable<Buffer>) {
              for await (const chunk of src) {
                hash.update(chunk);
                bytes += chunk.length;
                yield chunk;
              }
            };
            // Waits for room (or the end) without leaving listeners behind: a slow consumer
            // makes it wait thousands of times per member.
            const room = () =>
              new Promise<void>((resolve) => {
                const go = () => {
                  out.off('drain', go);
                  out.off('close', go);
                  resolve();
                };
                out.on('drain', go);
                out.on('close', go);
              });
            const forward = async (src: AsyncIterable<Buffer>) => {
              for await (const chunk of src) if (!out.destroyed && !out.write(chunk)) await room();
            };
            if (perPart) {
              const part = pm ? `${name} (part ${parts - 1})` : name;
              const d = decompressor(plan.codec, plan.name);
              let decodeError: Error | undefined;
              d.once('error', (err) => (decodeError = err));
              await pipeline(e, stored, d, new SizeLimit(partRaw, part), forward).catch((err: Error) => {
                throw err instanceof BundleError ? err : decodeError ? damaged(decodeError, plan, part) : err;
              });
            } else {
              await pipeline(e, stored, forward);
            }
            if (!pm) break;
            const nx = await this.next();
            if (nx && nx.header.name === partName(name, parts)) {
              e = nx;
            } else {
              following = nx;
              e = undefined;
            }
          }
          out.end();
        };
        const feeding = feed().catch((err) => {
          const be =
            err instanceof BundleError
              ? err
              : new BundleError(
                  `${this.location} is not a complete bundle: member ${name} ends early (${(err as Error).message})`,
                  {
                    member: name,
                    cause: err,
                    hint: 'the file is truncated or damaged; run `ferry verify` on it',
                  },
                );
          this.failure ??= be;
          out.destroy(be);
          throw be;
        });
        feeding.catch(() => {});
        let stream: Readable = out;
        if (decode && !perPart) {
          // The whole member through one decompressor, held to its declared raw size if any.
          const d = decompressor(plan.codec, plan.name);
          d.on('error', (err) => (this.failure ??= damaged(err, plan, name)));
          if (plan.rawBytes !== undefined) {
            const limit = new SizeLimit(plan.rawBytes, name);
            limit.on('error', (err) => (this.failure ??= err as BundleError));
            stream = limit;
            pipeline(out, d, limit).catch(() => {});
          } else {
            stream = d;
            pipeline(out, d).catch(() => {});
          }
        }
        yield { plan, stream, partsRead: () => parts };
        stream.resume(); // drain anything the consumer left
        out.resume();
        await feeding;
        this.seen.push({ name, bytes, sha256: hash.digest('hex'), rawBytes: -1, ...(parts > 1 ? { parts } : {}) });
        pending = pm ? following : await this.next();
        first = pending as Entry;
      }
      throw new BundleError(`${this.location} is incomplete: it ends without ${TRAILER_MEMBER}`, {
        member: TRAILER_MEMBER,
        hint: 'the backup that wrote it was interrupted, or the file was truncated',
      });
    } catch (err) {
      throw asBundleError(err, this.location);
    } finally {
      if (!this.trailerValue) this.destroy();
    }
  }

  private async readTrailer(e: Entry) {
    const trailerBytes = await readSmall(e, TRAILER_MEMBER);
    const trailer = parseTrailer(trailerBytes.toString('utf8'), this.manifest);
    this.unverifiedTrailer = trailer;
    for (const tm of trailer.members) {
      const got = this.seen.find((s) => s.name === tm.name);
      if (!got) throw new BundleError(`member ${tm.name} is missing from the bundle`, { member: tm.name });
      if (got.bytes !== tm.bytes)
        throw new BundleError(`member ${tm.name} has ${got.bytes} bytes, the trailer says ${tm.bytes}`, {
          member: tm.name,
        });
      if (got.sha256 !== tm.sha256)
        throw new BundleError(`member ${tm.name} is damaged: its sha256 does not match`, { member: tm.name });
    }
    const sums = await this.next();
    if (!sums || sums.header.name !== SUMS_MEMBER)
      throw new BundleError(`${SUMS_MEMBER} is missing after ${TRAILER_MEMBER}`, { member: SUMS_MEMBER });
    const text = await readSmall(sums, SUMS_MEMBER);
    if (this.manifest.signature) {
      const sig = await this.next();
      const sigText = sig?.header.name === SIG_MEMBER ? await readSmall(sig, SIG_MEMBER) : undefined;
      this.checkSignature(text, signedSums(this.manifestSha, trailer, sha256(trailerBytes)), sigText);
    } else if (text.toString('utf8') !== sha256sums(trailer))
      throw new BundleError(`${SUMS_MEMBER} does not match ${TRAILER_MEMBER}`, { member: SUMS_MEMBER });
    const extra = await this.next();
    if (extra)
      throw new BundleError(`unexpected member ${JSON.stringify(extra.header.name)} after ${SUMS_MEMBER}`, {
        member: extra.header.name,
      });
    this.trailerValue = trailer;
  }

  /**
   * A signed bundle: SHA256SUMS.sig is a valid SSHSIG signature, in the bundle namespace, by the
   * key the manifest declared, of the SHA256SUMS stored, which lists the bytes read (manifest,
   * members, trailer); with --trust the key is allowed. A failure is a TrustError with --trust
   * (naming the signer and the file), else a BundleError.
   */
  private checkSignature(stored: Buffer, expected: string, sigText: Buffer | undefined): void {
    const declared = declaredKey(this.manifest);
    const trust = this.trust;
    const fail = (why: string): never => {
      const msg = `${this.location}: ${why} (signer declared: ${describeKey(declared)})`;
      if (trust)
        throw new TrustError(`${msg}; checked against ${trust.file}`, {
          hint: 'the bundle was changed after it was signed, or signed by someone else; do not restore it',
        });
      throw new BundleError(msg, { member: SIG_MEMBER, hint: 'the bundle was changed after it was signed' });
    };
    if (!sigText) return fail(`${SIG_MEMBER} is missing, yet the manifest says the bundle is signed`);
    let sig;
    try {
      sig = parseSignature(sigText.toString('utf8'));
    } catch (err) {
      return fail(`${SIG_MEMBER} is not a valid SSH signature (${(err as Error).message})`);
    }
    if (!sig.publicKey.blob.equals(declared))
      return fail(`${SIG_MEMBER} is signed by ${describeKey(sig.publicKey.blob)}, not the key the manifest declares`);
    if (trust) checkNamespace(sig, trust.file);
    else if (sig.namespace !== BUNDLE_NAMESPACE) return fail(`${SIG_MEMBER} is in namespace ${sig.namespace}`);
    if (!verifyMessage(sig, stored))
      return fail(`the signature in ${SIG_MEMBER} does not verify: ${SUMS_MEMBER} was changed`);
    if (stored.toString('utf8') !== expected) {
      const signed = new Set(stored.toString('utf8').split('\n'));
      const changed = expected
        .split('\n')
        .filter((l) => l && !signed.has(l))
        .map((l) => l.slice(66));
      return fail(
        `${changed.join(', ') || 'the bundle'} does not match the signed ${SUMS_MEMBER}: changed after signing`,
      );
    }
    const signer = trust ? checkSigner(trust, declared, BUNDLE_NAMESPACE) : undefined;
    this.signer = {
      key: this.manifest.signature!.key,
      fingerprint: fingerprint(declared),
      ...(signer && trust ? { principals: signer.principals, trustedBy: trust.file } : {}),
    };
  }
}

/** The key a signed bundle's manifest declares, SSH wire form. */
function declaredKey(m: Manifest): Buffer {
  return Buffer.from(m.signature!.key.split(' ')[1] ?? '', 'base64');
}

/** Errors of the tar parser or of torn-down streams, as the damaged bundle they mean. */
function asBundleError(err: unknown, location: string): FerryError {
  if (err instanceof FerryError) return err;
  return new BundleError(`${location} is not a complete bundle: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
    hint: 'the file is truncated or damaged; run `ferry verify` on it',
  });
}

/** A decompression failure as the bundle's problem, naming the member (or part) that does not decompress. */
function damaged(err: Error, plan: MemberPlan, what: string): BundleError {
  return err instanceof BundleError
    ? err
    : new BundleError(`member ${what} is damaged: it does not decompress (${err.message})`, {
        member: plan.name,
        cause: err,
      });
}
