import type { Readable } from 'node:stream';

/** Destroy a source stream when the run is aborted, so the pipeline fails promptly. */
export function abortable(s: Readable, signal: AbortSignal): Readable {
  if (signal.aborted) s.destroy(signal.reason as Error);
  const onAbort = () => s.destroy(signal.reason as Error);
  signal.addEventListener('abort', onAbort, { once: true });
  s.once('close', () => signal.removeEventListener('abort', onAbort));
  return s;
}
