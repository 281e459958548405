/** A stream's bytes counted as they pass, for the progress line. */
import { Transform, type Readable } from 'node:stream';

/**
 * `src` through a counter: `onBytes(n)` with the bytes so far, at each chunk. An error of `src`
 * becomes the counted stream's; destroying the counted stream destroys `src`.
 */
export function counted(src: Readable, onBytes: (n: number) => void): Readable {
  let n = 0;
  const t = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb) {
      n += chunk.length;
      onBytes(n);
      cb(null, chunk);
    },
  });
  src.on('error', (err) => t.destroy(err));
  // The consumer may not be listening when src fails (then pipe() would rethrow the error and
  // end the process): it still sees the destroyed stream, and the reader reports the failure.
  t.on('error', () => {});
  t.on('close', () => {
    if (!src.readableEnded) src.destroy();
  });
  return src.pipe(t);
}
