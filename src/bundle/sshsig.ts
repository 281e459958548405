/**
 * SSHSIG: the signature format of `ssh-keygen -Y sign` (OpenSSH's PROTOCOL.sshsig), so that a
 * ferry signature is checked by `ssh-keygen -Y verify` without ferry, and one made by
 * `ssh-keygen -Y sign` is checked by ferry.
 *
 *   signed data = "SSHSIG" | string namespace | string reserved ("") | string hash alg | string H(message)
 *   blob        = "SSHSIG" | uint32 1 | string public key | string namespace | string reserved
 *                 | string hash alg | string signature
 *   file        = "-----BEGIN SSH SIGNATURE-----" / base64(blob), 70 columns / "-----END SSH SIGNATURE-----"
 *
 * `string` is SSH's uint32 length + bytes (RFC 4251). Keys: ssh-ed25519, ssh-rsa (signed with
 * rsa-sha2-512, as ssh-keygen does), ecdsa-sha2-nistp256/384/521. Pure, apart from node:crypto.
 */
import { createHash, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';

const MAGIC = Buffer.from('SSHSIG');
const BEGIN = '-----BEGIN SSH SIGNATURE-----';
const END = '-----END SSH SIGNATURE-----';
export const SSHSIG_HASH = 'sha512';

export class SshsigError extends Error {}

/** SSH wire encoding (RFC 4251). */
export function sshString(b: Buffer | string): Buffer {
  const data = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  return Buffer.concat([len, data]);
}

function mpint(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  let v = b.subarray(i);
  if (v.length === 1 && v[0] === 0) v = Buffer.alloc(0);
  else if (v.length && v[0]! & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return sshString(v);
}

export class WireReader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  bytes(n: number): Buffer {
    if (this.at + n > this.buf.length) throw new SshsigError('truncated');
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }
  uint32(): number {
    return this.bytes(4).readUInt32BE(0);
  }
  string(): Buffer {
    return this.bytes(this.uint32());
  }
  text(): string {
    return this.string().toString('utf8');
  }
  get done(): boolean {
    return this.at === this.buf.length;
  }
}

const CURVES: Record<string, { crv: string; hash: string; size: number }> = {
  nistp256: { crv: 'P-256', hash: 'sha256', size: 32 },
  nistp384: { crv: 'P-384', hash: 'sha384', size: 48 },
  nistp521: { crv: 'P-521', hash: 'sha512', size: 66 },
};

const b64u = (b: Buffer) => b.toString('base64url');
/** An mpint's magnitude without its sign byte. */
const unsigned = (b: Buffer) => (b.length > 1 && b[0] === 0 ? b.subarray(1) : b);

/** A public key in SSH wire form (the base64 of `ssh-ed25519 AAAA...`, decoded). */
export interface PublicKey {
  type: string;
  blob: Buffer;
  key: KeyObject;
}

export function parsePublicKeyBlob(blob: Buffer): PublicKey {
  const r = new WireReader(blob);
  const type = r.text();
  let jwk: Record<string, string>;
  if (type === 'ssh-ed25519') {
    const pub = r.string();
    if (pub.length !== 32) throw new SshsigError('bad ed25519 key');
    jwk = { kty: 'OKP', crv: 'Ed25519', x: b64u(pub) };
  } else if (type === 'ssh-rsa') {
    const e = unsigned(r.string());
    const n = unsigned(r.string());
    jwk = { kty: 'RSA', e: b64u(e), n: b64u(n) };
  } else if (type.startsWith('ecdsa-sha2-')) {
    const curveName = r.text();
    const curve = CURVES[curveName];
    const q = r.string();
    if (!curve || type !== `ecdsa-sha2-${curveName}`) throw new SshsigError(`unsupported key type ${type}`);
    if (q.length !== 1 + 2 * curve.size || q[0] !== 4) throw new SshsigError('bad ecdsa point');
    jwk = {
      kty: 'EC',
      crv: curve.crv,
      x: b64u(q.subarray(1, 1 + curve.size)),
      y: b64u(q.subarray(1 + curve.size)),
    };
  } else {
    throw new SshsigError(`unsupported key type ${type}`);
  }
  if (!r.done) throw new SshsigError('trailing bytes after the public key');
  return { type, blob, key: createPublicKey({ key: jwk, format: 'jwk' }) };
}

/** `SHA256:<base64, unpadded>` as ssh-keygen -l prints it. */
export function fingerprint(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** `ssh-ed25519 AAAA...`: the public key as an authorized_keys / allowed_signers line has it. */
export function publicKeyLine(blob: Buffer): string {
  return `${new WireReader(blob).text()} ${blob.toString('base64')}`;
}

/** What signs: a key file's private key (keys.ts) or the agent's key. */
export interface Signer {
  /** The public key, SSH wire form. */
  publicKey: Buffer;
  /** Where the key comes from, for messages (a path, or `ssh-agent`). */
  source: string;
  /** An SSH signature (string algorithm | string bytes) over `data`. */
  sign(data: Buffer): Promise<Buffer>;
}

/** An SSH signature with a Node private key of the given SSH key type. */
export function sshSignature(type: string, key: KeyObject, data: Buffer): Buffer {
  if (type === 'ssh-ed25519') return Buffer.concat([sshString(type), sshString(cryptoSign(null, data, key))]);
  if (type === 'ssh-rsa') return Buffer.concat([sshString('rsa-sha2-512'), sshString(cryptoSign('sha512', data, key))]);
  const curve = CURVES[type.replace(/^ecdsa-sha2-/, '')];
  if (!curve) throw new SshsigError(`unsupported key type ${type}`);
  const rs = cryptoSign(curve.hash, data, { key, dsaEncoding: 'ieee-p1363' });
  const inner = Buffer.concat([mpint(rs.subarray(0, curve.size)), mpint(rs.subarray(curve.size))]);
  return Buffer.concat([sshString(type), sshString(inner)]);
}

function signedData(namespace: string, hashAlg: string, message: Buffer): Buffer {
  return Buffer.concat([
    MAGIC,
    sshString(namespace),
    sshString(''),
    sshString(hashAlg),
    sshString(createHash(hashAlg).update(message).digest()),
  ]);
}

/** The armored SSHSIG signature of `message`, as `ssh-keygen -Y sign -n <namespace>` writes it. */
export async function signMessage(signer: Signer, message: Buffer, namespace: string): Promise<string> {
  const sig = await signer.sign(signedData(namespace, SSHSIG_HASH, message));
  const ver = Buffer.alloc(4);
  ver.writeUInt32BE(1);
  const blob = Buffer.concat([
    MAGIC,
    ver,
    sshString(signer.publicKey),
    sshString(namespace),
    sshString(''),
    sshString(SSHSIG_HASH),
    sshString(sig),
  ]);
  const b64 = blob.toString('base64');
  const lines = [];
  for (let i = 0; i < b64.length; i += 70) lines.push(b64.slice(i, i + 70));
  return `${BEGIN}\n${lines.join('\n')}\n${END}\n`;
}

export interface ParsedSignature {
  publicKey: PublicKey;
  namespace: string;
  hashAlg: string;
  /** The SSH signature: algorithm name and bytes. */
  algorithm: string;
  signature: Buffer;
}

/** Parse an armored SSHSIG signature (SshsigError when it is not one). */
export function parseSignature(armored: string): ParsedSignature {
  const text = armored.trim();
  if (!text.startsWith(BEGIN) || !text.endsWith(END)) throw new SshsigError('not an SSH signature (no armor)');
  const blob = Buffer.from(text.slice(BEGIN.length, -END.length).replace(/\s+/g, ''), 'base64');
  const r = new WireReader(blob);
  if (!r.bytes(6).equals(MAGIC)) throw new SshsigError('not an SSH signature (bad magic)');
  const version = r.uint32();
  if (version !== 1) throw new SshsigError(`SSH signature version ${version} is not supported`);
  const publicKey = parsePublicKeyBlob(r.string());
  const namespace = r.text();
  r.string(); // reserved
  const hashAlg = r.text();
  if (hashAlg !== 'sha512' && hashAlg !== 'sha256') throw new SshsigError(`hash algorithm ${hashAlg} is not supported`);
  const sr = new WireReader(r.string());
  const algorithm = sr.text();
  const signature = sr.string();
  if (!r.done || !sr.done) throw new SshsigError('trailing bytes in the SSH signature');
  return { publicKey, namespace, hashAlg, algorithm, signature };
}

/** Whether `sig` is a valid signature of `message` under its own public key and namespace. */
export function verifyMessage(sig: ParsedSignature, message: Buffer): boolean {
  const data = signedData(sig.namespace, sig.hashAlg, message);
  const { type, key } = sig.publicKey;
  try {
    if (type === 'ssh-ed25519') return sig.algorithm === type && cryptoVerify(null, data, key, sig.signature);
    if (type === 'ssh-rsa') {
      const hash = { 'rsa-sha2-512': 'sha512', 'rsa-sha2-256': 'sha256' }[sig.algorithm];
      return !!hash && cryptoVerify(hash, data, key, sig.signature);
    }
    const curve = CURVES[type.replace(/^ecdsa-sha2-/, '')];
    if (!curve || sig.algorithm !== type) return false;
    const r = new WireReader(sig.signature);
    const pad = (b: Buffer) => {
      const u = unsigned(b);
      if (u.length > curve.size) throw new SshsigError('bad ecdsa signature');
      return Buffer.concat([Buffer.alloc(curve.size - u.length), u]);
    };
    const rs = Buffer.concat([pad(r.string()), pad(r.string())]);
    return cryptoVerify(curve.hash, data, { key, dsaEncoding: 'ieee-p1363' }, rs);
  } catch {
    return false;
  }
}
