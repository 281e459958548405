/**
 * Memory stays flat on S3 too: a 2 GiB volume backed up to the lab's S3 server (a streamed
 * multipart upload of unknown length) and restored from it, the data checked byte for byte, each
 * with ferry's peak RSS under issue 23's target of 200 MB (figures: docs/performance.md, S3).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, BUSYBOX, cleanup, docker, ENGINE_A, ferryEnv, s3Env, s3Url, uid } from '../helpers/lab.js';
import { s3Clean, s3Objects, s3Uploads } from '../helpers/s3.js';

const RSS_BOUND_MB = 200;
const RESTORE_BOUND_MB = 200;
const ROOT = uid('e2e-s3mem');
const c = uid('s3mem');

afterAll(async () => {
  cleanup(ENGINE_A, { containers: [c], volumes: [c] });
  await s3Clean(ROOT);
});

/** Run ferry and report its exit code, peak RSS (VmHWM) in MB, stdout and stderr. */
function runMeasured(args: string[]): Promise<{ code: number | null; peakMb: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: ferryEnv(s3Env()) });
    let stdout = '';
    let stderr = '';
    let peak = 0;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) / 1024);
      } catch {
        /* exited */
      }
    }, 50);
    child.on('close', (code) => {
      clearInterval(t);
      resolve({ code, peakMb: peak, stdout, stderr });
    });
  });
}

describe('s3 memory', () => {
  it(`backs up a 2 GiB volume to s3 (peak RSS under ${RSS_BOUND_MB} MB) and restores it (under ${RESTORE_BOUND_MB} MB)`, async () => {
    docker(['run', '-d', '--name', c, '-v', `${c}:/v`, BUSYBOX, 'sleep', '100000']);
    docker([
      'exec',
      c,
      'sh',
      '-c',
      'dd if=/dev/urandom of=/v/a bs=1M count=1024 2>/dev/null; dd if=/dev/zero of=/v/b bs=1M count=1024 2>/dev/null',
    ]);
    const sum = () => docker(['exec', c, 'sh', '-c', 'md5sum /v/a /v/b']);
    const before = sum();
    const t0 = Date.now();
    const b = await runMeasured(['--json', 'backup', c, '-o', s3Url(ROOT), '--compress', 'none']);
    const backupS = (Date.now() - t0) / 1000;
    expect(b.code, b.stderr).toBe(0);
    expect(b.peakMb).toBeGreaterThan(20); // the probe really measured
    expect(b.peakMb, 'peak RSS of the backup to s3').toBeLessThan(RSS_BOUND_MB);
    const bundle = JSON.parse(b.stdout).bundle as string;
    expect(await s3Uploads(ROOT)).toEqual([]);
    expect(await s3Objects(ROOT)).toHaveLength(1);

    cleanup(ENGINE_A, { containers: [c], volumes: [c] });
    const t1 = Date.now();
    const r = await runMeasured(['restore', bundle]);
    const restoreS = (Date.now() - t1) / 1000;
    expect(r.code, r.stderr).toBe(0);
    expect(r.peakMb, 'peak RSS of the restore from s3').toBeLessThan(RESTORE_BOUND_MB);
    expect(sum()).toBe(before);
    console.log(
      `s3 2 GiB: backup ${backupS.toFixed(1)} s, peak RSS ${b.peakMb.toFixed(0)} MB; restore ${restoreS.toFixed(1)} s, peak RSS ${r.peakMb.toFixed(0)} MB`,
    );
  }, 600_000);
});
