/**
 * Decompression bombs: a member may not inflate past the size its trailer declares. When the
 * trailer can be read before the data (a file or SFTP bundle: it is at the end), every member's
 * decompressed stream is cut off with a BundleError as soon as it passes its declared size.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { BundleError } from '../errors.js';
import { FORMAT, TRAILER_MEMBER, type Trailer } from './manifest.js';
import { BLOCK } from './tar.js';

export class SizeLimit extends Transform {
  private n = 0;
  constructor(
    private readonly max: number,
    private readonly member: string,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.n += chunk.length;
    if (this.n > this.max)
      return cb(new BundleError(`member ${this.member} inflates past its declared size (${this.max} bytes); stopped`, { member: this.member, hint: 'the bundle is damaged or hostile' }));
    cb(null, chunk);
  }
}

/**
 * The trailer, found in the last bytes of a plain bundle (it is followed only by SHA256SUMS and
 * the end-of-archive blocks). Advisory: the real checks happen as the bundle is read.
 */
export function findTrailer(tail: Buffer): Trailer | undefined {
  const name = Buffer.from(`${TRAILER_MEMBER}\0`);
  for (let off = tail.length - BLOCK; off >= 0; off -= BLOCK) {
    if (tail.compare(name, 0, name.length, off, off + name.length) !== 0) continue;
    const size = parseInt(tail.toString('ascii', off + 124, off + 136).replace(/\0.*$/s, '').trim() || 'x', 8);
    if (!Number.isSafeInteger(size) || off + BLOCK + size > tail.length) return undefined;
    try {
      const t = JSON.parse(tail.toString('utf8', off + BLOCK, off + BLOCK + size)) as Trailer;
      return t && t.format === FORMAT && Array.isArray(t.members) ? t : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
