/**
 * TarEndTrim passes a tar archive through up to its end-of-archive marker (two zero blocks) and
 * drops what follows: the zeros a tar writer adds to fill its last record. GNU tar writing
 * 64 KiB records (host-volume.ts) ends its archive with up to 64 KiB of them, where the engine's
 * archive ends right after the marker; a reader that stops at the marker and closes its input
 * (Podman's archive PUT) fails on the rest with a broken pipe, and the size recorded for the
 * member would not be the data's.
 *
 * It follows the entries' headers only (sizes from the header, or a PAX `size` record for the
 * next entry), skipping their contents without looking. Anything it cannot follow (a header
 * whose checksum is wrong, a PAX header over 1 MiB) makes it pass the rest through untouched: it
 * never alters an archive, it only leaves the padding out.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { num, parsePax } from './tar-root.js';

const BLOCK = 512;
const MAX_PAX = 1 << 20;

/** Whether a 512-byte header's checksum (the unsigned sum with the checksum field as spaces) holds. */
function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return num(h, 148, 8) === sum;
}

export class TarEndTrim extends Transform {
  /** Bytes of the current entry's content (padded to blocks) still to pass before the next header. */
  private skip = 0;
  private header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  private zeroBlocks = 0;
  /** The content of a PAX extended header being collected, and how much of it is still to come. */
  private pax?: { parts: Buffer[]; left: number; padded: number; global: boolean };
  private nextSize?: number;
  /** At the end-of-archive marker: what follows is dropped. */
  ended = false;
  /** Lost track (an entry it cannot read): everything passes. */
  private blind = false;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.ended) return cb();
    if (this.blind) return cb(null, chunk);
    let pos = 0;
    while (pos < chunk.length && !this.ended && !this.blind) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - pos);
        if (this.pax) this.collectPax(chunk.subarray(pos, pos + n));
        this.skip -= n;
        pos += n;
        if (this.skip === 0 && this.pax) this.endPax();
        continue;
      }
      const n = Math.min(BLOCK - this.headerFill, chunk.length - pos);
      chunk.copy(this.header, this.headerFill, pos, pos + n);
      this.headerFill += n;
      pos += n;
      if (this.headerFill < BLOCK) break;
      this.headerFill = 0;
      this.onHeader();
    }
    cb(null, this.ended ? chunk.subarray(0, pos) : chunk);
  }

  private onHeader(): void {
    const h = this.header;
    if (h.every((b) => b === 0)) {
      if (++this.zeroBlocks === 2) this.ended = true;
      return;
    }
    if (this.zeroBlocks > 0 || !checksumOk(h)) {
      this.blind = true; // not the archive it should be: pass it on as it is
      return;
    }
    const type = String.fromCharCode(h[156]!);
    let size = num(h, 124, 12);
    if (type === 'x' || type === 'g') {
      if (size > MAX_PAX) {
        this.blind = true;
        return;
      }
      this.pax = { parts: [], left: size, padded: Math.ceil(size / BLOCK) * BLOCK, global: type === 'g' };
      this.skip = this.pax.padded;
      if (this.skip === 0) this.endPax();
      return;
    }
    if (this.nextSize !== undefined) {
      size = this.nextSize;
      this.nextSize = undefined;
    }
    this.skip = Math.ceil(size / BLOCK) * BLOCK;
  }

  private collectPax(b: Buffer): void {
    const p = this.pax!;
    const take = Math.min(p.left, b.length);
    if (take > 0) p.parts.push(Buffer.from(b.subarray(0, take)));
    p.left -= take;
  }

  private endPax(): void {
    const p = this.pax!;
    this.pax = undefined;
    const size = parsePax(Buffer.concat(p.parts)).size;
    // A global header's size would apply to every entry after it: not something a volume archive has.
    if (size !== undefined && !p.global) this.nextSize = Number(size);
    else if (size !== undefined) this.blind = true;
  }
}
