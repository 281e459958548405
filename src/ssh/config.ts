/**
 * The parts of OpenSSH's client configuration (~/.ssh/config) that decide where and as whom ferry
 * connects: Host/Match-less blocks with wildcard patterns, HostName, Port, User, IdentityFile,
 * IdentitiesOnly, UserKnownHostsFile. First obtained value wins, as in ssh(1). Pure.
 */
import { homedir } from 'node:os';
import path from 'node:path';

export interface SshHostConfig {
  hostName?: string;
  port?: number;
  user?: string;
  identityFiles: string[];
  identitiesOnly?: boolean;
  userKnownHostsFiles?: string[];
}

function patternToRegExp(p: string): RegExp {
  const re = p
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i');
}

/** Does `host` match a Host line's pattern list (with negation)? */
export function hostMatches(patterns: string[], host: string): boolean {
  let matched = false;
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (patternToRegExp(p.slice(1)).test(host)) return false;
    } else if (patternToRegExp(p).test(host)) {
      matched = true;
    }
  }
  return matched;
}

function splitArgs(s: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) out.push(m[1] ?? m[2]!);
  return out;
}

export function expandPath(
  p: string,
  ctx: { home: string; user?: string; host: string; originalHost: string; port?: number },
): string {
  let s = p.replace(/^~(?=\/|$)/, ctx.home);
  s = s.replace(/%(.)/g, (_, c: string) => {
    switch (c) {
      case 'd':
        return ctx.home;
      case 'u':
        return process.env.USER ?? 'root';
      case 'r':
        return ctx.user ?? process.env.USER ?? 'root';
      case 'h':
        return ctx.host;
      case 'n':
        return ctx.originalHost;
      case 'p':
        return String(ctx.port ?? 22);
      case '%':
        return '%';
      default:
        return `%${c}`;
    }
  });
  return s;
}

/** Resolve the configuration for `host` from the text of a config file. */
export function resolveSshConfig(text: string, host: string, home = homedir()): SshHostConfig {
  const cfg: SshHostConfig = { identityFiles: [] };
  let active = true; // lines before the first Host apply to every host
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+?)\s*(?:=\s*|\s+)(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!.toLowerCase();
    const args = splitArgs(m[2]!);
    if (key === 'host') {
      active = hostMatches(args, host);
      continue;
    }
    if (key === 'match') {
      active = args[0]?.toLowerCase() === 'all';
      continue;
    }
    if (!active || !args.length) continue;
    const v = args[0]!;
    switch (key) {
      case 'hostname':
        cfg.hostName ??= v;
        break;
      case 'port':
        cfg.port ??= Number(v);
        break;
      case 'user':
        cfg.user ??= v;
        break;
      case 'identityfile':
        cfg.identityFiles.push(v);
        break;
      case 'identitiesonly':
        cfg.identitiesOnly ??= v.toLowerCase() === 'yes';
        break;
      case 'userknownhostsfile':
        cfg.userKnownHostsFiles ??= args;
        break;
    }
  }
  const ctx = { home, user: cfg.user, host: cfg.hostName ?? host, originalHost: host, port: cfg.port };
  if (cfg.hostName) cfg.hostName = cfg.hostName.replace(/%h/g, host);
  cfg.identityFiles = cfg.identityFiles.map((f) => path.resolve(home, expandPath(f, ctx)));
  if (cfg.userKnownHostsFiles)
    cfg.userKnownHostsFiles = cfg.userKnownHostsFiles
      .filter((f) => f !== 'none')
      .map((f) => path.resolve(home, expandPath(f, ctx)));
  return cfg;
}
