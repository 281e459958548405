/**
 * Encryption at rest: the whole bundle stream, in the STREAM construction (as in age and Tink).
 *
 *   header:  "FERRYENC" | 0x01 | u32 length | JSON {kdf: scrypt(N, r, p, salt), cipher, chunk, check}
 *   body:    chunks of CHUNK plaintext bytes, each AES-256-GCM encrypted with
 *            nonce = 4 zero bytes | u64 counter, AAD = sha256(header) | final flag (1 on the last)
 *
 * The key comes from the passphrase with scrypt (N=2^15, r=8, p=1) and a random salt; a key-check
 * value in the header tells a wrong passphrase apart from damage. Every chunk is authenticated;
 * reordering, truncation (the final flag) and appended data are detected. Streaming both ways,
 * one chunk in memory.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  randomBytes,
  scrypt as scryptCb,
  timingSafeEqual,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { BundleError, EXIT, FerryError } from '../errors.js';

export const MAGIC = Buffer.from('FERRYENC');
export const CHUNK = 64 * 1024;
const TAG = 16;
const SCRYPT = { N: 1 << 15, r: 8, p: 1 };

export interface EncHeader {
  kdf: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
  cipher: 'aes-256-gcm';
  chunk: number;
  check: string;
  /** Plaintext facts for `ls` and `prune` without the passphrase (authenticated, not secret). */
  meta?: { createdAt: string; containers: string[] };
}

/** A missing or wrong passphrase: the operator's to fix (exit 2), not damage. */
export class PassphraseError extends FerryError {
  constructor(message: string, hint: string) {
    super('PASSPHRASE', EXIT.USAGE, message, { hint });
  }
}

function scrypt(pass: string, salt: Buffer, h: { N: number; r: number; p: number }): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(pass, salt, 64, { N: h.N, r: h.r, p: h.p, maxmem: 256 * h.N * h.r + (1 << 20) }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

function keyCheck(k2: Buffer): string {
  return createHmac('sha256', k2).update('ferry key check').digest('base64');
}

function nonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(counter, 4);
  return n;
}

export interface Keyed {
  header: Buffer;
  key: Buffer;
  aad: Buffer;
}

export async function newKey(passphrase: string, meta?: EncHeader['meta']): Promise<Keyed> {
  const salt = randomBytes(16);
  const k = await scrypt(passphrase, salt, SCRYPT);
  const h: EncHeader = {
    kdf: 'scrypt',
    ...SCRYPT,
    salt: salt.toString('base64'),
    cipher: 'aes-256-gcm',
    chunk: CHUNK,
    check: keyCheck(k.subarray(32)),
    ...(meta ? { meta } : {}),
  };
  const json = Buffer.from(JSON.stringify(h));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  const header = Buffer.concat([MAGIC, Buffer.from([1]), len, json]);
  return { header, key: k.subarray(0, 32), aad: createHash('sha256').update(header).digest() };
}

/** Encrypt one chunk (the last one with `final`). */
export function sealChunk(k: Keyed, counter: bigint, plain: Buffer, final: boolean): Buffer {
  const c = createCipheriv('aes-256-gcm', k.key, nonce(counter));
  c.setAAD(Buffer.concat([k.aad, Buffer.from([final ? 1 : 0])]));
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

/** Parse the header at the start of an encrypted bundle, or undefined when it is not one. */
export function readEncHeader(head: Buffer): EncHeader | undefined {
  if (!isEncrypted(head) || head.length < MAGIC.length + 5) return undefined;
  const len = head.readUInt32BE(MAGIC.length + 1);
  if (len > 4096 || head.length < MAGIC.length + 5 + len) return undefined;
  try {
    return JSON.parse(head.subarray(MAGIC.length + 5, MAGIC.length + 5 + len).toString('utf8')) as EncHeader;
  } catch {
    return undefined;
  }
}

/** Does this data start like an encrypted bundle? */
export function isEncrypted(head: Buffer): boolean {
  return head.length >= MAGIC.length && head.subarray(0, MAGIC.length).equals(MAGIC);
}

/** Header + encrypted chunks in, plaintext out. Fails with a BundleError on a wrong passphrase or damage. */
export class DecryptStream extends Transform {
  private pending: Buffer = Buffer.alloc(0);
  private key?: Buffer;
  private aad?: Buffer;
  private counter = 0n;
  private chunk = CHUNK;
  private headerDone = false;
  private plain = false;
  /** The encryption header, once read (undefined for a plain bundle). */
  header?: EncHeader;

  constructor(
    private readonly passphrase: string | undefined,
    private readonly location: string,
    /** Let a bundle that is not encrypted pass through unchanged. */
    private readonly allowPlain = false,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  private fail(msg: string, hint?: string): Error {
    return new BundleError(`${this.location}: ${msg}`, { hint });
  }

  private open(sealed: Buffer, final: boolean): Buffer {
    const d = createDecipheriv('aes-256-gcm', this.key!, nonce(this.counter++));
    d.setAAD(Buffer.concat([this.aad!, Buffer.from([final ? 1 : 0])]));
    d.setAuthTag(sealed.subarray(sealed.length - TAG));
    try {
      return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG)), d.final()]);
    } catch {
      throw this.fail(
        final
          ? 'the encrypted bundle is damaged or truncated (its last chunk does not authenticate)'
          : `the encrypted bundle is damaged (chunk ${this.counter - 1n} does not authenticate)`,
      );
    }
  }

  private async readHeader(): Promise<boolean> {
    const p = this.pending;
    if (this.allowPlain && p.length >= MAGIC.length && !isEncrypted(p)) {
      this.plain = true;
      this.headerDone = true;
      return true;
    }
    if (p.length < MAGIC.length + 5) return false;
    if (!isEncrypted(p)) throw this.fail('not an encrypted ferry bundle');
    if (p[MAGIC.length] !== 1)
      throw this.fail(`unknown encryption version ${p[MAGIC.length]}`, 'this bundle was written by a newer ferry');
    const len = p.readUInt32BE(MAGIC.length + 1);
    if (len > 4096) throw this.fail('encryption header is too large');
    const end = MAGIC.length + 5 + len;
    if (p.length < end) return false;
    let h: EncHeader;
    try {
      h = JSON.parse(p.subarray(MAGIC.length + 5, end).toString('utf8')) as EncHeader;
    } catch {
      throw this.fail('encryption header is not valid');
    }
    if (
      h.kdf !== 'scrypt' ||
      h.cipher !== 'aes-256-gcm' ||
      !(h.N <= 1 << 20) ||
      !(h.r <= 32) ||
      !(h.p <= 16) ||
      h.chunk !== CHUNK
    )
      throw this.fail('encryption parameters are not supported');
    this.header = h;
    this.emit('header', h);
    if (this.passphrase === undefined)
      throw new PassphraseError(
        `${this.location} is encrypted and no passphrase was given`,
        'set FERRY_PASSPHRASE or pass --passphrase-file',
      );
    const k = await scrypt(this.passphrase, Buffer.from(h.salt, 'base64'), h);
    const want = Buffer.from(h.check, 'base64');
    const got = Buffer.from(keyCheck(k.subarray(32)), 'base64');
    if (want.length !== got.length || !timingSafeEqual(want, got))
      throw new PassphraseError(`wrong passphrase for ${this.location}`, 'check FERRY_PASSPHRASE or --passphrase-file');
    this.key = k.subarray(0, 32);
    this.aad = createHash('sha256').update(p.subarray(0, end)).digest();
    this.chunk = h.chunk;
    this.pending = p.subarray(end);
    this.headerDone = true;
    return true;
  }

  override _transform(data: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    if (this.plain) return cb(null, data);
    this.pending = this.pending.length ? Buffer.concat([this.pending, data]) : data;
    (async () => {
      if (!this.headerDone && !(await this.readHeader())) return;
      if (this.plain) {
        this.push(this.pending);
        this.pending = Buffer.alloc(0);
        return;
      }
      const unit = this.chunk + TAG;
      // Hold the last full unit back until we know whether it is the final one.
      while (this.pending.length > unit) {
        this.push(this.open(this.pending.subarray(0, unit), false));
        this.pending = this.pending.subarray(unit);
      }
    })().then(
      () => cb(),
      (err: Error) => cb(err),
    );
  }

  override _flush(cb: TransformCallback): void {
    if (this.plain) return cb();
    (async () => {
      if (this.allowPlain && !this.headerDone && !isEncrypted(this.pending)) {
        this.push(this.pending); // shorter than the magic: not encrypted
        return;
      }
      if (!this.headerDone && !(await this.readHeader()))
        throw this.fail('the encrypted bundle is truncated (no header)');
      if (this.pending.length < TAG) throw this.fail('the encrypted bundle is truncated');
      this.push(this.open(this.pending, true));
      this.pending = Buffer.alloc(0);
    })().then(
      () => cb(),
      (err: Error) => cb(err),
    );
  }
}
