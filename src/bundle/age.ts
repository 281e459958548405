/**
 * Encryption in a standard format: a bundle encrypted as one age file (age-encryption.org/v1, the
 * C2SP age spec), so that `age -d` opens it without ferry. The parts of the format ferry uses are
 * implemented here on Node's crypto (native ChaCha20-Poly1305, HKDF, HMAC, X25519, scrypt):
 *
 *   - to a passphrase: one `scrypt` stanza (work factor 2^18, as the age CLI writes);
 *   - to X25519 recipients (`age1...`): one `X25519` stanza each, plus a `ferry.bundle/meta` stanza
 *     holding the clear facts `ls` and `prune` need without the key that decrypts (createdAt and
 *     the container names). age implementations skip stanzas they do not know; the header MAC
 *     covers it. (A passphrase file cannot carry it: age requires the scrypt stanza to be alone.)
 *
 * Both ways stream as Node Transforms (age's STREAM: 64 KiB chunks), one chunk in memory.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  scrypt as scryptCb,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { finished, pipeline, Readable, Transform, type TransformCallback } from 'node:stream';
import { BundleError, EXIT, FerryError, UsageError } from '../errors.js';
import { PassphraseError } from './crypto.js';

export const AGE_MAGIC = Buffer.from('age-encryption.org/v1\n');
export const META_STANZA = 'ferry.bundle/meta';
const SCRYPT_LABEL = 'age-encryption.org/v1/scrypt';
const X25519_LABEL = 'age-encryption.org/v1/X25519';
/** The scrypt work factor (log2 N) written: the age CLI's default. */
export const SCRYPT_LOG_N = 18;
/** The largest work factor read (age's own limit for decryption is 22; 20 bounds memory to 1 GiB). */
const MAX_LOG_N = 20;
/** The largest header read: far above any ferry writes (a few stanzas and the meta). */
const MAX_HEADER = 1 << 20;
/** STREAM: plaintext chunk size, and its ciphertext with the Poly1305 tag. */
export const AGE_CHUNK = 64 * 1024;
const TAG = 16;
const SEALED_CHUNK = AGE_CHUNK + TAG;
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

function hkdf(ikm: Buffer, salt: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));
}

/** ChaCha20-Poly1305 of a key-wrapping (zero nonce): ciphertext || tag. */
function seal(key: Buffer, nonce: Buffer, plain: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  const out = c.update(plain);
  c.final();
  return Buffer.concat([out, c.getAuthTag()]);
}

/** The plaintext of ciphertext || tag, or undefined when it does not authenticate. */
function open(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | undefined {
  if (sealed.length < TAG) return undefined;
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  d.setAuthTag(sealed.subarray(sealed.length - TAG));
  const out = d.update(sealed.subarray(0, sealed.length - TAG));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return out;
}

/** Base64 without padding (the header's encoding), and its strict (canonical) decoding. */
function b64(b: Buffer): string {
  return b.toString('base64').replace(/=+$/, '');
}
function unb64(s: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]*$/.test(s)) return undefined;
  const b = Buffer.from(s, 'base64');
  return b64(b) === s ? b : undefined;
}

// --- bech32 (BIP 173), as age encodes its keys (without the 90-character limit) ---

const BECH32 = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = (((chk & 0x1ffffff) << 5) ^ v) >>> 0;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk = (chk ^ GEN[i]!) >>> 0;
  }
  return chk;
}

function hrpExpand(hrp: string): number[] {
  const c = [...hrp].map((x) => x.charCodeAt(0));
  return [...c.map((x) => x >>> 5), 0, ...c.map((x) => x & 31)];
}

function convertBits(data: Iterable<number>, from: number, to: number, pad: boolean): number[] | undefined {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const max = (1 << to) - 1;
  for (const v of data) {
    acc = (acc << from) | v;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >>> bits) & max);
    }
    acc &= (1 << bits) - 1;
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & max);
  } else if (bits >= from || acc !== 0) return undefined;
  return out;
}

/** Encode 32 bytes under a human-readable part (lower case; the caller upper-cases identities). */
export function bech32Encode(hrp: string, bytes: Buffer): string {
  const data = convertBits(bytes, 8, 5, true)!;
  const mod = polymod([...hrpExpand(hrp), ...data, 0, 0, 0, 0, 0, 0]) ^ 1;
  const sum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return hrp + '1' + [...data, ...sum].map((d) => BECH32[d]).join('');
}

/** The bytes of a bech32 string with this human-readable part (any single case), or undefined. */
export function bech32Decode(s: string, hrp: string): Buffer | undefined {
  if (s !== s.toLowerCase() && s !== s.toUpperCase()) return undefined;
  const l = s.toLowerCase();
  const sep = l.lastIndexOf('1');
  if (l.slice(0, sep) !== hrp.toLowerCase() || l.length - sep - 1 < 6) return undefined;
  const data: number[] = [];
  for (const ch of l.slice(sep + 1)) {
    const d = BECH32.indexOf(ch);
    if (d < 0) return undefined;
    data.push(d);
  }
  if (polymod([...hrpExpand(hrp.toLowerCase()), ...data]) !== 1) return undefined;
  const bytes = convertBits(data.slice(0, -6), 5, 8, false);
  return bytes ? Buffer.from(bytes) : undefined;
}

const RECIPIENT_HRP = 'age';
const IDENTITY_HRP = 'AGE-SECRET-KEY-';

// --- X25519 with raw 32-byte keys, as Node KeyObjects ---

const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

function x25519Public(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: 'der', type: 'spki' });
}
function x25519Private(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519, raw]), format: 'der', type: 'pkcs8' });
}
function rawPublic(k: KeyObject): Buffer {
  return k.export({ format: 'der', type: 'spki' }).subarray(SPKI_X25519.length);
}

/** The X25519 shared secret; an error for a low-order share (all-zero secret), as age refuses it. */
function x25519(priv: KeyObject, pub: KeyObject): Buffer {
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: priv, publicKey: pub });
  } catch {
    throw new Error('invalid X25519 share (low order point)');
  }
  if (shared.every((b) => b === 0)) throw new Error('invalid X25519 share (low order point)');
  return shared;
}

interface Stanza {
  args: string[];
  body: Buffer;
}

/** Wraps the file key for one reader: the stanzas it writes to the header. */
interface Recipient {
  wrap(fileKey: Buffer): Promise<Stanza[]> | Stanza[];
}

/** Finds the file key in the header's stanzas (undefined: not for this identity). */
interface Identity {
  unwrap(stanzas: Stanza[]): Promise<Buffer | undefined> | Buffer | undefined;
}

/** age's scrypt recipient (a passphrase), with Node's native scrypt. */
class ScryptRecipient implements Recipient {
  constructor(
    private readonly passphrase: string,
    private readonly logN = SCRYPT_LOG_N,
  ) {}

  async wrap(fileKey: Buffer): Promise<Stanza[]> {
    const salt = randomBytes(16);
    const key = await scryptKey(this.passphrase, salt, this.logN);
    return [{ args: ['scrypt', b64(salt), String(this.logN)], body: seal(key, ZERO_NONCE, fileKey) }];
  }
}

/** age's scrypt identity (a passphrase), with Node's native scrypt. */
class ScryptIdentity implements Identity {
  constructor(private readonly passphrase: string) {}

  async unwrap(stanzas: Stanza[]): Promise<Buffer | undefined> {
    for (const s of stanzas) {
      if (s.args[0] !== 'scrypt') continue;
      if (s.args.length !== 3 || !/^[1-9][0-9]*$/.test(s.args[2]!)) throw new Error('invalid scrypt stanza');
      const salt = unb64(s.args[1]!);
      const logN = Number(s.args[2]);
      if (salt?.length !== 16 || s.body.length !== 32) throw new Error('invalid scrypt stanza');
      if (logN > MAX_LOG_N) throw new Error(`the scrypt work factor 2^${logN} is too high`);
      const key = await scryptKey(this.passphrase, salt, logN);
      return open(key, ZERO_NONCE, s.body); // undefined: another passphrase
    }
    return undefined;
  }
}

/** age's X25519 recipient (`age1...`). */
class X25519Recipient implements Recipient {
  private readonly pub: Buffer;
  constructor(recipient: string) {
    const pub = bech32Decode(recipient, RECIPIENT_HRP);
    if (pub?.length !== 32) throw new Error('invalid X25519 recipient');
    this.pub = pub;
  }

  wrap(fileKey: Buffer): Stanza[] {
    const eph = generateKeyPairSync('x25519');
    const share = rawPublic(eph.publicKey);
    const shared = x25519(eph.privateKey, x25519Public(this.pub));
    const key = hkdf(shared, Buffer.concat([share, this.pub]), X25519_LABEL);
    return [{ args: ['X25519', b64(share)], body: seal(key, ZERO_NONCE, fileKey) }];
  }
}

/** age's X25519 identity (`AGE-SECRET-KEY-1...`). */
class X25519Identity implements Identity {
  private readonly priv: KeyObject;
  private readonly pub: Buffer;
  constructor(identity: string) {
    const raw = bech32Decode(identity, IDENTITY_HRP);
    if (raw?.length !== 32) throw new Error('invalid X25519 identity');
    this.priv = x25519Private(raw);
    this.pub = rawPublic(createPublicKey(this.priv));
  }

  get recipient(): string {
    return bech32Encode(RECIPIENT_HRP, this.pub);
  }

  unwrap(stanzas: Stanza[]): Buffer | undefined {
    for (const s of stanzas) {
      if (s.args[0] !== 'X25519') continue;
      const share = s.args.length === 2 ? unb64(s.args[1]!) : undefined;
      if (share?.length !== 32 || s.body.length !== 32) throw new Error('invalid X25519 stanza');
      const shared = x25519(this.priv, x25519Public(share));
      const key = hkdf(shared, Buffer.concat([share, this.pub]), X25519_LABEL);
      const fileKey = open(key, ZERO_NONCE, s.body);
      if (fileKey) return fileKey;
    }
    return undefined;
  }
}

/** The meta stanza: ignored by every identity, read in the clear by readAgeHeader. */
class MetaRecipient implements Recipient {
  constructor(private readonly meta: AgeMeta) {}
  wrap(): Stanza[] {
    return [{ args: [META_STANZA], body: Buffer.from(JSON.stringify(this.meta)) }];
  }
}

/** The header MAC: HMAC-SHA256 under HKDF(fileKey, "header") of the header up to `---`. */
function headerMac(fileKey: Buffer, upToDashes: Buffer): Buffer {
  return createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header'))
    .update(upToDashes)
    .digest();
}

/** A header as written: version line, stanzas (bodies wrapped at 64 columns), MAC line. */
function encodeHeader(fileKey: Buffer, stanzas: Stanza[]): Buffer {
  let text = AGE_MAGIC.toString('latin1');
  for (const s of stanzas) {
    text += `-> ${s.args.join(' ')}\n`;
    const body = b64(s.body);
    for (let i = 0; i < body.length; i += 64) text += body.slice(i, i + 64) + '\n';
    if (body.length % 64 === 0) text += '\n'; // the final line is always shorter than 64
  }
  text += '---';
  const upToDashes = Buffer.from(text, 'latin1');
  return Buffer.concat([upToDashes, Buffer.from(` ${b64(headerMac(fileKey, upToDashes))}\n`, 'latin1')]);
}

/** A complete header (ending with its MAC line), strictly parsed; throws on anything malformed. */
function parseHeader(header: Buffer): { stanzas: Stanza[]; upToDashes: Buffer; mac: Buffer } {
  const text = header.toString('latin1');
  if (!text.startsWith(AGE_MAGIC.toString('latin1'))) throw new Error('not an age v1 header');
  const lines = text.slice(AGE_MAGIC.length).split('\n');
  if (lines.pop() !== '') throw new Error('the header does not end with a newline');
  const stanzas: Stanza[] = [];
  let i = 0;
  while (i < lines.length && lines[i]!.startsWith('-> ')) {
    const args = lines[i++]!.slice(3).split(' ');
    if (!args.every((a) => /^[\x21-\x7e]+$/.test(a))) throw new Error('malformed stanza line');
    const parts: string[] = [];
    for (;;) {
      const l = lines[i++];
      if (l === undefined) throw new Error('a stanza body is cut short');
      if (l.length > 64) throw new Error('a stanza body line is longer than 64 columns');
      parts.push(l);
      if (l.length < 64) break;
    }
    const body = unb64(parts.join(''));
    if (!body) throw new Error('a stanza body is not canonical base64');
    stanzas.push({ args, body });
  }
  if (!stanzas.length) throw new Error('the header has no stanza');
  const last = lines[i];
  if (i !== lines.length - 1 || !last?.startsWith('--- ')) throw new Error('malformed header MAC line');
  const mac = unb64(last.slice(4));
  if (mac?.length !== 32) throw new Error('malformed header MAC');
  return { stanzas, upToDashes: header.subarray(0, header.length - last.length - 1 + 3), mac };
}

/** The 12-byte STREAM nonce of chunk `counter`: 11-byte big-endian counter, then the last flag. */
function chunkNonce(counter: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(counter, 5, 6); // bytes 0-4 stay zero: 2^48 chunks is far beyond any bundle
  n[11] = last ? 1 : 0;
  return n;
}

function payloadKey(fileKey: Buffer, nonce: Buffer): Buffer {
  return hkdf(fileKey, nonce, 'payload');
}

/**
 * age's STREAM encryption: header and nonce first, then 64 KiB chunks sealed as they fill. A
 * generator under Readable.from: one sealed chunk at a time, only as fast as it is read (a write
 * of many MiB is not sealed whole into the readable side's buffer).
 */
async function* sealStream(plain: Readable, prefix: Buffer, key: Buffer): AsyncGenerator<Buffer> {
  yield prefix;
  const buf = Buffer.allocUnsafe(AGE_CHUNK);
  let pos = 0;
  let counter = 0;
  for await (const piece of plain) {
    const data = piece as Buffer;
    let off = 0;
    while (off < data.length) {
      // A full chunk is sealed only once more data follows: the last one carries the flag.
      if (pos === AGE_CHUNK) {
        yield seal(key, chunkNonce(counter++, false), buf);
        pos = 0;
      }
      if (pos === 0 && data.length - off > AGE_CHUNK) {
        yield seal(key, chunkNonce(counter++, false), data.subarray(off, off + AGE_CHUNK));
        off += AGE_CHUNK;
        continue;
      }
      const n = Math.min(AGE_CHUNK - pos, data.length - off);
      data.copy(buf, pos, off, off + n);
      pos += n;
      off += n;
    }
  }
  yield seal(key, chunkNonce(counter, true), buf.subarray(0, pos)); // empty only when the whole payload is
}

/** age's STREAM decryption: the nonce, then chunks opened as the next one starts (one buffered). */
class AgeDecryptStream extends Transform {
  private readonly buf = Buffer.allocUnsafe(SEALED_CHUNK);
  private pos = 0;
  private counter = 0;
  private readonly nonce = Buffer.alloc(16);
  private noncePos = 0;
  private key: Buffer | undefined;

  constructor(
    private readonly fileKey: Buffer,
    private readonly damaged: (why: string) => Error,
  ) {
    super();
  }

  private open(chunk: Buffer, last: boolean): void {
    const plain = open(this.key!, chunkNonce(this.counter, last), chunk);
    if (!plain) throw this.damaged(`chunk ${this.counter} does not authenticate`);
    this.counter++;
    this.push(plain);
  }

  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      let off = 0;
      if (!this.key) {
        const n = Math.min(16 - this.noncePos, data.length);
        data.copy(this.nonce, this.noncePos, 0, n);
        this.noncePos += n;
        off = n;
        if (this.noncePos < 16) return cb();
        this.key = payloadKey(this.fileKey, this.nonce);
      }
      while (off < data.length) {
        // A full chunk is opened as not-last only once more data follows it.
        if (this.pos === SEALED_CHUNK) {
          this.open(this.buf, false);
          this.pos = 0;
        }
        if (this.pos === 0 && data.length - off > SEALED_CHUNK) {
          this.open(data.subarray(off, off + SEALED_CHUNK), false);
          off += SEALED_CHUNK;
          continue;
        }
        const n = Math.min(SEALED_CHUNK - this.pos, data.length - off);
        data.copy(this.buf, this.pos, off, off + n);
        this.pos += n;
        off += n;
      }
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      if (!this.key || this.pos === 0) throw this.damaged('the payload is cut short (no final chunk)');
      if (this.pos < TAG) throw this.damaged('the final chunk is cut short');
      if (this.pos === TAG && this.counter > 0) throw this.damaged('an empty final chunk after data');
      this.open(this.buf.subarray(0, this.pos), true);
      cb();
    } catch (err) {
      cb(err as Error);
    }
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
  if (bech32Decode(r, RECIPIENT_HRP)?.length !== 32)
    throw new UsageError(`${where}: ${r} is not a valid age recipient (bad checksum)`);
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
    if (bech32Decode(l, IDENTITY_HRP)?.length !== 32)
      throw new UsageError(`${file} line ${i + 1} is not a valid age identity (bad checksum)`);
    out.push(l);
  });
  if (!out.length) throw new UsageError(`the identity file ${file} holds no identity`);
  return out;
}

/** The public key (`age1...`) of an identity. */
export function recipientOf(identity: string): Promise<string> {
  return Promise.resolve(new X25519Identity(identity).recipient);
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

/** The stanzas' writers for a target (passphrase, or recipients with the clear meta). */
function recipientsFor(target: AgeTarget, meta?: AgeMeta): Recipient[] {
  if (target.recipients?.length) {
    const out: Recipient[] = target.recipients.map((r) => new X25519Recipient(checkRecipient(r, 'recipient')));
    if (meta) out.push(new MetaRecipient(meta));
    return out;
  }
  if (target.passphrase) return [new ScryptRecipient(target.passphrase)];
  throw new UsageError('encryption needs a passphrase or a recipient');
}

/** Encrypt a stream of plaintext into an age file, streaming. */
export async function ageEncrypt(plain: Readable, target: AgeTarget, meta?: AgeMeta): Promise<Readable> {
  const fileKey = randomBytes(16);
  const stanzas: Stanza[] = [];
  for (const r of recipientsFor(target, meta)) stanzas.push(...(await r.wrap(fileKey)));
  const nonce = randomBytes(16);
  // The plaintext's failure, or its end before its end (an abort), fails the iteration; the
  // ciphertext's destruction ends it, which destroys the plaintext.
  return Readable.from(
    sealStream(plain, Buffer.concat([encodeHeader(fileKey, stanzas), nonce]), payloadKey(fileKey, nonce)),
    {
      objectMode: false,
    },
  );
}

/** The header's bytes (through its MAC line) and what followed them in the same reads. */
function readHeaderBytes(src: Readable): Promise<{ header: Buffer; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let got: Buffer = Buffer.alloc(0);
    let dashes = -1;
    const finish = (err: Error | undefined, v?: { header: Buffer; rest: Buffer }) => {
      src.pause();
      src.off('data', onData);
      src.off('end', onEnd);
      src.off('error', onError);
      if (err) reject(err);
      else resolve(v!);
    };
    const onData = (c: Buffer) => {
      const from = Math.max(0, got.length - 4);
      got = got.length ? Buffer.concat([got, c]) : c;
      const n = Math.min(got.length, AGE_MAGIC.length);
      if (!got.subarray(0, n).equals(AGE_MAGIC.subarray(0, n))) return finish(new Error('not an age v1 file'));
      if (dashes < 0) dashes = got.indexOf('\n--- ', from);
      const eol = dashes < 0 ? -1 : got.indexOf('\n', dashes + 5);
      if (eol >= 0) return finish(undefined, { header: got.subarray(0, eol + 1), rest: got.subarray(eol + 1) });
      if (got.length > MAX_HEADER) finish(new Error(`no header end in its first ${MAX_HEADER} bytes`));
    };
    const onEnd = () => finish(new Error('the header is cut short'));
    const onError = (err: Error) => finish(err);
    src.on('data', onData);
    src.on('end', onEnd);
    src.on('error', onError);
  });
}

/** The file key: from the first identity that opens a stanza, then checked against the header MAC. */
async function unwrapFileKey(stanzas: Stanza[], identities: Identity[]): Promise<Buffer | undefined> {
  if (stanzas.some((s) => s.args[0] === 'scrypt') && stanzas.length !== 1)
    throw new Error('an scrypt stanza must be the only one in the header');
  for (const id of identities) {
    const k = await id.unwrap(stanzas);
    if (k) {
      if (k.length !== 16) throw new Error('the file key is not 16 bytes');
      return k;
    }
  }
  return undefined;
}

/**
 * Decrypt an age file, streaming. Rejects (before any plaintext) with a PassphraseError or an
 * IdentityError when the keys given do not open it (exit 2), a BundleError when its header is
 * damaged; the returned stream fails with a BundleError when a chunk does not authenticate, the
 * payload is cut short, or data follows its final chunk.
 */
export async function ageDecrypt(src: Readable, keys: AgeKeys, location: string): Promise<Readable> {
  let fileKey: Buffer | undefined;
  let kind: 'passphrase' | 'recipients';
  let rest: Buffer;
  const identities: Identity[] = [];
  if (keys.passphrase) identities.push(new ScryptIdentity(keys.passphrase));
  for (const id of keys.identities ?? []) {
    try {
      identities.push(new X25519Identity(id));
    } catch {
      src.destroy();
      throw new UsageError('an identity given is not a valid age X25519 identity (AGE-SECRET-KEY-1...)');
    }
  }
  try {
    const read = await readHeaderBytes(src);
    rest = read.rest;
    const h = parseHeader(read.header);
    kind = h.stanzas.some((s) => s.args[0] === 'scrypt') ? 'passphrase' : 'recipients';
    fileKey = await unwrapFileKey(h.stanzas, identities);
    if (fileKey && !timingSafeEqual(headerMac(fileKey, h.upToDashes), h.mac))
      throw new Error('the header MAC does not match (the header was changed)');
  } catch (err) {
    src.destroy();
    if (err instanceof FerryError) throw err;
    throw new BundleError(`${location}: the age header cannot be read: ${(err as Error).message}`, {
      hint: 'the file is damaged, or not an age file ferry can read',
    });
  }
  if (!fileKey) {
    src.destroy();
    if (kind === 'passphrase')
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
  const damaged = (why: string, cause?: unknown) =>
    new BundleError(`${location}: the encrypted bundle is damaged or truncated (${why})`, {
      ...(cause ? { cause } : {}),
      hint: 'the file was changed or cut short; restore from another copy',
    });
  const dec = new AgeDecryptStream(fileKey, damaged);
  // The source's failure, named (first: pipeline then finds dec already destroyed), fails dec.
  finished(src, (err) => {
    if (err) dec.destroy(err instanceof FerryError ? err : damaged('reading it failed', err));
  });
  if (rest.length) dec.write(rest);
  return pipeline(src, dec, () => undefined);
}
