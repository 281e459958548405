/** A stream's bytes counted as they pass, for the progress line. */
import { Transform, pipeline, type Readable } from 'node:stream';

/**
 * `src` through a counter: `onBytes(n)` with the bytes so far, at each chunk. An error of `src`,
 * or its end before it was read to the end (a member of a bundle cut short), becomes the counted
 * stream's, so its reader fails rather than waiting for more; destroying the counted stream
 * destroys `src`.
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
  // pipeline carries an error or a premature close of either side to the other; the reader of
  // `t` sees it as `t`'s error.
  pipeline(src, t, () => {});
  // The reader may attach only after an await (a helper made first): an error before then would
  // have no listener and end the process. It is kept as `t`'s error (t.errored), which the
  // reader meets as soon as it reads.
  t.on('error', () => {});
  return t;
}
