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
import { BundleError, FerryError } from '../errors.js';
import { decompressor } from './codec.js';
import { DecryptStream, type EncHeader } from './crypto.js';
import { SizeLimit } from './limit.js';
import {
  MANIFEST_MEMBER,
  MAX_JSON_MEMBER,
  SUMS_MEMBER,
  TRAILER_MEMBER,
  parseManifest,
  parseTrailer,
  sha256sums,
  type Manifest,
  type MemberPlan,
  type Trailer,
  type TrailerMember,
} from './manifest.js';
import { partName } from './writer.js';

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

async function readSmall(e: Entry, member: string): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of e) {
    n += (c as Buffer).length;
    if (n > MAX_JSON_MEMBER) throw new BundleError(`${member} is larger than ${MAX_JSON_MEMBER} bytes`, { member });
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export class BundleReader {
  private trailerValue?: Trailer;
  /** The encryption header of an encrypted bundle (undefined for a plain one). */
  encryption?: EncHeader;
  /** The first problem found in the bundle itself, if any: what a failed consumer should report. */
  failure?: BundleError;
  /** The trailer as read, before it was checked (set even when a check fails): for `ferry verify`. */
  unverifiedTrailer?: Trailer;
  private readonly seen: TrailerMember[] = [];

  private constructor(
    readonly manifest: Manifest,
    readonly location: string,
    private readonly next: () => Promise<Entry | undefined>,
    private readonly destroy: (err?: Error) => void,
  ) {}

  static async open(src: Readable, location: string, opts: { passphrase?: string } = {}): Promise<BundleReader> {
    const extract = tar.extract();
    // Encrypted bundles are decrypted on the way; plain ones pass through untouched.
    const dec = new DecryptStream(opts.passphrase, location, true);
    src.on('error', (err) => dec.destroy(err));
    dec.on('error', (err) => extract.destroy(err));
    extract.on('error', () => {}); // surfaced through the iterator
    src.pipe(dec).pipe(extract);
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
      src.unpipe(dec);
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
      if (err instanceof BundleError && !dec.header)
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
    try {
      manifest = parseManifest(await readSmall(first, MANIFEST_MEMBER));
    } catch (err) {
      destroy();
      throw asBundleError(err, location);
    }
    const reader = new BundleReader(manifest, location, next, destroy);
    reader.encryption = dec.header;
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
    const trailer = parseTrailer(await readSmall(e, TRAILER_MEMBER), this.manifest);
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
    if (text !== sha256sums(trailer))
      throw new BundleError(`${SUMS_MEMBER} does not match ${TRAILER_MEMBER}`, { member: SUMS_MEMBER });
    const extra = await this.next();
    if (extra)
      throw new BundleError(`unexpected member ${JSON.stringify(extra.header.name)} after ${SUMS_MEMBER}`, {
        member: extra.header.name,
      });
    this.trailerValue = trailer;
  }
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
