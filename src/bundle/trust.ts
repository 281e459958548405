/**
 * Who may sign bundles: an OpenSSH `allowed_signers` file (ssh-keygen(1), ALLOWED SIGNERS), read
 * the way `ssh-keygen -Y verify` reads it, and the decision whether a bundle's signature is
 * trusted. Pure: parse, match, decide; the reader (reader.ts) calls checkSigner/checkSignature.
 *
 *   principals [options] keytype base64-key [comment]
 *
 * options: `namespaces="a,b"` (the key signs only in those namespaces; a bundle's is
 * BUNDLE_NAMESPACE), `valid-after="YYYYMMDD[HHMM[SS]][Z]"`, `valid-before=...` (checked against
 * the time of the check, as ssh-keygen does), `cert-authority` (a CA key: ferry signs with plain
 * keys, so such a line is ignored, and said so). A line `@revoked keytype base64-key` (ferry's
 * own, as known_hosts has it) refuses that key whatever other lines say.
 */
import { TrustError } from '../errors.js';
import { fingerprint, parsePublicKeyBlob, type ParsedSignature } from './sshsig.js';

export const BUNDLE_NAMESPACE = 'ferry-bundle@ferry';

export interface AllowedSigner {
  line: number;
  principals: string[];
  namespaces?: string[];
  validAfter?: Date;
  validBefore?: Date;
  certAuthority: boolean;
  revoked: boolean;
  /** The key, SSH wire form. */
  key: Buffer;
}

export interface Trust {
  /** The allowed_signers file (for messages). */
  file: string;
  signers: AllowedSigner[];
  /** Lines that were skipped, and why (cert-authority lines). */
  notes: string[];
}

const KEY_TYPES = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9-]+@openssh\.com|ssh-dss)$/;

/** Whitespace-separated fields; a double-quoted run keeps its spaces (quotes kept). */
function fields(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of line) {
    if (ch === '"') quoted = !quoted;
    if (!quoted && /\s/.test(ch)) {
      if (cur) out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur) out.push(cur);
  return out;
}

function splitOptions(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of s) {
    if (ch === '"') quoted = !quoted;
    if (!quoted && ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

const unquote = (s: string) => (s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s);

/** `YYYYMMDD[HHMM[SS]][Z]`: local time unless it ends in Z (as ssh-keygen reads it). */
function parseTime(s: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?(Z)?$/.exec(s);
  if (!m) return undefined;
  const n = m.slice(1, 7).map((x) => Number(x ?? 0));
  const args = [n[0]!, n[1]! - 1, n[2]!, n[3]!, n[4]!, n[5]!] as const;
  return m[7] ? new Date(Date.UTC(...args)) : new Date(...args);
}

/** Parse an allowed_signers file. Throws a TrustError naming the file and line of a line it cannot read. */
export function parseAllowedSigners(text: string, file: string): Trust {
  const signers: AllowedSigner[] = [];
  const notes: string[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const bad = (why: string): never => {
      throw new TrustError(`${file}, line ${i + 1}: ${why}`, {
        hint: 'each line is `principals [options] keytype base64-key`, as for ssh-keygen -Y verify',
      });
    };
    const f = fields(line);
    const revoked = f[0] === '@revoked';
    let at = 1;
    const principals = revoked
      ? []
      : unquote(f[0]!)
          .split(',')
          .filter((p) => p);
    let opts: string[] = [];
    if (!revoked && f[at] && !KEY_TYPES.test(f[at]!)) opts = splitOptions(f[at++]!);
    const type = f[at];
    const b64 = f[at + 1];
    if (!type || !b64 || !KEY_TYPES.test(type)) bad('no key type and key');
    const key = Buffer.from(b64!, 'base64');
    const s: AllowedSigner = { line: i + 1, principals, certAuthority: false, revoked, key };
    for (const o of opts) {
      const eq = o.indexOf('=');
      const name = (eq < 0 ? o : o.slice(0, eq)).toLowerCase();
      const value = eq < 0 ? undefined : unquote(o.slice(eq + 1));
      if (name === 'cert-authority') s.certAuthority = true;
      else if (name === 'namespaces' && value !== undefined) s.namespaces = value.split(',').map((n) => n.trim());
      else if ((name === 'valid-after' || name === 'valid-before') && value !== undefined) {
        const t = parseTime(value) ?? bad(`${name}=${value} is not a time (YYYYMMDD[HHMM[SS]][Z])`);
        if (name === 'valid-after') s.validAfter = t;
        else s.validBefore = t;
      } else bad(`unknown option ${JSON.stringify(o)}`);
    }
    if (s.certAuthority) {
      notes.push(
        `${file}, line ${i + 1}: cert-authority lines are ignored (ferry signs with plain keys, not certificates)`,
      );
      continue;
    }
    try {
      parsePublicKeyBlob(key);
    } catch (err) {
      // A key type ferry does not verify (sk-*, ssh-dss): the line can never match a ferry signature.
      notes.push(`${file}, line ${i + 1}: ${(err as Error).message}; ignored`);
      continue;
    }
    signers.push(s);
  }
  return { file, signers, notes };
}

/** Who signed, as a message names them. */
export function describeKey(key: Buffer): string {
  let type = 'key';
  try {
    type = parsePublicKeyBlob(key).type;
  } catch {
    /* named by its fingerprint alone */
  }
  return `${type} ${fingerprint(key)}`;
}

/**
 * The allowed_signers entry that lets `key` sign in `namespace` at `now`; a TrustError naming the
 * key and the file when there is none (or the key is revoked).
 */
export function checkSigner(trust: Trust, key: Buffer, namespace: string, now = new Date()): AllowedSigner {
  const who = describeKey(key);
  const fix = `nothing was changed; add the key to ${trust.file} if it is one of your hosts' keys (\`principal ssh-... AAAA...\`)`;
  const lines = trust.signers.filter((s) => s.key.equals(key));
  const revoked = lines.find((s) => s.revoked);
  if (revoked)
    throw new TrustError(`bundle signed by ${who}, which ${trust.file} revokes (line ${revoked.line})`, {
      hint: 'nothing was changed; a bundle signed by a revoked key is not restored',
    });
  if (!lines.length)
    throw new TrustError(`bundle signed by ${who}, which is not an allowed signer in ${trust.file}`, {
      hint: [fix, ...trust.notes].join('; '),
    });
  const why: string[] = [];
  for (const s of lines) {
    if (s.namespaces && !s.namespaces.includes(namespace)) {
      why.push(`line ${s.line} allows namespaces ${s.namespaces.join(',')}, not ${namespace}`);
      continue;
    }
    if (s.validAfter && now < s.validAfter) {
      why.push(`line ${s.line} is valid only after ${s.validAfter.toISOString()}`);
      continue;
    }
    if (s.validBefore && now >= s.validBefore) {
      why.push(`line ${s.line} expired at ${s.validBefore.toISOString()}`);
      continue;
    }
    return s;
  }
  throw new TrustError(`bundle signed by ${who}, which ${trust.file} does not allow here: ${why.join('; ')}`, {
    hint: 'nothing was changed',
  });
}

/** Principals of an allowed_signers entry, for messages: `host-a,host-b (ssh-ed25519 SHA256:...)`. */
export function describeSigner(s: AllowedSigner): string {
  return `${s.principals.join(',') || '(no principal)'} (${describeKey(s.key)})`;
}

/** The signature's own namespace must be the bundle namespace (a key's signature for git or files is not a bundle's). */
export function checkNamespace(sig: ParsedSignature, file: string): void {
  if (sig.namespace !== BUNDLE_NAMESPACE)
    throw new TrustError(
      `the bundle's signature is in namespace ${JSON.stringify(sig.namespace)}, not ${BUNDLE_NAMESPACE} (checked against ${file})`,
      { hint: 'nothing was changed; it was not made by ferry backup --sign-key' },
    );
}

/**
 * Who a manifest says signed it, for `ls` and `inspect` (which read only the manifest, so the
 * signature is not checked): `ssh-ed25519 SHA256:...`, with the principals `trust` gives the key.
 */
export function declaredSigner(
  sig: { key: string; fingerprint: string } | undefined,
  trust?: Trust,
): { text: string; principals?: string[] } | undefined {
  if (!sig) return undefined;
  const key = Buffer.from(sig.key.split(' ')[1] ?? '', 'base64');
  const text = `${sig.key.split(' ')[0]} ${fingerprint(key)}`;
  if (!trust) return { text };
  const lines = trust.signers.filter((s) => s.key.equals(key));
  if (lines.some((s) => s.revoked)) return { text: `${text} (revoked in ${trust.file})`, principals: [] };
  const principals = lines.flatMap((s) => s.principals);
  return principals.length
    ? { text: `${principals.join(',')} (${text})`, principals }
    : { text: `${text} (not in ${trust.file})`, principals: [] };
}
