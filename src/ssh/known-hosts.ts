/**
 * Host-key checking against OpenSSH known_hosts files: plain and hashed (|1|salt|hmac) host
 * entries, `[host]:port` for other ports, @revoked markers. Pure apart from the file reads.
 */
import { createHmac } from 'node:crypto';

export type HostKeyVerdict =
  | { status: 'match' }
  | { status: 'unknown' }
  | { status: 'changed'; file: string; line: number }
  | { status: 'revoked' };

/** The name known_hosts uses for host:port. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function patternMatch(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    const h = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return h === hash;
  }
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    'i',
  );
  return re.test(name);
}

function hostListMatches(list: string, name: string): boolean {
  let matched = false;
  for (const p of list.split(',')) {
    if (p.startsWith('!')) {
      if (patternMatch(p.slice(1), name)) return false;
    } else if (patternMatch(p, name)) matched = true;
  }
  return matched;
}

/** The key type named inside an SSH public key blob. */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return '';
  const n = blob.readUInt32BE(0);
  return blob.toString('ascii', 4, 4 + n);
}

export function checkHostKey(
  files: { path: string; text: string }[],
  host: string,
  port: number,
  key: Buffer,
): HostKeyVerdict {
  const names = [knownHostsName(host, port)];
  const b64 = key.toString('base64');
  const type = keyTypeOf(key);
  let sameTypeOther: { file: string; line: number } | undefined;
  let matched = false;
  for (const f of files) {
    const lines = f.text.split(/\r?\n/);
    for (const [i, raw] of lines.entries()) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      const parts = line.split(/\s+/);
      let marker: string | undefined;
      if (parts[0]!.startsWith('@')) marker = parts.shift();
      const [hosts, ktype, kdata] = parts;
      if (!hosts || !ktype || !kdata) continue;
      if (!names.some((n) => hostListMatches(hosts, n))) continue;
      if (marker === '@cert-authority') continue;
      if (marker === '@revoked') {
        if (kdata === b64) return { status: 'revoked' };
        continue;
      }
      // Known with another key (of this or another type): refuse, as a changed key would be.
      if (kdata === b64 && ktype === type) matched = true;
      else sameTypeOther ??= { file: f.path, line: i + 1 };
    }
  }
  if (matched) return { status: 'match' };
  if (sameTypeOther) return { status: 'changed', ...sameTypeOther };
  return { status: 'unknown' };
}

export function knownHostsLine(host: string, port: number, key: Buffer): string {
  return `${knownHostsName(host, port)} ${keyTypeOf(key)} ${key.toString('base64')}\n`;
}
