/**
 * An --on-conflict replace killed (SIGKILL) in its commit, at each step of it, is finished by
 * the next ferry run on that engine (ops/steps/replace.ts, finishCommit; docs/commands.md, Exact
 * replace): the new container runs on the real volume, which holds the bundle's data byte for
 * byte, no staging volume or container set aside is left, and the journal has forgotten the run.
 * Killed before the commit, the old service is back with its own data. Each row stops ferry at an
 * exact step with FERRY_FAULT=<point> (src/util/fault.ts), as faults-matrix.test.ts does.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, BUSYBOX, ENGINE_A, ENGINE_B, docker, ferry, ferryEnv, inspect, uid } from '../helpers/lab.js';
import type { FaultPoint } from '../../src/util/fault.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-rollfwd-'));
const stateDir = path.join(dir, 'state');
const tag = uid('rf');
const base = `${tag}-base`;
let bundle = '';
/** The bundle's volume, file by file (sha256 and path). */
let bundleData = '';

/** A volume's regular files, each with its sha256, sorted; and its marker. */
function data(volume: string, host = ENGINE_A): string {
  return docker(
    ['run', '--rm', '-v', `${volume}:/v:ro`, BUSYBOX, 'sh', '-c', 'cd /v && find . -type f | sort | xargs sha256sum'],
    { host },
  ).trim();
}
const marker = (volume: string, host = ENGINE_A) =>
  docker(['run', '--rm', '-v', `${volume}:/v:ro`, BUSYBOX, 'cat', '/v/marker'], { host, allowFail: true }).trim();
const named = (kind: 'ps' | 'volume', needle: string, host = ENGINE_A) =>
  docker(kind === 'ps' ? ['ps', '-a', '--format', '{{.Names}}'] : ['volume', 'ls', '-q'], { host })
    .split('\n')
    .filter((n) => n.includes(needle));

/** A running container `name` on volume `name`, whose marker says `text` (and, for the bundle, 4 MiB more). */
function service(name: string, text: string, host = ENGINE_A, big = false): string {
  const id = docker(
    [
      'run',
      '-d',
      '--stop-timeout',
      '1',
      '--name',
      name,
      '-v',
      `${name}:/v`,
      BUSYBOX,
      'sh',
      '-c',
      // what it writes, it writes once: a copy restored from its bundle leaves the bundle's data as it is
      `[ -e /v/marker ] || { ${big ? 'head -c 4194304 /dev/urandom > /v/big.bin; mkdir -p /v/d; echo deep > /v/d/f; ' : ''}echo ${text} > /v/marker; }; exec sleep 100000`,
    ],
    { host },
  ).trim();
  for (let i = 0; i < 100 && marker(name, host) !== text; i++) spawnSleep(100);
  return id;
}
function spawnSleep(ms: number) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Run ferry with FERRY_FAULT=point, SIGKILL it there; the pid and stderr. */
function killedAt(args: string[], point: FaultPoint): Promise<{ pid: number; stderr: string; signal: string | null }> {
  const child = spawn(BIN, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: ferryEnv({ FERRY_FAULT: point, FERRY_STATE_DIR: stateDir }),
  });
  let stderr = '';
  return new Promise((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`ferry: fault point ${point} `)) child.kill('SIGKILL');
    });
    child.on('close', (_code, signal) => resolve({ pid: child.pid!, stderr, signal }));
  });
}

/** The next ferry run on `host` (a dry-run restore: it changes nothing of its own). */
async function nextRun(host: string): Promise<{ code: number | null; stderr: string }> {
  const probe = `${tag}-probe`;
  return ferry(['-H', host, 'restore', bundle, '--dry-run', '--name', probe, '--map-volume', `${base}=${probe}`], {
    env: { FERRY_STATE_DIR: stateDir },
  });
}

function journalOf(pid: number): unknown[] {
  const f = path.join(stateDir, 'replacing.json');
  const recs = existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as { pid: number }[]) : [];
  return recs.filter((r) => r.pid === pid);
}

function remove(names: string[], host = ENGINE_A) {
  for (const n of names) docker(['rm', '-f', '-v', n], { host, allowFail: true });
  for (const n of names) {
    for (const v of [n, ...named('volume', `${n}-ferry-new-`, host)])
      docker(['volume', 'rm', '-f', v], { host, allowFail: true });
  }
}

beforeAll(async () => {
  mkdirSync(stateDir, { recursive: true });
  service(base, 'new', ENGINE_A, true);
  const out = path.join(dir, 'bundle');
  mkdirSync(out);
  const r = await ferry(['backup', base, '-o', out, '--compress', 'gzip'], { env: { FERRY_STATE_DIR: stateDir } });
  expect(r.code, r.stderr).toBe(0);
  bundle = path.join(out, readdirSync(out)[0]!);
  bundleData = data(base);
  expect(bundleData).toMatch(/\.\/big\.bin/);
}, 120_000);

afterAll(() => {
  remove([base]);
  const images = docker(['images', '--format', '{{.Repository}}:{{.Tag}}'])
    .split('\n')
    .filter((i) => i.startsWith(`ferry/${base}:`));
  if (images.length) docker(['rmi', '-f', ...images], { allowFail: true });
  rmSync(dir, { recursive: true, force: true });
});

const COMMIT_POINTS: FaultPoint[] = [
  'replace-commit',
  'commit-trial',
  'commit-volume',
  'commit-fill',
  'commit-filled',
  'commit-create',
  'commit-start',
];

describe('restore --on-conflict replace killed in its commit: the next run finishes it', () => {
  it.each(COMMIT_POINTS.map((point, i) => ({ point, i })))(
    'killed at $point',
    async ({ point, i }) => {
      const name = `${tag}-${i}`;
      try {
        const oldId = service(name, 'old');
        const args = ['restore', bundle, '--name', name, '--map-volume', `${base}=${name}`, '--on-conflict', 'replace'];
        const r = await killedAt(args, point);
        const why = `killed at ${point}:\n${r.stderr}`;
        expect(r.signal, why).toBe('SIGKILL');
        const next = await nextRun(ENGINE_A);
        expect(next.code, `${why}\nnext run:\n${next.stderr}`).toBe(0);
        expect(next.stderr, why).toMatch(
          new RegExp(`finished the --on-conflict replace of ${name} left by a ferry run \\(pid ${r.pid}\\)`),
        );
        // the new container runs, on the real volume, which holds the bundle's data
        const c = inspect('container', name);
        expect(c.Id, why).not.toBe(oldId);
        expect(c.State.Running, why).toBe(true);
        expect(
          c.Mounts.map((m: { Name: string; Destination: string }) => `${m.Name}:${m.Destination}`),
          why,
        ).toEqual([`${name}:/v`]);
        expect(data(name), why).toBe(bundleData);
        expect(docker(['exec', name, 'cat', '/v/marker']).trim(), why).toBe('new');
        // nothing of the replace is left
        expect(named('volume', `${name}-ferry-new-`), why).toEqual([]);
        expect(named('ps', `${name}-ferry-old-`), why).toEqual([]);
        expect(journalOf(r.pid), why).toEqual([]);
      } finally {
        remove([name]);
      }
    },
    120_000,
  );

  it('killed before the commit (the new container on trial): the old service is back with its own data', async () => {
    const name = `${tag}-before`;
    try {
      const oldId = service(name, 'old');
      const oldData = data(name);
      const args = ['restore', bundle, '--name', name, '--map-volume', `${base}=${name}`, '--on-conflict', 'replace'];
      const r = await killedAt(args, 'watch');
      const next = await nextRun(ENGINE_A);
      expect(next.code, next.stderr).toBe(0);
      const c = inspect('container', name);
      expect(c.Id).toBe(oldId);
      expect(c.State.Running).toBe(true);
      expect(data(name)).toBe(oldData);
      expect(named('volume', `${name}-ferry-new-`)).toEqual([]);
      expect(journalOf(r.pid)).toEqual([]);
    } finally {
      remove([name]);
    }
  }, 120_000);
});

describe('migrate --on-conflict replace killed in its commit on the target: the next run finishes it', () => {
  it('killed at commit-volume', async () => {
    const name = `${tag}-mig`;
    try {
      service(name, 'new', ENGINE_A, true);
      const sourceData = data(name);
      const oldId = service(name, 'old', ENGINE_B);
      const r = await killedAt(['migrate', name, '--to', ENGINE_B, '--on-conflict', 'replace'], 'commit-volume');
      expect(r.signal, r.stderr).toBe('SIGKILL');
      const next = await nextRun(ENGINE_B);
      expect(next.code, next.stderr).toBe(0);
      expect(next.stderr).toMatch(`finished the --on-conflict replace of ${name}`);
      const c = inspect('container', name, ENGINE_B);
      expect(c.Id).not.toBe(oldId);
      expect(c.State.Running).toBe(true);
      expect(c.Mounts.map((m: { Name: string }) => m.Name)).toEqual([name]);
      expect(data(name, ENGINE_B)).toBe(sourceData);
      expect(named('volume', `${name}-ferry-new-`, ENGINE_B)).toEqual([]);
      expect(inspect('container', name).State.Running).toBe(true); // the source runs on
      expect(journalOf(r.pid)).toEqual([]);
      expect((await nextRun(ENGINE_A)).code).toBe(0); // and the source's side of that run, if any
    } finally {
      for (const host of [ENGINE_A, ENGINE_B]) {
        remove([name], host);
        const images = docker(['images', '--format', '{{.Repository}}:{{.Tag}}'], { host })
          .split('\n')
          .filter((i) => i.startsWith(`ferry/${name}:`));
        if (images.length) docker(['rmi', '-f', ...images], { host, allowFail: true });
      }
    }
  }, 180_000);
});
