/**
 * Encryption in a standard format: a bundle encrypted as one age file (age-encryption.org/v1,
 * the `age-encryption` package), so that `age -d` opens it without ferry.
 *
 *   - to a passphrase: one `scrypt` stanza (work factor 2^18, as the age CLI writes; the scrypt
 *     itself is Node's native one, the package's pure-JS scrypt takes twice the time and memory);
 *   - to X25519 recipients (`age1...`): one `X25519` stanza each, plus a `ferry.bundle/meta` stanza
 *     holding the clear facts `ls` and `prune` need without the key that decrypts (createdAt and
 *     the container names). age implementations skip stanzas they do not know; the header MAC
 *     covers it. (A passphrase file cannot carry it: age requires the scrypt stanza to be alone.)
 *
 * Both ways stream (age's STREAM: 64 KiB chunks, ChaCha20-Poly1305), one chunk in memory.
 */
import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb } from 'node:crypto';
import { Readable } from 'node:stream';
import { Decrypter, Encrypter, Stanza, identityToRecipient, type Identity, type Recipient } from 'age-encryption';
import { BundleError, EXIT, FerryError, UsageError } from '../errors.js';
import { PassphraseError } from './crypto.js';

export const AGE_MAGIC = Buffer.from('age-encryption.org/v1\n');
export const META_STANZA = 'ferry.bundle/meta';
const SCRYPT_LABEL = 'age-encryption.org/v1/scrypt';
/** The scrypt work factor (log2 N) written: the age CLI's default. */
export const SCRYPT_LOG_N = 18;
/** The largest work factor read (age's own limit for decryption is 22; 20 bounds memory to 1 GiB). */
const MAX_LOG_N = 20;

/** What decrypts an age bundle: a passphrase and/or X25519 identities (`AGE-SECRET-KEY-1...`). */
export interface AgeKeys {
  passphrase?: string;
  identities?: string[];
}

/** What an age bundle is encrypted to: a passphrase, or recipients (`age1...`). */
export interface AgeTarget {
  passphrase?: string;
  recipients?: string[];
}

/** The clear facts of a bundle encrypted to recipients (no key needed to read them). */
export interface AgeMeta {
  createdAt: string;
  containers: string[];
}

/** The identity does not match any recipient of the bundle: the operator's to fix (exit 2). */
export class IdentityError extends FerryError {
  constructor(message: string, hint: string) {
    super('IDENTITY', EXIT.USAGE, message, { hint });
  }
}

function scryptKey(passphrase: string, salt: Buffer, logN: number): Promise<Buffer> {
  const N = 2 ** logN;
  const labelled = Buffer.concat([Buffer.from(SCRYPT_LABEL), salt]);
  return new Promise((resolve, reject) =>
    scryptCb(passphrase, labelled, 32, { N, r: 8, p: 1, maxmem: 128 * N * 8 + (16 << 20) }, (err, k) =>
      err ? reject(err) : resolve(k),
    ),
  );
}

const ZERO_NONCE = Buffer.alloc(12);

/** age's scrypt recipient, with Node's native scrypt. */
class ScryptRecipient implements Recipient {
  constructor(
    private readonly passphrase: string,
    private readonly logN = SCRYPT_LOG_N,
  ) {}

  async wrapFileKey(fileKey: Uint8Array): Promise<Stanza[]> {
    const salt = randomBytes(16);
    const key = await scryptKey(this.passphrase, salt, this.logN);
    const c = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: 16 });
    const body = Buffer.concat([c.update(fileKey), c.final(), c.getAuthTag()]);
    return [new Stanza(['scrypt', salt.toString('base64').replace(/=+$/, ''), String(this.logN)], body)];
  }
}

/** age's scrypt identity, with Node's native scrypt. */
class ScryptIdentity implements Identity {
  constructor(private readonly passphrase: string) {}

  async unwrapFileKey(stanzas: Stanza[]): Promise<Uint8Array | null> {
    for (const s of stanzas) {
      if (s.args[0] !== 'scrypt') continue;
      if (stanzas.length !== 1) throw new Error('an scrypt stanza must be the only one in the header');
      if (s.args.length !== 3 || !/^[1-9][0-9]*$/.test(s.args[2]!)) throw new Error('invalid scrypt stanza');
      const salt = Buffer.from(s.args[1]!, 'base64');
      const logN = Number(s.args[2]);
      if (salt.length !== 16) throw new Error('invalid scrypt stanza');
      if (logN > MAX_LOG_N) throw new Error(`the scrypt work factor 2^${logN} is too high`);
      const key = await scryptKey(this.passphrase, salt, logN);
      const body = Buffer.from(s.body);
      if (body.length !== 32) throw new Error('invalid scrypt stanza');
      const d = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: 16 });
      d.setAuthTag(body.subarray(16));
      try {
        return Buffer.concat([d.update(body.subarray(0, 16)), d.final()]);
      } catch {
        return null; // another passphrase
      }
    }
    return null;
  }
}

/** The meta stanza: ignored by every identity, read in the clear by readAgeMeta. */
class MetaRecipient implements Recipient {
  constructor(private readonly meta: AgeMeta) {}
  wrapFileKey(): Stanza[] {
    return [new Stanza([META_STANZA], Buffer.from(JSON.stringify(this.meta)))];
  }
}

const RECIPIENT = /^age1[02-9ac-hj-np-z]{58}$/;
const IDENTITY = /^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/;

/** Check a recipient given on the command line (`age1...`): a UsageError naming it otherwise. */
export function checkRecipient(r: string, where: string): string {
  if (!RECIPIENT.test(r))
    throw new UsageError(
      `${where}: ${JSON.stringify(r.length > 80 ? r.slice(0, 80) + '...' : r)} is not an age X25519 recipient`,
      'a recipient is an age public key, age1... (from `age-keygen -y key.txt`); SSH keys and plugins are not supported',
    );
  try {
    new Encrypter().addRecipient(r); // the checksum
  } catch {
    throw new UsageError(`${where}: ${r} is not a valid age recipient (bad checksum)`);
  }
  return r;
}

/** The recipients of a recipients file (age's format: one per line, `#` comments, blank lines). */
export function parseRecipients(text: string, file: string): string[] {
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (l && !l.startsWith('#')) out.push(checkRecipient(l, `${file} line ${i + 1}`));
  });
  if (!out.length) throw new UsageError(`the recipients file ${file} names no recipient`);
  return out;
}

/** The identities of an identity file (age-keygen's format: `AGE-SECRET-KEY-1...` lines, `#` comments). */
export function parseIdentities(text: string, file: string): string[] {
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (!l || l.startsWith('#')) return;
    if (!IDENTITY.test(l))
      throw new UsageError(
        `${file} line ${i + 1} is not an age X25519 identity (AGE-SECRET-KEY-1...)`,
        'give an identity file as age-keygen writes it; encrypted identity files and SSH keys are not supported',
      );
    out.push(l);
  });
  if (!out.length) throw new UsageError(`the identity file ${file} holds no identity`);
  return out;
}

/** The public key (`age1...`) of an identity. */
export function recipientOf(identity: string): Promise<string> {
  return identityToRecipient(identity);
}

/** Does this data start like an age file? */
export function isAge(head: Buffer): boolean {
  return head.length >= AGE_MAGIC.length && head.subarray(0, AGE_MAGIC.length).equals(AGE_MAGIC);
}

/** The stanzas of an age header, from its first bytes (or undefined when it is not one, or is cut short). */
function headerStanzas(head: Buffer): { args: string[]; body: Buffer }[] | undefined {
  if (!isAge(head)) return undefined;
  const end = head.indexOf('\n---');
  if (end < 0) return undefined;
  const lines = head
    .subarray(AGE_MAGIC.length, end + 1)
    .toString('latin1')
    .split('\n');
  const out: { args: string[]; body: Buffer }[] = [];
  let cur: { args: string[]; body: string[] } | undefined;
  for (const l of lines) {
    if (l.startsWith('-> ')) {
      if (cur) out.push({ args: cur.args, body: Buffer.from(cur.body.join(''), 'base64') });
      cur = { args: l.slice(3).split(' '), body: [] };
    } else if (cur && l) cur.body.push(l);
  }
  if (cur) out.push({ args: cur.args, body: Buffer.from(cur.body.join(''), 'base64') });
  return out;
}

/** What an age bundle's header says in the clear: how it is encrypted and, to recipients, its meta. */
export function readAgeHeader(head: Buffer): { kind: 'passphrase' | 'recipients'; meta?: AgeMeta } | undefined {
  const stanzas = headerStanzas(head);
  if (!stanzas) return undefined;
  const kind = stanzas.some((s) => s.args[0] === 'scrypt') ? 'passphrase' : 'recipients';
  const m = stanzas.find((s) => s.args[0] === META_STANZA);
  let meta: AgeMeta | undefined;
  if (m) {
    try {
      const j = JSON.parse(m.body.toString('utf8')) as AgeMeta;
      if (typeof j.createdAt === 'string' && Array.isArray(j.containers)) meta = j;
    } catch {
      /* not ours to fail on: the MAC is checked on decryption */
    }
  }
  return { kind, ...(meta ? { meta } : {}) };
}

/** An age encrypter for a target (passphrase, or recipients with the clear meta). */
export function ageEncrypter(target: AgeTarget, meta?: AgeMeta): Encrypter {
  const e = new Encrypter();
  if (target.recipients?.length) {
    for (const r of target.recipients) e.addRecipient(checkRecipient(r, 'recipient'));
    if (meta) e.addRecipient(new MetaRecipient(meta));
  } else if (target.passphrase) e.addRecipient(new ScryptRecipient(target.passphrase));
  else throw new UsageError('encryption needs a passphrase or a recipient');
  return e;
}

/** Encrypt a stream of plaintext into an age file, streaming. */
export async function ageEncrypt(plain: Readable, target: AgeTarget, meta?: AgeMeta): Promise<Readable> {
  const out = await ageEncrypter(target, meta).encrypt(Readable.toWeb(plain) as unknown as ReadableStream<Uint8Array>);
  return Readable.fromWeb(out);
}

/**
 * Decrypt an age file, streaming. Rejects (before any plaintext) with a PassphraseError or an
 * IdentityError when the keys given do not open it (exit 2), a BundleError when its header is
 * damaged; the returned stream fails with a BundleError when a chunk does not authenticate.
 */
export async function ageDecrypt(src: Readable, keys: AgeKeys, location: string): Promise<Readable> {
  const d = new Decrypter();
  if (keys.passphrase) d.addIdentity(new ScryptIdentity(keys.passphrase));
  for (const id of keys.identities ?? []) d.addIdentity(id);
  let head: Buffer = Buffer.alloc(0);
  const tee = new Readable({ read() {} });
  // Keep the first bytes to name what the header asks for when nothing opens it.
  src.on('data', (c: Buffer) => {
    if (head.length < 8192) head = Buffer.concat([head, c.subarray(0, 8192 - head.length)]);
    if (!tee.push(c)) src.pause();
  });
  tee._read = () => src.resume();
  src.on('end', () => tee.push(null));
  src.on('error', (err) => tee.destroy(err));
  let web: ReadableStream<Uint8Array>;
  try {
    web = await d.decrypt(Readable.toWeb(tee) as unknown as ReadableStream<Uint8Array>);
  } catch (err) {
    src.destroy();
    tee.destroy();
    if (err instanceof FerryError) throw err;
    const msg = (err as Error).message;
    const h = readAgeHeader(head);
    if (/no identity matched/.test(msg)) {
      if (h?.kind === 'passphrase')
        throw keys.passphrase
          ? new PassphraseError(`wrong passphrase for ${location}`, 'check FERRY_PASSPHRASE or --passphrase-file')
          : new PassphraseError(
              `${location} is encrypted and no passphrase was given`,
              'set FERRY_PASSPHRASE or pass --passphrase-file',
            );
      throw keys.identities?.length
        ? new IdentityError(
            `no identity given matches a recipient of ${location}`,
            'pass the identity file of a key the bundle was encrypted to (--identity or FERRY_AGE_IDENTITY)',
          )
        : new IdentityError(
            `${location} is encrypted to age recipients and no identity was given`,
            'pass the identity file of a key it was encrypted to (--identity or FERRY_AGE_IDENTITY)',
          );
    }
    throw new BundleError(`${location}: the age header cannot be read: ${msg}`, {
      hint: 'the file is damaged, or not an age file ferry can read',
    });
  }
  const out = Readable.fromWeb(web);
  // Errors inside the web stream come out as plain errors: name them.
  const named = new Readable({ read() {} });
  out.on('data', (c: Buffer) => {
    if (!named.push(c)) out.pause();
  });
  named._read = () => out.resume();
  out.on('end', () => named.push(null));
  out.on('error', (err) =>
    named.destroy(
      err instanceof FerryError
        ? err
        : new BundleError(`${location}: the encrypted bundle is damaged or truncated (a chunk does not authenticate)`, {
            cause: err,
            hint: 'the file was changed or cut short; restore from another copy',
          }),
    ),
  );
  named.on('close', () => {
    out.destroy();
    src.destroy();
  });
  return named;
}
