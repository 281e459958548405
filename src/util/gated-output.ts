import { PassThrough, type Readable } from 'node:stream';

/**
 * A child process's stdout as a stream that ends only once the process has exited and `verdict`
 * finds its exit status good; otherwise it fails with verdict's error. Output that stopped
 * half-way because the program failed must not look like output that ended there.
 *
 * verdict is called once, when the process has exited and its output is drained, whatever became
 * of the stream; `settled` resolves then.
 *
 * stdout is piped, not iterated (iterating a byte stream joins its buffered chunks into new
 * buffers). A consumer that destroys the stream before the process is done calls `abandon`
 * (stop the process); its own failure is the one reported. `stdout` may be a stream the
 * process's output goes through: it is drained once abandoned.
 */
export function gatedOutput(
  stdout: Readable,
  exit: Promise<number | null>,
  verdict: (code: number | null) => Error | undefined,
  abandon: () => void,
): { stream: PassThrough; settled: Promise<void> } {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  stdout.pipe(out, { end: false });
  let done = false;
  const drained = new Promise<void>((r) => stdout.once('end', r).once('close', r));
  const settled = Promise.all([exit, drained]).then(([code]) => {
    done = true;
    const err = verdict(code); // called even when abandoned: the caller may wait on it
    if (out.destroyed) return;
    if (err) out.destroy(err);
    else out.end();
  });
  out.on('close', () => {
    if (done) return;
    abandon();
    // Unpiped now: what the process still writes is let through to nowhere, so that `stdout`
    // ends (a stream in between, such as a Transform, would otherwise hold it unread for ever).
    stdout.resume();
  });
  return { stream: out, settled };
}
