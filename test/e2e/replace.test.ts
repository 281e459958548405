/**
 * --on-conflict replace is atomic: what is replaced stays intact until its replacement ran and
 * passed its watch. Cut in the middle of the fill (SIGINT, SIGKILL), or failed on the target after
 * the send, the old container is there under its name with its id, running, and its volume holds
 * its data (written after the bundle was made, too); after a SIGKILL the next run removes the
 * staging volume the dead one left.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, BUSYBOX, cleanup, docker, ENGINE_A, ENGINE_B, ferry, ferryEnv, inspect, uid } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-replace-'));
const name = uid('rpl');
let bundle = '';

/** The volumes and containers ferry's replace leaves behind while it works (staging, set aside). */
function leftovers(host = ENGINE_A): string[] {
  const vols = docker(['volume', 'ls', '-q', '--filter', `name=${name}-ferry-`], { host });
  const ctrs = docker(['ps', '-a', '--format', '{{.Names}}', '--filter', `name=${name}-ferry-`], { host });
  return [...vols.split('\n'), ...ctrs.split('\n')].filter(Boolean);
}

function marker(host = ENGINE_A): string {
  return docker(['exec', name, 'cat', '/v/marker'], { host }).trim();
}

beforeAll(async () => {
  // busybox's sleep as PID 1 ignores SIGTERM: the replace kills it after 1 s, not 10
  docker(['run', '-d', '--name', name, '--stop-timeout', '1', '-v', `${name}:/v`, BUSYBOX, 'sleep', '100000']);
  // Enough data that the fill is still running when the signal comes.
  docker([
    'exec',
    name,
    'sh',
    '-c',
    'dd if=/dev/urandom of=/v/blob bs=1M count=300 2>/dev/null; echo bundled > /v/marker',
  ]);
  const out = path.join(dir, 'b');
  mkdirSync(out);
  const r = await ferry(['backup', name, '-o', out, '--compress', 'gzip']);
  expect(r.code, r.stderr).toBe(0);
  bundle = path.join(out, readdirSync(out)[0]!);
  // Written after the bundle was made: what a destructive replace would lose.
  docker(['exec', name, 'sh', '-c', 'echo written-after > /v/marker']);
});

afterAll(() => {
  for (const host of [ENGINE_A, ENGINE_B]) {
    const extra = leftovers(host);
    cleanup(host, { containers: [name, ...extra], volumes: [name, ...extra] });
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Run ferry and send `sig` once stderr matches `when`; resolves with its exit code (or signal) and stderr. */
function runAndSignal(args: string[], when: RegExp, sig: NodeJS.Signals) {
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: ferryEnv() });
  let stderr = '';
  let fired = false;
  child.stdout.resume();
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (fired || !when.test(stderr)) return;
      fired = true;
      setTimeout(() => child.kill(sig), 300);
    });
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

describe('restore --on-conflict replace cut during the fill', () => {
  let oldId = '';
  beforeAll(() => {
    oldId = inspect('container', name).Id as string;
  });

  function expectOldIntact() {
    const c = inspect('container', name);
    expect(c.Id).toBe(oldId);
    expect(c.State.Running).toBe(true);
    expect(c.Mounts.map((m: { Name?: string }) => m.Name)).toEqual([name]);
    expect(marker()).toBe('written-after');
  }

  it('SIGINT: exit 130, the old container runs on with its data, nothing is left', async () => {
    const r = await runAndSignal(['restore', bundle, '--on-conflict', 'replace'], /fill volume/, 'SIGINT');
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain('interrupted by SIGINT');
    expectOldIntact();
    expect(leftovers()).toEqual([]);
  });

  it('SIGKILL: the old container runs on with its data; the next run removes the staging volume', async () => {
    const r = await runAndSignal(['restore', bundle, '--on-conflict', 'replace'], /fill volume/, 'SIGKILL');
    expect(r.signal, r.stderr).toBe('SIGKILL');
    expectOldIntact();
    expect(leftovers()).toEqual([expect.stringMatching(new RegExp(`^${name}-ferry-new-`))]);
    const next = await ferry(['restore', bundle, '--on-conflict', 'replace', '--dry-run']);
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toMatch(/removed the staging volume/);
    expect(leftovers()).toEqual([]);
    expectOldIntact();
  });

  it('uncut: the bundle replaces the service, and nothing of the swap is left', async () => {
    const r = await ferry(['restore', bundle, '--on-conflict', 'replace']);
    expect(r.code, r.stderr).toBe(0);
    const c = inspect('container', name);
    expect(c.Id).not.toBe(oldId);
    expect(c.State.Running).toBe(true);
    expect(marker()).toBe('bundled');
    expect(leftovers()).toEqual([]);
  });
});

describe('migrate --on-conflict replace, the new container failing on the target', () => {
  const src = uid('rplm');
  afterAll(() => cleanup(ENGINE_A, { containers: [src], volumes: [src] }));

  it('the target keeps its old container and data, the source runs on', async () => {
    // The source marks its volume at its first start; a copy that finds the mark exits at once.
    docker([
      'run', '-d', '--name', src, '-v', `${src}:/v`, BUSYBOX,
      'sh', '-c', 'test -f /v/started && exit 3; touch /v/started; exec sleep 100000',
    ]); // prettier-ignore
    // On the target: a service of that name, with its own data.
    docker(
      [
        'run',
        '-d',
        '--name',
        src,
        '--stop-timeout', // its sleep ignores SIGTERM: set aside after 1 s, not 10
        '1',
        '-v',
        `${src}:/v`,
        BUSYBOX,
        'sh',
        '-c',
        'echo target-old > /v/marker; exec sleep 100000',
      ],
      {
        host: ENGINE_B,
      },
    );
    const oldId = inspect('container', src, ENGINE_B).Id as string;
    try {
      const r = await ferry(['migrate', src, '--to', ENGINE_B, '--on-conflict', 'replace']);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(/stopped right after its start/);
      const back = inspect('container', src, ENGINE_B);
      expect(back.Id).toBe(oldId);
      expect(back.State.Running).toBe(true);
      expect(docker(['exec', src, 'cat', '/v/marker'], { host: ENGINE_B }).trim()).toBe('target-old');
      expect(docker(['exec', src, 'ls', '/v'], { host: ENGINE_B }).trim()).toBe('marker');
      expect(docker(['volume', 'ls', '-q', '--filter', `name=${src}-ferry-`], { host: ENGINE_B })).toBe('');
      expect(inspect('container', src).State.Running).toBe(true);
    } finally {
      cleanup(ENGINE_B, { containers: [src], volumes: [src] });
      const left = docker(['volume', 'ls', '-q', '--filter', `name=${src}-ferry-`], { host: ENGINE_B });
      for (const v of left.split('\n').filter(Boolean))
        docker(['volume', 'rm', '-f', v], { host: ENGINE_B, allowFail: true });
    }
  });
});
