/**
 * Registry credentials, found the way the docker CLI finds them, for the X-Registry-Auth header
 * of push and pull. Sources, for a registry host:
 *
 *   --registry-auth-file <path>   a JSON file {username, password} (or {identitytoken}), or a
 *                                 docker config.json read as below
 *   $DOCKER_CONFIG/config.json    (else ~/.docker/config.json):
 *     credHelpers[host]           docker-credential-<helper> get
 *     credsStore                  docker-credential-<store> get
 *     auths[host]                 base64 "user:password" in `auth`, or an `identitytoken`
 *
 * The first that has credentials for the host wins; with none, the answer is `{}` (anonymous),
 * never undefined: Docker 28.3 and older refuse a push without an X-Registry-Auth header.
 * Credentials never appear in messages; use describeAuth() to say which were used.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EngineError, UsageError } from '../errors.js';

/** The body of the X-Registry-Auth header (Engine API AuthConfig). */
export interface RegistryAuth {
  username?: string;
  password?: string;
  identitytoken?: string;
  serveraddress?: string;
  email?: string;
}

/** A docker config.json, the parts that matter here. */
export interface DockerConfigFile {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string; email?: string } | null
  >;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** What `docker-credential-<name> get` printed; `undefined` when it has no credentials for the server. */
export type HelperAnswer = { ServerURL?: string; Username?: string; Secret?: string } | undefined;

export interface AuthDeps {
  /** Environment (DOCKER_CONFIG, PATH for helpers). */
  env: NodeJS.ProcessEnv;
  /** Home directory (for ~/.docker). */
  home: string;
  /** Read a file; undefined when it does not exist. */
  readFile(p: string): Promise<string | undefined>;
  /** Run `docker-credential-<helper> get` with `serverUrl` on stdin. */
  runHelper(helper: string, serverUrl: string, env: NodeJS.ProcessEnv): Promise<HelperAnswer>;
}

/** The key Docker uses for Docker Hub in config.json and towards credential helpers. */
export const DOCKER_HUB_KEY = 'https://index.docker.io/v1/';
const HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

/**
 * A registry key or address reduced to host[:port], lower-cased: scheme and path dropped
 * (`https://127.0.0.1:5000/v2/` -> `127.0.0.1:5000`). Every Docker Hub spelling becomes `docker.io`.
 */
export function normaliseRegistryHost(key: string): string {
  let k = key.trim().toLowerCase();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  k = k.split('/')[0] ?? '';
  return HUB_HOSTS.has(k) ? 'docker.io' : k;
}

/** The server address to give helpers and put in `serveraddress`: Docker Hub's legacy URL, else host[:port]. */
export function serverAddress(host: string): string {
  const h = normaliseRegistryHost(host);
  return h === 'docker.io' ? DOCKER_HUB_KEY : h;
}

/**
 * Split `--registry host[:port][/prefix]` into its host and repository prefix. The host must look
 * like a registry host (a dot, a port, or `localhost`), as Docker decides: anything else would be
 * read as a Docker Hub namespace. Path components follow Docker's repository-name rules.
 */
export function parseRegistryOption(value: string): { host: string; prefix: string } {
  const v = value
    .trim()
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/+$/, '');
  const [host = '', ...rest] = v.split('/');
  if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(host) || !(host.includes('.') || host.includes(':') || host === 'localhost'))
    throw new UsageError(
      `--registry ${JSON.stringify(value)}: expected host[:port]/prefix (e.g. registry.example.com/backups or 127.0.0.1:5000/ferry)`,
      'the first part must be a registry host (with a dot or a port, or localhost); for Docker Hub use docker.io/<user>',
    );
  const comp = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
  for (const c of rest)
    if (!comp.test(c))
      throw new UsageError(
        `--registry ${JSON.stringify(value)}: ${JSON.stringify(c)} is not a valid repository path component`,
        'use lower-case letters, digits, and . _ - between them',
      );
  return { host: host.toLowerCase(), prefix: rest.join('/') };
}

/** Where the docker config lives: $DOCKER_CONFIG/config.json, else ~/.docker/config.json. */
export function dockerConfigPath(env: NodeJS.ProcessEnv, home: string): string {
  return path.join(env.DOCKER_CONFIG || path.join(home, '.docker'), 'config.json');
}

/** The entry of a key-value map whose key names `host` (exact key first, then normalised). */
function lookup<T>(map: Record<string, T> | undefined, host: string): T | undefined {
  if (!map) return undefined;
  const want = normaliseRegistryHost(host);
  if (Object.prototype.hasOwnProperty.call(map, host)) return map[host];
  for (const [k, v] of Object.entries(map)) if (normaliseRegistryHost(k) === want) return v;
  return undefined;
}

/** auths[host] -> RegistryAuth (undefined when the entry holds nothing usable). */
export function authFromEntry(
  entry: NonNullable<DockerConfigFile['auths']>[string] | undefined,
  host: string,
): RegistryAuth | undefined {
  if (!entry || typeof entry !== 'object') return undefined;
  const serveraddress = serverAddress(host);
  if (typeof entry.identitytoken === 'string' && entry.identitytoken)
    return { identitytoken: entry.identitytoken, serveraddress };
  if (typeof entry.auth === 'string' && entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i < 0)
      throw new UsageError(
        `the docker config's credentials for ${host} are malformed (auth is not base64 of user:password)`,
        'log in again with docker login',
      );
    return { username: decoded.slice(0, i), password: decoded.slice(i + 1), serveraddress };
  }
  if (typeof entry.username === 'string' && typeof entry.password === 'string')
    return { username: entry.username, password: entry.password, serveraddress };
  return undefined;
}

/** A helper's answer -> RegistryAuth. Username "<token>" means the secret is an identity token. */
export function authFromHelper(ans: HelperAnswer, host: string): RegistryAuth | undefined {
  if (!ans || typeof ans.Secret !== 'string' || !ans.Secret) return undefined;
  const serveraddress = serverAddress(host);
  if (ans.Username === '<token>') return { identitytoken: ans.Secret, serveraddress };
  return { username: ans.Username ?? '', password: ans.Secret, serveraddress };
}

/** Credentials for `host` from a parsed docker config.json. */
export async function authFromConfig(
  cfg: DockerConfigFile,
  host: string,
  deps: Pick<AuthDeps, 'env' | 'runHelper'>,
): Promise<RegistryAuth> {
  const helper = lookup(cfg.credHelpers, host) || cfg.credsStore;
  if (helper) {
    if (typeof helper !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(helper))
      throw new UsageError(`the docker config names an invalid credential helper ${JSON.stringify(helper)}`);
    const a = authFromHelper(await deps.runHelper(helper, serverAddress(host), deps.env), host);
    if (a) return a;
  }
  return authFromEntry(lookup(cfg.auths ?? undefined, host), host) ?? {};
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${where} is not valid JSON (${(err as Error).message})`);
  }
}

/**
 * Credentials for a registry host: from `authFile` when given, else from the docker config.
 * Always an object (`{}` for anonymous).
 */
export async function resolveRegistryAuth(
  host: string,
  opts: { authFile?: string } = {},
  deps: AuthDeps = defaultAuthDeps(),
): Promise<RegistryAuth> {
  if (opts.authFile) {
    const text = await deps.readFile(opts.authFile);
    if (text === undefined) throw new UsageError(`--registry-auth-file ${opts.authFile}: no such file`);
    const o = parseJson(text, `--registry-auth-file ${opts.authFile}`);
    if (!o || typeof o !== 'object' || Array.isArray(o))
      throw new UsageError(`--registry-auth-file ${opts.authFile}: not a JSON object`);
    const r = o as Record<string, unknown>;
    if ('auths' in r || 'credHelpers' in r || 'credsStore' in r) return authFromConfig(r, host, deps);
    if (typeof r.identitytoken === 'string' && r.identitytoken)
      return { identitytoken: r.identitytoken, serveraddress: serverAddress(host) };
    if (typeof r.username === 'string' && typeof r.password === 'string')
      return { username: r.username, password: r.password, serveraddress: serverAddress(host) };
    throw new UsageError(
      `--registry-auth-file ${opts.authFile}: expected {"username": ..., "password": ...} or a docker config.json (with "auths" or "credHelpers")`,
    );
  }
  const file = dockerConfigPath(deps.env, deps.home);
  const text = await deps.readFile(file);
  if (text === undefined) return {};
  const cfg = parseJson(text, file);
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new UsageError(`${file} is not a JSON object`);
  return authFromConfig(cfg, host, deps);
}

/** Which credentials are used, for messages: never the secret itself. */
export function describeAuth(a: RegistryAuth): string {
  if (a.identitytoken) return 'with an identity token';
  if (a.username !== undefined && a.password !== undefined) return `as ${a.username}`;
  return 'anonymously';
}

/** Run `docker-credential-<helper> get`, the server URL on stdin, JSON on stdout. */
export function runCredentialHelper(helper: string, serverUrl: string, env: NodeJS.ProcessEnv): Promise<HelperAnswer> {
  const cmd = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, ['get'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdin.on('error', () => {}); // a helper that exits without reading stdin
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new EngineError(`credential helper ${cmd} could not be run (${e.code ?? e.message})`, {
          hint:
            e.code === 'ENOENT'
              ? `install ${cmd}, or remove it from the docker config, or use --registry-auth-file`
              : undefined,
        }),
      ),
    );
    child.on('close', (code) => {
      if (/credentials not found/i.test(out) || /credentials not found/i.test(err)) return resolve(undefined);
      if (code !== 0) {
        // Helpers print their own error; it never holds the secret (they failed to find one).
        const why = (err.trim() || out.trim()).split('\n')[0]?.slice(0, 200) || `exit status ${code}`;
        return reject(
          new EngineError(`credential helper ${cmd} failed for ${serverUrl}: ${why}`, {
            hint: 'check the helper (docker login again), or use --registry-auth-file',
          }),
        );
      }
      let ans: unknown;
      try {
        ans = JSON.parse(out);
      } catch {
        return reject(new EngineError(`credential helper ${cmd} did not answer with JSON for ${serverUrl}`));
      }
      resolve(ans && typeof ans === 'object' ? ans : undefined);
    });
    child.stdin.end(serverUrl);
  });
}

export function defaultAuthDeps(): AuthDeps {
  return {
    env: process.env,
    home: os.homedir(),
    readFile: async (p) => {
      try {
        return await readFile(p, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    },
    runHelper: runCredentialHelper,
  };
}
