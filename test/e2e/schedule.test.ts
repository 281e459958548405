/**
 * ferry schedule as ferry's container image runs it (the same entrypoint, as a process): backups
 * at each tick of an every-few-seconds schedule, containers chosen by label through FERRY_FILTER,
 * retention after each run, one line per run, and SIGTERM (docker stop) ending it in order: the
 * run under way is stopped with everything put back and no partial bundle left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { schemaChecked } from '../helpers/json-schema.js';
import {
  BIN,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ferry,
  ferryEnv,
  inspect,
  removeSnapshots,
  uid,
  waitFor,
} from '../helpers/lab.js';

const name = uid('sched');
const other = `${name}-other`;
const label = `ferry.sched=${name}`;
const dirs: string[] = [];

beforeAll(() => {
  docker(['run', '-d', '--name', name, '--label', label, '-v', `${name}:/v`, BUSYBOX, 'sleep', '100000']);
  docker(['exec', name, 'sh', '-c', 'echo scheduled > /v/f']);
  // not labelled: never backed up
  docker(['run', '-d', '--name', other, BUSYBOX, 'sleep', '100000']);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name, other], volumes: [name] });
  removeSnapshots([name, other], [ENGINE_A]);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function start(args: string[], env: Record<string, string> = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-e2e-sched-'));
  dirs.push(dir);
  const child: ChildProcess = spawn(BIN, ['schedule', '-o', dir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: ferryEnv({ FERRY_FILTER: `label=${label}`, ...env }),
  });
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d) => (out.stdout += d));
  child.stderr!.on('data', (d) => (out.stderr += d));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  return { dir, child, out, exited };
}

/** Nothing of a run is left: the container runs (not paused), no snapshot image, no helper. */
function nothingLeft() {
  const c = inspect('container', name);
  expect(c.State.Running).toBe(true);
  expect(c.State.Paused).toBe(false);
  expect(docker(['images', '-q', `ferry/${name}`]).trim()).toBe('');
  const helpers = docker(['ps', '-aq', '--filter', 'label=io.ferry.role']).trim().split('\n').filter(Boolean);
  for (const h of helpers) expect(inspect('container', h).Name).not.toContain(name);
}

describe('ferry schedule', () => {
  it('backs up the labelled containers at every tick, prunes, and stops in order at SIGTERM', async () => {
    const s = start(['--schedule', '@every 2s', '--keep-last', '1']);
    try {
      // two runs: the second one's prune leaves one bundle
      await waitFor('two scheduled runs', () => (s.out.stdout.match(/run due .*prune ok/g) ?? []).length >= 2, 90_000);
    } finally {
      s.child.kill('SIGTERM');
    }
    expect(await s.exited, s.out.stderr).toBe(143);
    const lines = s.out.stdout.split('\n').filter((l) => /run due/.test(l));
    expect(lines[0]).toMatch(/backup ok, 1 bundle\(s\)/);
    expect(lines[1]).toMatch(/prune ok, 1 removed/);
    // only the labelled container, only complete bundles: each verifies
    const files = readdirSync(s.dir);
    expect(files.length, files.join(' ')).toBeGreaterThanOrEqual(1);
    for (const f of files) {
      expect(f).toMatch(new RegExp(`^ferry-${name}-.*\\.tar$`));
      const v = await ferry(['verify', path.join(s.dir, f)]);
      expect(v.code, v.stderr).toBe(0);
    }
    nothingLeft();
  });

  it('passes SIGTERM on to the backup under way: no partial bundle, the container put back', async () => {
    // --once runs at once; the backup child stops at the volume read until the signal comes
    const s = start(['--once'], { FERRY_FAULT: 'volume-read', FERRY_FAULT_WAIT: '60000' });
    await waitFor('the backup at its volume read', () => s.out.stderr.includes('fault point volume-read'), 60_000);
    expect(inspect('container', name).State.Paused).toBe(true);
    s.child.kill('SIGTERM');
    expect(await s.exited, s.out.stderr).toBe(143);
    expect(readdirSync(s.dir)).toEqual([]);
    nothingLeft();
  });

  it('with --once and --json: one run now, its exit code, one JSON object; named containers replace the filter', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-e2e-sched-'));
    dirs.push(dir);
    // FERRY_FILTER as ferry's image sets it: a container named here is backed up all the same
    const r = await ferry(['--json', 'schedule', '--once', '-o', dir, other], {
      env: { FERRY_FILTER: `label=${label}` },
    });
    expect(r.code, r.stderr).toBe(0);
    const o = schemaChecked(r.stdout) as any;
    expect(o).toMatchObject({ command: 'schedule', ok: true, backup: { exitCode: 0 } });
    expect(o.backup.bundles).toHaveLength(1);
    expect(readdirSync(dir)).toEqual([path.basename(o.backup.bundles[0])]);
    expect(path.basename(o.backup.bundles[0])).toMatch(new RegExp(`^ferry-${other}-`));
    nothingLeft();
  });
});
