/**
 * Helpers for end-to-end tests: run the real CLI (bin/ferry.js, built), drive the docker CLI, and
 * make names/ports that never collide. The lab (engines, registry, sshd) is started by .ci/lab.sh.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const BIN = path.join(ROOT, 'bin', 'ferry.js');
/** Docker 20.10 with overlay2 (Debian bookworm's docker.io). */
export const DOCKER_20 = 'unix:///var/run/docker.sock';
/** Docker 26 with the containerd image store (Debian trixie's docker.io), the default of new installs. */
export const DOCKER_26_CONTAINERD = 'unix:///var/run/docker-c.sock';
/** Docker 28.5 on containerd 2.1 with the containerd image store (Debian forky's docker.io): engine D. */
export const DOCKER_28_CONTAINERD = 'unix:///var/run/docker-d.sock';
/** Engine C: Docker 26 with the containerd image store. */
export const ENGINE_C = DOCKER_26_CONTAINERD;
/** Engine D: the second containerd-store engine (Docker 28, containerd 2), for containerd store → containerd store. */
export const ENGINE_D = DOCKER_28_CONTAINERD;
/**
 * The kind of engine this e2e run targets: FERRY_E2E_ENGINE=overlay2 (the default), containerd
 * (engine C, Docker 26) or docker28 (engine D, Docker 28 on containerd 2; also of the containerd
 * kind). ENGINE_A, the engine every test starts from, is that engine; ENGINE_B, the second host
 * (also reached over SSH), is Docker 20.10 in every run, so a containerd run also crosses engine kinds.
 */
export const ENGINE_KIND: 'overlay2' | 'containerd' =
  process.env.FERRY_E2E_ENGINE === 'containerd' || process.env.FERRY_E2E_ENGINE === 'docker28'
    ? 'containerd'
    : 'overlay2';
export const ENGINE_A =
  process.env.FERRY_E2E_ENGINE === 'docker28'
    ? DOCKER_28_CONTAINERD
    : ENGINE_KIND === 'containerd'
      ? DOCKER_26_CONTAINERD
      : DOCKER_20;
export const ENGINE_B = 'unix:///var/run/docker-b.sock';
/** The engine ferry reaches without -H: the default socket, or engine C (D) in a containerd (docker28) run. */
const DEFAULT_HOST = ENGINE_KIND === 'containerd' ? ENGINE_A : undefined;
export const PODMAN = 'unix:///run/podman/podman.sock';
export const BUSYBOX = 'ferry-test/busybox:1';
export const POSTGRES = 'ferry-test/postgres:15';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment ferry runs with in these tests: DOCKER_HOST names the run's primary engine where it is not the default socket. */
export function ferryEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DOCKER_HOST;
  // A test that names DOCKER_HOST or a docker context chooses the engine itself.
  if (DEFAULT_HOST && !('DOCKER_HOST' in extra) && !('DOCKER_CONTEXT' in extra)) env.DOCKER_HOST = DEFAULT_HOST;
  for (const [k, v] of Object.entries(extra))
    if (v === undefined) delete env[k];
    else env[k] = v;
  return env;
}

/** Run ferry. `input` is piped to stdin (a file path via inputFile, or a Buffer). */
export function ferry(
  args: string[],
  opts: { env?: Record<string, string | undefined>; stdinFile?: string; stdoutFile?: string } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = ferryEnv(opts.env);
    const cmd = [BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    const redir = `${opts.stdinFile ? ` < '${opts.stdinFile}'` : ' < /dev/null'}${opts.stdoutFile ? ` > '${opts.stdoutFile}'` : ''}`;
    // bin/ferry.js run as a program, as an installed `ferry` is: its shebang's node flags apply
    const child = spawn('sh', ['-c', `exec ${cmd}${redir}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Run a shell pipeline (for `ferry ... -o - | ferry restore -`). */
export function sh(script: string, env: Record<string, string> = {}): Run {
  const r = spawnSync('sh', ['-c', script], {
    env: { ...ferryEnv(env), FERRY: BIN },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** sh() without blocking this process: for a script whose requests it must answer (a local HTTP server). */
export function shAsync(script: string, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', script], {
      env: { ...ferryEnv(env), FERRY: BIN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Run the docker CLI against an engine; throws on failure unless allowFail. */
export function docker(args: string[], opts: { host?: string; allowFail?: boolean; input?: string } = {}): string {
  const r = spawnSync('docker', ['-H', opts.host ?? ENGINE_A, ...args], {
    encoding: 'utf8',
    input: opts.input,
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0 && !opts.allowFail) throw new Error(`docker ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return (r.stdout ?? '').trim();
}

export function inspect<T = any>(kind: 'container' | 'volume' | 'network' | 'image', name: string, host = ENGINE_A): T {
  return JSON.parse(docker([kind, 'inspect', name], { host }))[0] as T;
}

export function exists(kind: 'container' | 'volume' | 'network' | 'image', name: string, host = ENGINE_A): boolean {
  return spawnSync('docker', ['-H', host, kind, 'inspect', name], { stdio: 'ignore' }).status === 0;
}

export function uid(prefix = 'ft'): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

/** A TCP port nothing listens on right now (on 127.0.0.1). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function waitFor(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** Remove containers, volumes and networks by name, ignoring what is already gone. */
export function cleanup(
  host: string,
  what: { containers?: string[]; volumes?: string[]; networks?: string[]; images?: string[] },
) {
  for (const c of what.containers ?? []) docker(['rm', '-f', '-v', c], { host, allowFail: true });
  for (const v of what.volumes ?? []) docker(['volume', 'rm', '-f', v], { host, allowFail: true });
  for (const n of what.networks ?? []) docker(['network', 'rm', n], { host, allowFail: true });
  for (const i of what.images ?? []) docker(['rmi', '-f', i], { host, allowFail: true });
}

/** Remove the snapshot images ferry made of these containers (`ferry/<container>:<time>`) on each engine. */
export function removeSnapshots(containers: string[], hosts: string[] = [ENGINE_A, ENGINE_B]) {
  for (const host of hosts) {
    const refs = docker(['images', '--format', '{{.Repository}}:{{.Tag}}'], { host, allowFail: true })
      .split('\n')
      .filter((r) => containers.some((c) => r.startsWith(`ferry/${c}:`)));
    if (refs.length) docker(['rmi', '-f', ...refs], { host, allowFail: true });
  }
}

/**
 * A base image shared by several engines, as a user's own base image would be: `script` run in
 * busybox on `on` (no network) and committed as `image` there, then saved once and loaded into
 * each engine of `loadInto` (the same layers everywhere). The tests of what a migration sends
 * when the target already holds the base use it.
 */
export function buildBaseImage(image: string, script: string, on: string, loadInto: string[]): void {
  const build = `${image.replace(/[^a-zA-Z0-9_.-]/g, '-')}-build`;
  docker(['run', '--network', 'none', '--name', build, BUSYBOX, 'sh', '-c', script], { host: on });
  docker(['commit', build, image], { host: on });
  docker(['rm', build], { host: on });
  for (const host of loadInto) {
    const load = `docker -H ${on} save ${image} | docker -H ${host} load`;
    const r = sh(load);
    if (r.code !== 0) throw new Error(`${load}: ${r.stderr}`);
  }
}

/**
 * The service of the cross-engine tests: `image` (a base image of buildBaseImage()) run on `host`
 * with settings a migration must carry (an env value, a label, a restart policy; `args` adds
 * more), volume `volume` at /data, and, on its first start only, a file in its writable layer
 * (/top.txt) and an owned file in the volume (/data/d/f): a copy restored from a bundle finds
 * them there and writes nothing.
 */
export function runLayeredService(
  name: string,
  image: string,
  volume: string,
  host: string,
  args: string[] = [],
): void {
  const first = 'echo layer > /top.txt; mkdir -p /data/d; echo volume > /data/d/f; chown -R 33:33 /data/d';
  docker(
    [
      ...['run', '-d', '--name', name, '-e', 'MODE=production', '--label', 'team=ops'],
      ...['--restart', 'unless-stopped', ...args, '-v', `${volume}:/data`, image],
      ...['sh', '-c', `[ -f /data/d/f ] || { ${first}; }; exec sleep 100000`],
    ],
    { host },
  );
}

/**
 * A full listing of a directory inside a container: path, owner, mode, size, link count, mtime,
 * type, symlink target and a hash of regular files (the first 64 bits of their MD5: any changed
 * byte shows, and busybox hashes MD5 three times as fast as SHA-256, which counts for the
 * gigabyte-sized files some tests list). Taken with busybox in a throwaway container that mounts
 * the volume read-only.
 */
export function volumeListing(volume: string, host = ENGINE_A): string {
  const script =
    'cd /v && find . | LC_ALL=C sort | while IFS= read -r f; do ' +
    'st=$(stat -c "%u:%g %a %h %Y %F" "$f"); ' +
    'if [ -L "$f" ]; then x="-> $(readlink "$f")"; elif [ -f "$f" ]; then x="$(stat -c %s "$f") $(md5sum < "$f" | cut -c1-16)"; else x=""; fi; ' +
    'echo "$f $st $x"; done';
  const args = ['run', '--rm', '--network', 'none', '-v', `${volume}:/v:ro`, BUSYBOX, 'sh', '-c', script];
  if (host !== PODMAN) return docker(args, { host });
  // The docker CLI cannot attach to a `run` on Podman; Podman's own CLI reads the same store.
  const r = spawnSync('podman', args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`podman ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout.trim();
}

export const LAB = process.env.LAB ?? '/var/lib/ferry-lab';

/**
 * A HOME whose ~/.ssh/config names the lab's sshd (which reaches engine B) as `newhost` (`nofwd`:
 * the same without socket forwarding; `ctrdhost`: the sshd that reaches engine C), with the
 * lab's client key and a known_hosts file (the real host key unless `knownHosts` says otherwise).
 */
export function sshHome(dir: string, knownHosts?: string): { home: string; knownHostsFile: string } {
  const home = path.join(dir, 'home');
  const ssh = path.join(home, '.ssh');
  mkdirSync(ssh, { recursive: true, mode: 0o700 });
  const knownHostsFile = path.join(ssh, 'known_hosts');
  writeFileSync(knownHostsFile, knownHosts ?? readFileSync(path.join(LAB, 'ssh', 'known_hosts'), 'utf8'));
  const hosts: [string, number][] = [
    ['newhost', 2222],
    ['nofwd', 2223],
    ['ctrdhost', 2224],
  ];
  const entry = ([host, port]: [string, number]) => [
    `Host ${host}`,
    '  HostName 127.0.0.1',
    `  Port ${port}`,
    '  User root',
    `  IdentityFile ${path.join(LAB, 'ssh', 'id_ed25519')}`,
    `  UserKnownHostsFile ${knownHostsFile}`,
  ];
  writeFileSync(path.join(ssh, 'config'), [...hosts.flatMap(entry), ''].join('\n'));
  return { home, knownHostsFile };
}

/** Awkward volume content: owners (incl. > 262143), setuid/setgid/sticky, symlinks, hardlinks, unicode, mtimes, a 0700 root. */
export const AWKWARD_DATA = [
  'set -e',
  'cd /data',
  'mkdir -p www empty "dir/sub" "ünïcödé dir"',
  'echo "<h1>ferry</h1>" > www/index.html',
  'echo hello > "ünïcödé dir/fïlé ✓.txt"',
  'echo owned > owned && chown 33:34 owned',
  'echo big > biguid && chown 300000:300001 biguid',
  'echo x > setuid && chmod 4755 setuid',
  'echo y > setgid && chmod 2750 setgid',
  'mkdir sticky && chmod 1777 sticky',
  'ln -s /etc/passwd abs-link',
  'ln -s ../owned dir/rel-link',
  'echo h > hard1 && ln hard1 hard2 && chown 1234:5678 hard1',
  'dd if=/dev/urandom of=dir/sub/random.bin bs=1024 count=500 2>/dev/null',
  'touch -d "2001-02-03 04:05:06" owned',
  'chmod 0700 /data && chown 33:33 /data',
].join('\n');

/** Offset of a member's data in a bundle's outer tar (first header whose name starts with `prefix`). */
export function memberOffset(buf: Buffer, prefix: string): number {
  for (let off = 0; off + 512 <= buf.length;) {
    const name = buf.toString('utf8', off, off + 100).replace(/\0.*$/s, '');
    const size = parseInt(
      buf
        .toString('ascii', off + 124, off + 136)
        .replace(/\0.*$/s, '')
        .trim() || '0',
      8,
    );
    if (name.startsWith(prefix)) return off + 512;
    off += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error(`no member ${prefix}`);
}

/**
 * The lab's S3 server (Ceph RadosGW, started by .ci/lab.sh): the bucket `ferry-test` of the user
 * whose keys these are, and a second user with no rights on it.
 */
export const S3 = {
  endpoint: 'http://127.0.0.1:7480',
  bucket: 'ferry-test',
  region: 'us-east-1',
  accessKeyId: 'FERRYCIACCESSKEY0001',
  secretAccessKey: 'ferry-ci-secret-key-0000000000000000001',
  other: { accessKeyId: 'FERRYOTHERACCESSKEY1', secretAccessKey: 'ferry-other-secret-key-00000000000000001' },
} as const;

/** The environment that gives ferry (and the SDK in a test) the lab's S3 credentials. */
export function s3Env(): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: S3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3.secretAccessKey,
    AWS_REGION: S3.region,
  };
}

/** `s3+http://127.0.0.1:7480/ferry-test/<prefix>`: a store in the lab's bucket. */
export function s3Url(prefix: string): string {
  return `s3+http://127.0.0.1:7480/${S3.bucket}/${prefix}`;
}
