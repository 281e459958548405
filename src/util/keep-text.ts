import type { Readable } from 'node:stream';

/** Keep the first `max` characters (about) of what a process writes on `stream`, for its error message. */
export function keepText(stream: Readable, max = 4096): () => string {
  let text = '';
  stream.on('data', (b: Buffer) => {
    if (text.length < max) text += b.toString('utf8');
  });
  return () => text;
}
