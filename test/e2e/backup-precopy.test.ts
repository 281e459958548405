/**
 * backup --precopy (docs/precopy.md, Backup): the volume goes into a staging copy on the engine's
 * host while the container runs and a writer changes files in it; the pause is only the last
 * delta and the commit. The bundle restored elsewhere holds the volume exactly as the source held
 * it at the freeze (the writer is stopped by the pre-exec hook, just before the freeze, so that
 * the source keeps that state for the comparison), the pause is shorter than a single paused pass
 * of the same 256 MiB volume, and no staging volume is left, after a success or a SIGTERM in the
 * middle of the pre-copy.
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
  ferry,
  ferryEnv,
  inspect,
  removeSnapshots,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

const name = uid('bkpc');
const vol = `${name}-data`;
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-backup-precopy-'));

/** The staging volumes of this test's volume left on engine A (their names start with the volume's). */
function stagingLeft(): string[] {
  return docker(['volume', 'ls', '-q', '--filter', 'label=io.ferry.role=backup-staging'])
    .split('\n')
    .filter((v) => v.startsWith(`${vol}-ferry-stage-`));
}

/**
 * The writer: sequence numbers into files, rewrites, deletions; its pid in /tmp/writer.pid (not
 * the volume). A TERM ends it after the command under way (no dd left writing after it is gone).
 */
const WRITER =
  'trap "exit 0" TERM; echo $$ > /tmp/writer.pid; cd /data; mkdir -p w; i=0; while :; do i=$((i+1)); ' +
  'echo $i > w/n$((i % 100)); echo $i > w/seq$i; rm -f w/seq$((i-10)); ' +
  'dd if=/dev/urandom of=chunk$((i % 8)) bs=64k count=4 2>/dev/null; ' +
  'echo $i > w/last.tmp; mv w/last.tmp w/last; sleep 0.01; done';

/** The pre-exec hook: stop the writer, and wait until it is gone, just before the freeze. */
const STOP_WRITER = 'p=$(cat /tmp/writer.pid); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.05; done';

beforeAll(async () => {
  docker([
    'run',
    '-d',
    '--name',
    name,
    '-v',
    `${vol}:/data`,
    BUSYBOX,
    'sh',
    '-c',
    'trap "exit 0" TERM; mkdir -p /data/d; dd if=/dev/urandom of=/data/ballast bs=1M count=256 2>/dev/null; ' +
      'for j in $(seq 0 19); do dd if=/dev/urandom of=/data/d/f$j bs=4k count=8 2>/dev/null; done; ' +
      'touch /data/ready; while :; do sleep 0.2; done',
  ]);
  await waitFor('the data', () => docker(['exec', name, 'ls', '/data']).includes('ready'), 120_000);
}, 180_000);

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol, ...stagingLeft()] });
  cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
  removeSnapshots([name]);
  rmSync(dir, { recursive: true, force: true });
});

describe('backup --precopy of a running container with a writer', () => {
  let precopyPausedMs = 0;

  it('stopped by SIGTERM mid-pre-copy: exit 143, the container runs, no staging volume, no bundle', async () => {
    const out = path.join(dir, 'sigterm');
    mkdirSync(out);
    const child = spawn(BIN, ['backup', name, '-o', out, '--precopy'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: ferryEnv(),
    });
    let stderr = '';
    let stagingSeen: string[] = [];
    child.stdout.resume();
    const code = await new Promise<number | null>((resolve) => {
      let fired = false;
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (fired || !/pass 1 while it runs/.test(stderr)) return;
        fired = true;
        setTimeout(() => {
          stagingSeen = stagingLeft();
          child.kill('SIGTERM');
        }, 300);
      });
      child.on('close', (c) => resolve(c));
    });
    expect(code, stderr).toBe(143);
    expect(stagingSeen).toHaveLength(1); // it was there, mid-pre-copy
    expect(stagingLeft()).toEqual([]);
    const st = inspect('container', name).State;
    expect(st.Running).toBe(true);
    expect(st.Paused).toBe(false);
    expect(readdirSync(out)).toEqual([]);
    expect(docker(['ps', '-a', '--filter', 'label=io.ferry.role=holder', '-q'])).toBe('');
  }, 180_000);

  it('restores to the volume as it was at the freeze, and pauses only for the delta', async () => {
    docker(['exec', '-d', name, 'sh', '-c', WRITER]);
    await waitFor('the writer', () => docker(['exec', name, 'ls', '/data/w']).includes('seq20'));
    const out = path.join(dir, 'precopy');
    mkdirSync(out);
    const r = await ferry(['backup', name, '-o', out, '--precopy', '--pre-exec', STOP_WRITER, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    const v = res.dataPaths.volumes.find((x: { name: string }) => x.name === vol);
    expect(v.path).toBe('host-tar');
    expect(v.precopy, JSON.stringify(res.dataPaths)).toMatchObject({ passes: expect.any(Number) });
    // The writer changed things after the pass began: they went in the frozen delta.
    expect(v.precopy.frozenEntries).toBeGreaterThan(0);
    expect(v.precopy.frozenBytes).toBeLessThan(v.precopy.runningBytes);
    expect(v.precopy.runningBytes).toBeGreaterThan(256 << 20);
    expect(res.pausedMs).toBeGreaterThan(0);
    precopyPausedMs = res.pausedMs;
    expect(stagingLeft()).toEqual([]);
    expect(inspect('container', name).State.Running).toBe(true);

    // The writer is gone (stopped just before the freeze): the source holds what it held then.
    const atFreeze = volumeListing(vol);
    expect(atFreeze).toContain('./w/last ');
    const [bundle] = readdirSync(out);
    const back = await ferry(['-H', ENGINE_B, 'restore', path.join(out, bundle!), '--no-start']);
    expect(back.code, back.stderr).toBe(0);
    expect(volumeListing(vol, ENGINE_B)).toBe(atFreeze);
    // Every file whole: the sequence files hold their own numbers, up to the last one written.
    const files = docker(
      [
        'run',
        '--rm',
        '-v',
        `${vol}:/data:ro`,
        BUSYBOX,
        'sh',
        '-c',
        'cd /data/w; cat last; for f in seq*; do echo "$f $(cat $f)"; done',
      ],
      { host: ENGINE_B },
    ).split('\n');
    const last = Number(files[0]);
    expect(last).toBeGreaterThan(20);
    for (const l of files.slice(1)) {
      const [f, n] = l.split(' ');
      expect(f).toBe(`seq${n}`);
      expect(Number(n)).toBeLessThanOrEqual(last + 1);
      expect(Number(n)).toBeGreaterThan(last - 11);
    }
  }, 300_000);

  it('without --precopy the same volume keeps it paused longer', async () => {
    const out = path.join(dir, 'plain');
    mkdirSync(out);
    const r = await ferry(['backup', name, '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.dataPaths.volumes[0].precopy).toBeUndefined();
    console.log(`pausedMs: --precopy ${precopyPausedMs}, without ${res.pausedMs}`);
    expect(precopyPausedMs).toBeGreaterThan(0);
    expect(precopyPausedMs).toBeLessThan(res.pausedMs);
  }, 300_000);
});
