/**
 * Writes a bundle: manifest.json first, then each data member as it streams (counted, compressed,
 * hashed on the fly, never held whole), then trailer.json and SHA256SUMS, then the end-of-archive
 * blocks. Only then is the sink committed (fsync + rename). A bundle without its trailer is never
 * at a final name, and a reader rejects one that lacks it.
 *
 * On a seekable sink each member is one tar entry whose header is patched with the real size when
 * the member ends, and the manifest is patched with its raw size. On a stream the member is cut
 * into parts of at most PART_SIZE raw bytes, each compressed on its own and buffered in memory
 * (bounded), named `<member>.part000000`, `.part000001`, ...; a member that fits in one part
 * keeps its plain name.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { Transform, Writable, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BundleError } from '../errors.js';
import type { BundleSink } from '../store/transport.js';
import { compressor, type Codec } from './codec.js';
import {
  FORMAT,
  FORMAT_VERSION,
  MANIFEST_MEMBER,
  SIG_MEMBER,
  SUMS_MEMBER,
  TRAILER_MEMBER,
  sha256sums,
  signedSums,
  type ImageFacts,
  type ManifestSignature,
  type Manifest,
  type Trailer,
  type TrailerMember,
} from './manifest.js';
import { BLOCK, END_OF_ARCHIVE, encodeHeader, padding } from './tar.js';
import { releaseSlab } from '../util/slabs.js';
import { fingerprint, publicKeyLine, signMessage, type Signer } from './sshsig.js';
import { BUNDLE_NAMESPACE } from './trust.js';

export const PART_SIZE = 16 << 20;
const WRITE_BATCH = 1 << 20;
const EMPTY = Buffer.alloc(0);
/** Bytes reserved in a seekable bundle's manifest per member for `"rawBytes": N` (N < 2^53: 16 digits). */
const RAW_SIZE_ROOM = 48;

function manifestText(m: Manifest): Buffer {
  return Buffer.from(JSON.stringify(m, null, 2) + '\n');
}

export function partName(member: string, i: number): string {
  return `${member}.part${String(i).padStart(6, '0')}`;
}

export interface MemberProgress {
  (member: string, rawBytes: number): void;
}

/** A member's second source, for when its first fails half-way (BundleWriter.addMember). */
export interface MemberAgain {
  /** Whether this failure of the first source calls for the second. */
  when(err: unknown): boolean;
  open(err: unknown): Promise<Readable>;
}

export class BundleWriter {
  private readonly written: TrailerMember[] = [];
  private readonly images: ImageFacts[] = [];
  private readonly mtime = new Date();
  private busy = false;
  private manifestAt?: number;
  private manifestRoom = 0;
  /** The manifest's bytes as they stand in the bundle (after any patch): what SHA256SUMS lists when signed. */
  private manifestWritten?: Buffer;

  /**
   * `signer`: sign the bundle (SHA256SUMS.sig); the manifest declares its key. `signature`: a
   * signature made earlier over the same SHA256SUMS, written as it is (a bundle rebuilt from a
   * restic snapshot, which was signed when it was first read back). `finishedAt`: the trailer's
   * time, for a bundle that must come out byte for byte the same each time it is rebuilt.
   * `onSigned`: is given SHA256SUMS.sig's text once it is written.
   */
  constructor(
    private readonly sink: BundleSink,
    private readonly manifest: Manifest,
    private readonly opts: {
      signer?: Signer;
      signature?: { declared: ManifestSignature; text: string };
      finishedAt?: string;
      onSigned?: (signature: string) => void;
    } = {},
  ) {}

  get location() {
    return this.sink.location;
  }

  private async entry(name: string, data: Buffer) {
    await this.sink.write(encodeHeader({ name, size: data.length, mtime: this.mtime }));
    await this.sink.write(data);
    await this.sink.write(padding(data.length));
  }

  /**
   * The manifest goes first. On a stream it declares partRawBytes (each part of a compressed
   * member is a frame of at most that many raw bytes). On a seekable sink it is written with room
   * to spare and patched in place at the end with each member's raw size, so that a reader, even
   * one reading the file as a stream, knows every member's size before its data.
   */
  async begin(): Promise<void> {
    if (!this.sink.seekable) this.manifest.partRawBytes = PART_SIZE;
    const signer = this.opts.signer;
    if (signer)
      this.manifest.signature = {
        namespace: BUNDLE_NAMESPACE,
        key: publicKeyLine(signer.publicKey),
        fingerprint: fingerprint(signer.publicKey),
      };
    else if (this.opts.signature) this.manifest.signature = { ...this.opts.signature.declared };
    this.manifestAt = this.sink.seekable ? this.sink.position + BLOCK : undefined;
    this.manifestRoom =
      manifestText(this.manifest).length + (this.sink.seekable ? RAW_SIZE_ROOM * this.manifest.members.length : 0);
    this.manifestWritten = this.manifestBytes(this.manifest);
    await this.entry(MANIFEST_MEMBER, this.manifestWritten);
  }

  /** The manifest as written: its JSON padded with spaces (which JSON allows) to manifestRoom. */
  private manifestBytes(m: Manifest): Buffer {
    const text = manifestText(m);
    if (text.length > this.manifestRoom) throw new Error('BundleWriter: the manifest outgrew its room');
    return Buffer.concat([text, Buffer.alloc(this.manifestRoom - text.length, ' ')]);
  }

  /** Patch the manifest with the raw sizes (seekable sinks). It cannot outgrow its room: each size takes < RAW_SIZE_ROOM bytes. */
  private async declareRawSizes(): Promise<void> {
    if (this.manifestAt === undefined) return;
    const members = this.manifest.members.map((m) => ({
      ...m,
      rawBytes: this.written.find((w) => w.name === m.name)!.rawBytes,
    }));
    this.manifestWritten = this.manifestBytes({ ...this.manifest, members });
    await this.sink.writeAt(this.manifestWritten, this.manifestAt);
  }

  /** Whether a member whose source fails half-way can be written again (addMember's `again`). */
  get canRewrite(): boolean {
    return this.sink.seekable && typeof this.sink.rewind === 'function';
  }

  /**
   * Stream one data member into the bundle. Resolves with what the trailer will say about it.
   * `again` (only where canRewrite): when the source fails and `again.when(error)` says so, the
   * member is written once more from its start, from `again.open()`.
   */
  async addMember(
    name: string,
    src: Readable,
    codec: Codec,
    onProgress?: MemberProgress,
    again?: MemberAgain,
  ): Promise<TrailerMember> {
    if (this.busy) throw new Error('BundleWriter: members are written one at a time');
    if (!this.manifest.members.some((m) => m.name === name))
      throw new Error(`BundleWriter: member ${name} is not in the manifest`);
    if (again && !this.canRewrite) throw new Error('BundleWriter: this sink cannot write a member again');
    this.busy = true;
    try {
      const start = this.sink.position;
      try {
        return await this.writeMember(name, src, codec, onProgress);
      } catch (err) {
        if (!again?.when(err)) throw err;
        await this.sink.rewind!(start);
        return await this.writeMember(name, await again.open(err), codec, onProgress);
      }
    } finally {
      this.busy = false;
    }
  }

  private async writeMember(
    name: string,
    src: Readable,
    codec: Codec,
    onProgress?: MemberProgress,
  ): Promise<TrailerMember> {
    let raw = 0;
    const hash = createHash('sha256');
    // The sink's own failure (disk full, closed pipe) is the cause; the pipeline may report the
    // AbortError of tearing the other streams down first.
    let sinkError: unknown;
    let stored = 0;
    let parts = 0;
    const sink = this.sink;
    const mtime = this.mtime;
    if (sink.seekable) {
      // A gathered write where the sink has one (no copy into one buffer), else one joined write.
      // Once a batch has landed its slabs (util/slabs.ts) go back to the pool: nothing else holds them.
      const writeBatch = (b: Buffer[]) =>
        sink.writev
          ? sink.writev(b, () => b.forEach(releaseSlab))
          : sink.write(b.length === 1 ? b[0]! : Buffer.concat(b));
      // Raw bytes are counted before compression (the stream path counts in its own loop).
      const counter = new Transform({
        highWaterMark: 1 << 20,
        transform(chunk: Buffer, _enc, cb) {
          raw += chunk.length;
          onProgress?.(name, raw);
          cb(null, chunk);
        },
      });
      const headerAt = sink.position;
      await sink.write(encodeHeader({ name, size: 0, mtime }));
      // Batch network chunks into ~1 MiB gathered writes: one write (one trip through the
      // thread pool) per 64 KiB chunk costs more. A Writable, not an async iterator: iterating
      // a byte stream joins its buffered chunks into a new buffer at every step.
      let batch: Buffer[] = [];
      let batchLen = 0;
      /** The batch being written: a failed source must not leave one landing behind a rewind. */
      let landing: Promise<void> = Promise.resolve();
      const flush = (cb: (err?: Error | null) => void) => {
        const data = batch;
        batch = [];
        batchLen = 0;
        landing = writeBatch(data).then(
          () => cb(),
          (err: Error) => {
            sinkError ??= err;
            cb(err);
          },
        );
      };
      const out = new Writable({
        highWaterMark: WRITE_BATCH,
        write(chunk: Buffer, _e, cb) {
          hash.update(chunk);
          stored += chunk.length;
          batch.push(chunk);
          batchLen += chunk.length;
          if (batchLen >= WRITE_BATCH) flush(cb);
          else cb();
        },
        final(cb) {
          if (batchLen) flush(cb);
          else cb();
        },
      });
      // Uncompressed: no pass-through stage in between.
      const stages = codec === 'none' ? pipeline(src, counter, out) : pipeline(src, counter, compressor(codec), out);
      await stages.catch(async (err) => {
        await landing;
        throw sinkError ?? err;
      });
      await sink.write(padding(stored));
      await sink.writeAt(encodeHeader({ name, size: stored, mtime }), headerAt);
    } else {
      // Each part is the compression of at most PART_SIZE raw bytes, a frame of its own (gzip
      // members and zstd frames concatenate), so a reader can hold every part to PART_SIZE.
      // The compressed part is held in memory (bounded by about PART_SIZE) because its tar header
      // needs its size: as the chunks the compressor gave, written to the sink one by one, never
      // joined (a join would hold the part twice, and leave a part-sized buffer to collect).
      type Part = { cz: Duplex; raw: number; done: Promise<{ chunks: Buffer[]; size: number }> };
      const startPart = (): Part => {
        const cz = compressor(codec);
        // Collected from 'data' events (iterating would join buffered chunks once more).
        const done = new Promise<{ chunks: Buffer[]; size: number }>((resolve, reject) => {
          const chunks: Buffer[] = [];
          let size = 0;
          cz.on('data', (c: Buffer) => {
            chunks.push(c);
            size += c.length;
          });
          cz.once('end', () => resolve({ chunks, size }));
          cz.once('error', reject);
        });
        done.catch(() => {});
        return { cz, raw: 0, done };
      };
      const endPart = async (p: Part, last: boolean) => {
        p.cz.end();
        const { chunks, size } = await p.done;
        stored += size;
        const entryName = last && parts === 0 ? name : partName(name, parts);
        parts++;
        await sink.write(encodeHeader({ name: entryName, size, mtime }));
        for (let i = 0; i < chunks.length; i++) {
          const c = chunks[i]!;
          chunks[i] = EMPTY; // written: the part no longer holds it
          hash.update(c);
          await sink.write(c);
        }
        await sink.write(padding(size));
      };
      let part: Part | undefined;
      try {
        for await (let chunk of src as AsyncIterable<Buffer>) {
          raw += chunk.length;
          onProgress?.(name, raw);
          while (chunk.length) {
            if (part && part.raw === PART_SIZE) {
              await endPart(part, false);
              part = undefined;
            }
            part ??= startPart();
            const take = Math.min(chunk.length, PART_SIZE - part.raw);
            part.raw += take;
            if (!part.cz.write(chunk.subarray(0, take))) await Promise.race([once(part.cz, 'drain'), part.done]);
            chunk = chunk.subarray(take);
          }
        }
        await endPart(part ?? startPart(), true);
        part = undefined;
      } finally {
        part?.cz.destroy();
      }
    }
    const tm: TrailerMember = {
      name,
      bytes: stored,
      sha256: hash.digest('hex'),
      rawBytes: raw,
      ...(parts > 1 ? { parts } : {}),
    };
    this.written.push(tm);
    return tm;
  }

  recordImage(facts: ImageFacts): void {
    this.images.push(facts);
  }

  /** Write the trailer and end of archive, then commit the sink. */
  async finish(): Promise<Trailer> {
    const missing = this.manifest.members.filter((m) => !this.written.some((w) => w.name === m.name));
    if (missing.length)
      throw new BundleError(`internal: members never written: ${missing.map((m) => m.name).join(', ')}`);
    const trailer: Trailer = {
      format: FORMAT,
      formatVersion: FORMAT_VERSION,
      complete: true,
      finishedAt: this.opts.finishedAt ?? new Date().toISOString(),
      members: this.written,
      images: this.images,
    };
    await this.declareRawSizes();
    const trailerBytes = Buffer.from(JSON.stringify(trailer, null, 2) + '\n');
    await this.entry(TRAILER_MEMBER, trailerBytes);
    const signer = this.opts.signer;
    if (signer || this.opts.signature) {
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      const sums = Buffer.from(signedSums(sha(this.manifestWritten!), trailer, sha(trailerBytes)));
      await this.entry(SUMS_MEMBER, sums);
      const text = signer ? await signMessage(signer, sums, BUNDLE_NAMESPACE) : this.opts.signature!.text;
      await this.entry(SIG_MEMBER, Buffer.from(text));
      this.opts.onSigned?.(text);
    } else {
      await this.entry(SUMS_MEMBER, Buffer.from(sha256sums(trailer)));
    }
    await this.sink.write(END_OF_ARCHIVE);
    await this.sink.commit();
    return trailer;
  }

  abort(): Promise<void> {
    return this.sink.abort();
  }
}
