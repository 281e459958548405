/**
 * Decompression bombs: a member may not inflate past the size the manifest declares before its
 * data (see BundleReader.members). The decompressed stream is cut off with a BundleError as soon
 * as it passes that size.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { BundleError } from '../errors.js';

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
