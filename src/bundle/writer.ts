/**
 * Writes a bundle: manifest.json first, then each data member as it streams (counted, compressed,
 * hashed on the fly, never held whole), then trailer.json and SHA256SUMS, then the end-of-archive
 * blocks. Only then is the sink committed (fsync + rename). A bundle without its trailer is never
 * at a final name, and a reader rejects one that lacks it.
 *
 * On a seekable sink each member is one tar entry whose header is patched with the real size when
 * the member ends. On a stream the member is cut into parts of PART_SIZE bytes, each buffered in
 * memory (bounded), named `<member>.part000000`, `.part000001`, ...; a member that fits in one
 * part keeps its plain name.
 */
import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BundleError } from '../errors.js';
import type { BundleSink } from '../transport/transport.js';
import { compressor, type Codec } from './codec.js';
import {
  FORMAT, FORMAT_VERSION, MANIFEST_MEMBER, SUMS_MEMBER, TRAILER_MEMBER, sha256sums,
  type ImageFacts, type Manifest, type Trailer, type TrailerMember,
} from './manifest.js';
import { END_OF_ARCHIVE, encodeHeader, padding } from './tar.js';

export const PART_SIZE = 16 << 20;
const WRITE_BATCH = 1 << 20;

export function partName(member: string, i: number): string {
  return `${member}.part${String(i).padStart(6, '0')}`;
}

export interface MemberProgress {
  (member: string, rawBytes: number): void;
}

export class BundleWriter {
  private readonly written: TrailerMember[] = [];
  private readonly images: ImageFacts[] = [];
  private readonly mtime = new Date();
  private busy = false;

  constructor(
    private readonly sink: BundleSink,
    private readonly manifest: Manifest,
  ) {}

  get location() {
    return this.sink.location;
  }

  private async entry(name: string, data: Buffer) {
    await this.sink.write(encodeHeader({ name, size: data.length, mtime: this.mtime }));
    await this.sink.write(data);
    await this.sink.write(padding(data.length));
  }

  async begin(): Promise<void> {
    await this.entry(MANIFEST_MEMBER, Buffer.from(JSON.stringify(this.manifest, null, 2) + '\n'));
  }

  /** Stream one data member into the bundle. Resolves with what the trailer will say about it. */
  async addMember(name: string, src: Readable, codec: Codec, onProgress?: MemberProgress): Promise<TrailerMember> {
    if (this.busy) throw new Error('BundleWriter: members are written one at a time');
    if (!this.manifest.members.some((m) => m.name === name)) throw new Error(`BundleWriter: member ${name} is not in the manifest`);
    this.busy = true;
    try {
      let raw = 0;
      const counter = new Transform({
        highWaterMark: 1 << 20,
        transform(chunk: Buffer, _enc, cb) {
          raw += chunk.length;
          onProgress?.(name, raw);
          cb(null, chunk);
        },
      });
      const hash = createHash('sha256');
      // The sink's own failure (disk full, closed pipe) is the cause; the pipeline may report the
      // AbortError of tearing the other streams down first.
      let sinkError: unknown;
      let stored = 0;
      let parts = 0;
      const sink = this.sink;
      const mtime = this.mtime;
      if (sink.seekable) {
        const headerAt = sink.position;
        await sink.write(encodeHeader({ name, size: 0, mtime }));
        await pipeline(src, counter, compressor(codec), async function (source: AsyncIterable<Buffer>) {
          try {
            // Batch small network chunks into ~1 MiB writes: one write (one trip through the
            // thread pool) per 64 KiB chunk costs more than the copy.
            let batch: Buffer[] = [];
            let batchLen = 0;
            for await (const chunk of source) {
              hash.update(chunk);
              stored += chunk.length;
              batch.push(chunk);
              batchLen += chunk.length;
              if (batchLen >= WRITE_BATCH) {
                const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batchLen);
                batch = [];
                batchLen = 0;
                await sink.write(data);
              }
            }
            if (batchLen) await sink.write(Buffer.concat(batch, batchLen));
          } catch (err) {
            sinkError ??= err;
            throw err;
          }
        }).catch((err) => {
          throw sinkError ?? err;
        });
        await sink.write(padding(stored));
        await sink.writeAt(encodeHeader({ name, size: stored, mtime }), headerAt);
      } else {
        let buf: Buffer[] = [];
        let bufLen = 0;
        const flushPart = async (last: boolean) => {
          const data = Buffer.concat(buf, bufLen);
          const entryName = last && parts === 0 ? name : partName(name, parts);
          parts++;
          buf = [];
          bufLen = 0;
          await sink.write(encodeHeader({ name: entryName, size: data.length, mtime }));
          await sink.write(data);
          await sink.write(padding(data.length));
        };
        await pipeline(src, counter, compressor(codec), async function (source: AsyncIterable<Buffer>) {
          try {
          for await (let chunk of source) {
            hash.update(chunk);
            stored += chunk.length;
            while (bufLen + chunk.length > PART_SIZE) {
              const take = PART_SIZE - bufLen;
              buf.push(chunk.subarray(0, take));
              bufLen += take;
              chunk = chunk.subarray(take);
              await flushPart(false);
            }
            if (chunk.length) {
              buf.push(chunk);
              bufLen += chunk.length;
            }
          }
          } catch (err) {
            sinkError ??= err;
            throw err;
          }
        }).catch((err) => {
          throw sinkError ?? err;
        });
        if (bufLen > 0 || parts === 0) await flushPart(true);
      }
      const tm: TrailerMember = { name, bytes: stored, sha256: hash.digest('hex'), rawBytes: raw, ...(parts > 1 ? { parts } : {}) };
      this.written.push(tm);
      return tm;
    } finally {
      this.busy = false;
    }
  }

  recordImage(facts: ImageFacts): void {
    this.images.push(facts);
  }

  /** Write the trailer and end of archive, then commit the sink. */
  async finish(): Promise<Trailer> {
    const missing = this.manifest.members.filter((m) => !this.written.some((w) => w.name === m.name));
    if (missing.length) throw new BundleError(`internal: members never written: ${missing.map((m) => m.name).join(', ')}`);
    const trailer: Trailer = { format: FORMAT, formatVersion: FORMAT_VERSION, complete: true, finishedAt: new Date().toISOString(), members: this.written, images: this.images };
    await this.entry(TRAILER_MEMBER, Buffer.from(JSON.stringify(trailer, null, 2) + '\n'));
    await this.entry(SUMS_MEMBER, Buffer.from(sha256sums(trailer)));
    await this.sink.write(END_OF_ARCHIVE);
    await this.sink.commit();
    return trailer;
  }

  abort(): Promise<void> {
    return this.sink.abort();
  }
}
