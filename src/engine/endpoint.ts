/**
 * Where the engine is: resolved from -H, else DOCKER_HOST, else the current docker context, else
 * the local socket -- the same order the docker CLI uses. Pure apart from reading the context
 * store, so the environment is injected.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { UsageError } from '../errors.js';

export type Endpoint =
  | { kind: 'unix'; socketPath: string; source: string }
  | {
      kind: 'tcp';
      host: string;
      port: number;
      tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; verify: boolean };
      source: string;
    }
  | { kind: 'ssh'; user?: string; host: string; port?: number; socketPath?: string; source: string };

export interface EndpointEnv {
  DOCKER_HOST?: string;
  DOCKER_CONTEXT?: string;
  DOCKER_CONFIG?: string;
  DOCKER_TLS_VERIFY?: string;
  DOCKER_CERT_PATH?: string;
  HOME?: string;
}

const DEFAULT_SOCKET = '/var/run/docker.sock';

const ADDRESS_HINT = 'use unix:///path/to/docker.sock, tcp://host:port or ssh://[user@]host[:port]';

/** WHATWG URL parsing, with a malformed address (bad port, no host) reported as a usage error. */
function parseHostUrl(s: string, url: string): URL {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new UsageError(`cannot parse engine address "${url}"`, ADDRESS_HINT);
  }
  if (!u.hostname) throw new UsageError(`engine address "${url}" has no host`, ADDRESS_HINT);
  return u;
}

/** Parse an engine URL (unix://, tcp://, ssh://, or a bare path). */
export function parseEngineUrl(
  url: string,
  opts: { tlsDir?: string; tlsVerify?: boolean; source?: string } = {},
): Endpoint {
  const source = opts.source ?? url;
  if (url.startsWith('/')) return { kind: 'unix', socketPath: url, source };
  const m = /^([a-z]+):\/\/(.*)$/.exec(url);
  if (!m) throw new UsageError(`cannot parse engine address "${url}"`, ADDRESS_HINT);
  const scheme = m[1]!;
  const rest = m[2]!;
  if (scheme === 'unix') {
    if (!rest) throw new UsageError(`engine address "${url}" has no socket path`);
    return { kind: 'unix', socketPath: rest, source };
  }
  if (scheme === 'tcp' || scheme === 'http' || scheme === 'https') {
    const u = parseHostUrl(`http://${rest}`, url);
    const tlsWanted = scheme === 'https' || opts.tlsVerify === true || opts.tlsDir !== undefined;
    const port = u.port ? Number(u.port) : tlsWanted ? 2376 : 2375;
    let tls: Extract<Endpoint, { kind: 'tcp' }>['tls'];
    if (tlsWanted) {
      const dir = opts.tlsDir;
      const read = (f: string) => {
        if (!dir) return undefined;
        const p = path.join(dir, f);
        if (!existsSync(p))
          throw new UsageError(
            `TLS file ${p} does not exist`,
            'set DOCKER_CERT_PATH to the directory holding ca.pem, cert.pem and key.pem',
          );
        return readFileSync(p);
      };
      tls = { ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem'), verify: opts.tlsVerify !== false };
    }
    return { kind: 'tcp', host: u.hostname, port, tls, source };
  }
  if (scheme === 'ssh') {
    const u = parseHostUrl(`ssh://${rest}`, url);
    return {
      kind: 'ssh',
      user: u.username ? decodeURIComponent(u.username) : undefined,
      host: u.hostname,
      port: u.port ? Number(u.port) : undefined,
      socketPath: u.pathname && u.pathname !== '/' ? decodeURIComponent(u.pathname) : undefined,
      source,
    };
  }
  throw new UsageError(`unsupported engine address scheme "${scheme}://"`, 'use unix://, tcp:// or ssh://');
}

/** Resolve the engine the way the docker CLI does: -H, DOCKER_HOST, context, default socket. */
export function resolveEndpoint(hostFlag: string | undefined, env: EndpointEnv = process.env): Endpoint {
  const tlsVerify =
    env.DOCKER_TLS_VERIFY !== undefined && env.DOCKER_TLS_VERIFY !== '' && env.DOCKER_TLS_VERIFY !== '0';
  const certDir = env.DOCKER_CERT_PATH || (tlsVerify ? path.join(configDir(env), '') : undefined);
  const tlsOpts = tlsVerify ? { tlsDir: certDir, tlsVerify: true } : {};
  if (hostFlag) return parseEngineUrl(hostFlag, { ...tlsOpts, source: `-H ${hostFlag}` });
  if (env.DOCKER_HOST) return parseEngineUrl(env.DOCKER_HOST, { ...tlsOpts, source: `DOCKER_HOST=${env.DOCKER_HOST}` });
  const ctx = currentContext(env);
  if (ctx && ctx !== 'default') {
    const ep = readContext(ctx, env);
    if (ep) return ep;
    throw new UsageError(
      `docker context "${ctx}" was not found in ${path.join(configDir(env), 'contexts')}`,
      'run `docker context ls`, or pass -H',
    );
  }
  return { kind: 'unix', socketPath: DEFAULT_SOCKET, source: 'default socket' };
}

function configDir(env: EndpointEnv): string {
  return env.DOCKER_CONFIG || path.join(env.HOME || homedir(), '.docker');
}

function currentContext(env: EndpointEnv): string | undefined {
  if (env.DOCKER_CONTEXT) return env.DOCKER_CONTEXT;
  try {
    const cfg = JSON.parse(readFileSync(path.join(configDir(env), 'config.json'), 'utf8')) as {
      currentContext?: string;
    };
    return cfg.currentContext || undefined;
  } catch {
    return undefined;
  }
}

function readContext(name: string, env: EndpointEnv): Endpoint | undefined {
  const id = createHash('sha256').update(name).digest('hex');
  const dir = configDir(env);
  let meta: { Endpoints?: { docker?: { Host?: string; SkipTLSVerify?: boolean } } };
  try {
    meta = JSON.parse(readFileSync(path.join(dir, 'contexts', 'meta', id, 'meta.json'), 'utf8')) as typeof meta;
  } catch {
    return undefined;
  }
  const host = meta.Endpoints?.docker?.Host;
  if (!host) return undefined;
  const tlsDir = path.join(dir, 'contexts', 'tls', id, 'docker');
  const hasTls = existsSync(path.join(tlsDir, 'ca.pem')) || existsSync(path.join(tlsDir, 'cert.pem'));
  return parseEngineUrl(host, {
    tlsDir: hasTls ? tlsDir : undefined,
    tlsVerify: hasTls ? !meta.Endpoints?.docker?.SkipTLSVerify : undefined,
    source: `docker context ${name}`,
  });
}

export function describeEndpoint(ep: Endpoint): string {
  switch (ep.kind) {
    case 'unix':
      return `unix://${ep.socketPath}`;
    case 'tcp':
      return `tcp://${ep.host}:${ep.port}${ep.tls ? ' (TLS)' : ''}`;
    case 'ssh':
      return `ssh://${ep.user ? ep.user + '@' : ''}${ep.host}${ep.port ? ':' + ep.port : ''}${ep.socketPath ?? ''}`;
  }
}
