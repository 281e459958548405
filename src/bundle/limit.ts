/**
 * Decompression bombs: a member may not inflate past the size the manifest declares before its
 * data (see BundleReader.members). The decompressed stream is cut off with a BundleError as soon
 * as it passes that size.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { BundleError } from '../errors.js';

export class SizeLimit extends Transform {
  private n = 0;
  /**
   * `max` is a number of bytes, or a bound that may only grow as the bundle is read (`ferry
   * verify` on a bundle written to a stream: the parts read so far times partRawBytes).
   */
  constructor(
    private readonly max: number | (() => number),
    private readonly member: string,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.n += chunk.length;
    const max = typeof this.max === 'number' ? this.max : this.max();
    if (this.n > max)
      return cb(
        new BundleError(`member ${this.member} inflates past its declared size (${max} bytes); stopped`, {
          member: this.member,
          hint: 'the bundle is damaged or hostile',
        }),
      );
    cb(null, chunk);
  }
}
