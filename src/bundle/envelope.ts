/**
 * The envelope of a bundle as read: plain (a tar), ferry's own encryption (`FERRYENC`, still read,
 * no longer written) or age (`age-encryption.org/v1`). Told apart by the first bytes, then
 * decrypted on the way, streaming.
 */
import { PassThrough, type Readable } from 'node:stream';
import { ageDecrypt, isAge, readAgeHeader, type AgeKeys } from './age.js';
import { DecryptStream, isEncrypted, MAGIC, type EncHeader } from './crypto.js';

/** How a bundle read was encrypted. */
export type Encryption =
  | ({ format: 'ferry' } & EncHeader)
  | { format: 'age'; kind: 'passphrase' | 'recipients'; meta?: { createdAt: string; containers: string[] } };

export interface Opened {
  /** The plaintext bundle. */
  stream: Readable;
  /** For the legacy format known once its header has streamed past; for age, at once. */
  encryption(): Encryption | undefined;
}

/**
 * The first `n` bytes of a stream (fewer when it ends first), and a stream that gives all of it
 * again, from its first byte. (Not `unshift`: that fails once the source has ended.)
 */
export async function peek(src: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const chunks: Buffer[] = [];
  let len = 0;
  let ended = false;
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      src.off('data', onData);
      src.off('end', onEnd);
      src.off('error', done);
      src.pause();
      if (err) reject(err);
      else resolve();
    };
    const onData = (c: Buffer) => {
      chunks.push(c);
      len += c.length;
      if (len >= n) done();
    };
    const onEnd = () => {
      ended = true;
      done();
    };
    src.on('data', onData);
    src.on('end', onEnd);
    src.on('error', done);
  });
  const head = Buffer.concat(chunks, len);
  const stream = new PassThrough({ highWaterMark: 1 << 20 });
  if (head.length) stream.write(head);
  if (ended) stream.end();
  else {
    src.on('error', (err) => stream.destroy(err));
    stream.on('close', () => src.destroy());
    src.pipe(stream);
  }
  return { head: head.subarray(0, n), stream };
}

/**
 * The plaintext of a bundle, whichever envelope it has. An age bundle's keys are checked here
 * (PassphraseError, IdentityError); the legacy format's as its header streams past.
 */
export async function openEnvelope(src: Readable, location: string, keys: AgeKeys): Promise<Opened> {
  const first = await peek(src, 16384);
  const head = first.head;
  src = first.stream;
  if (isAge(head)) {
    const h = readAgeHeader(head);
    const stream = await ageDecrypt(src, keys, location);
    const enc: Encryption = { format: 'age', kind: h?.kind ?? 'recipients', ...(h?.meta ? { meta: h.meta } : {}) };
    return { stream, encryption: () => enc };
  }
  if (head.length >= MAGIC.length && isEncrypted(head)) {
    const dec = new DecryptStream(keys.passphrase, location, true);
    src.on('error', (err) => dec.destroy(err));
    dec.on('close', () => src.destroy());
    return {
      stream: src.pipe(dec),
      encryption: () => (dec.header ? { format: 'ferry', ...dec.header } : undefined),
    };
  }
  return { stream: src, encryption: () => undefined };
}
