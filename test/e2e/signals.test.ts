/**
 * Every way a run can be told to end leads to the same orderly stop: SIGINT, SIGTERM, SIGHUP
 * (the SSH session or terminal that ran ferry closed), SIGPIPE, and a closed stdout or stderr.
 * The container is running again (not paused), nothing partial is left, and the exit status is
 * 128 + the signal's number with "interrupted by SIGx", whatever a later read or write saw.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BIN,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  exists,
  ferry,
  ferryEnv,
  inspect,
  uid,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-signals-'));
const name = uid('sig');
let bundle = '';

beforeAll(async () => {
  docker(['run', '-d', '--name', name, '-v', `${name}:/v`, BUSYBOX, 'sleep', '100000']);
  // Enough data that a run is still reading it when the signal comes.
  docker(['exec', name, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=300 2>/dev/null']);
  const out = path.join(dir, 'whole');
  mkdirSync(out);
  const r = await ferry(['backup', name, '-o', out, '--compress', 'gzip']);
  expect(r.code, r.stderr).toBe(0);
  bundle = path.join(out, readdirSync(out)[0]!);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name, `${name}-r`], volumes: [name, `${name}-r`] });
  cleanup(ENGINE_B, { containers: [name], volumes: [name] });
  rmSync(dir, { recursive: true, force: true });
});

type Stop = 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'SIGPIPE' | 'close stderr' | 'close stdout';

/**
 * Run ferry; once stderr shows `when`, wait a moment and stop it the way `how` says. Returns its
 * exit status and what it wrote to stderr before (and, where stderr stays open, after) the stop.
 */
function runAndStop(
  args: string[],
  when: RegExp,
  how: Stop,
  onTrigger: () => void = () => {},
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: ferryEnv() });
  let stderr = '';
  let fired = false;
  child.stdout.resume();
  return new Promise((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (fired || !when.test(stderr)) return;
      fired = true;
      setTimeout(() => {
        onTrigger();
        if (how === 'close stderr') child.stderr.destroy();
        else if (how === 'close stdout') child.stdout.destroy();
        else child.kill(how);
      }, 300);
    });
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const EXIT: Record<Stop, number> = {
  SIGINT: 130,
  SIGTERM: 143,
  SIGHUP: 129,
  SIGPIPE: 141,
  'close stderr': 141,
  'close stdout': 141,
};

function expectPutBack(out: string) {
  const st = inspect('container', name).State;
  expect(st.Paused).toBe(false);
  expect(st.Running).toBe(true);
  expect(readdirSync(out)).toEqual([]); // neither a bundle nor a temporary file
  expect(docker(['ps', '-a', '--filter', 'label=io.ferry.role=holder', '-q'])).toBe('');
  expect(docker(['images', '-q', `ferry/${name}`])).toBe(''); // no snapshot image
}

describe('backup stopped mid-volume', () => {
  for (const how of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGPIPE', 'close stderr'] as Stop[]) {
    it(`${how}: the container runs again, nothing is left, exit ${EXIT[how]}`, async () => {
      const out = path.join(dir, `backup-${how.replace(' ', '-')}`);
      mkdirSync(out);
      const r = await runAndStop(['backup', name, '-o', out, '--compress', 'gzip'], /volume .* -> /, how, () =>
        expect(inspect('container', name).State.Paused).toBe(true),
      );
      expect(r.code, r.stderr).toBe(EXIT[how]);
      if (how !== 'close stderr') expect(r.stderr).toContain(`interrupted by ${how}`);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      expectPutBack(out);
    });
  }

  it('close stdout while the bundle streams to it: the container runs again, exit 141', async () => {
    const out = path.join(dir, 'backup-stdout');
    mkdirSync(out);
    const r = await runAndStop(['backup', name, '-o', '-', '--compress', 'gzip'], /volume .* -> /, 'close stdout');
    expect(r.code, r.stderr).toBe(141);
    expect(r.stderr).toContain('interrupted by SIGPIPE (standard output was closed');
    expectPutBack(out);
  });
});

describe('restore stopped while it fills the volume', () => {
  for (const how of ['SIGINT', 'SIGTERM'] as Stop[]) {
    it(`${how}: reported as an interruption (not a damaged bundle), nothing is left`, async () => {
      const r = await runAndStop(
        ['restore', bundle, '--name', `${name}-r`, '--map-volume', `${name}=${name}-r`],
        /fill volume/,
        how,
      );
      expect(r.code, r.stderr).toBe(EXIT[how]);
      expect(r.stderr).toContain(`interrupted by ${how}`);
      expect(r.stderr).not.toMatch(/damaged|not a complete bundle/);
      expect(exists('container', `${name}-r`)).toBe(false);
      expect(exists('volume', `${name}-r`)).toBe(false);
    });
  }
});

describe('migrate stopped while it sends the volume', () => {
  it('SIGINT: the source runs, the target keeps nothing, exit 130, no host tar hint', async () => {
    const r = await runAndStop(['migrate', name, '--to', ENGINE_B], /volume .* -> /, 'SIGINT');
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain('interrupted by SIGINT');
    expect(r.stderr).not.toMatch(/FERRY_HOST_VOLUMES/);
    expect(inspect('container', name).State.Running).toBe(true);
    expect(inspect('container', name).State.Paused).toBe(false);
    expect(exists('container', name, ENGINE_B)).toBe(false);
    expect(exists('volume', name, ENGINE_B)).toBe(false);
  });
});

describe('one run per container at a time', () => {
  it('a second backup fails clearly (exit 6) while the first holds the container; with --wait it waits and records it running', async () => {
    const first = path.join(dir, 'overlap-1');
    const second = path.join(dir, 'overlap-2');
    const third = path.join(dir, 'overlap-3');
    for (const d of [first, second, third]) mkdirSync(d);
    const child = spawn(BIN, ['backup', name, '-o', first, '--compress', 'gzip'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: ferryEnv(),
    });
    let stderr = '';
    const done = new Promise<number | null>((resolve) => child.on('close', resolve));
    child.stdout.resume();
    await new Promise<void>((resolve) =>
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (/volume .* -> /.test(stderr)) resolve();
      }),
    );
    expect(inspect('container', name).State.Paused).toBe(true); // the first run holds it, paused
    const refused = await ferry(['backup', name, '-o', second, '--json']);
    expect(refused.code, refused.stderr).toBe(6);
    expect(refused.stderr).toMatch(new RegExp(`${name} is held by another ferry run \\(pid ${child.pid}`));
    expect(readdirSync(second)).toEqual([]);
    const waited = await ferry(['backup', name, '-o', third, '--wait', '120', '--json']);
    expect(waited.code, waited.stderr).toBe(0);
    expect(await done, stderr).toBe(0);
    // the second snapshot is of the running container, taken after the first run put it back
    const bundle = path.join(third, readdirSync(third)[0]!);
    const m = JSON.parse((await ferry(['--json', 'inspect', bundle])).stdout).manifest as {
      containers: { spec: { state: { running: boolean; paused: boolean } } }[];
    };
    expect(m.containers[0]!.spec.state).toEqual({ running: true, paused: false });
    expect(inspect('container', name).State.Paused).toBe(false);
  });
});
