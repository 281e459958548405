/**
 * Memory stays flat as data grows, and sizes past 8 GiB survive: a 2 GiB volume backed up under a
 * 200 MB heap limit, and a 1 GiB volume migrated over SSH, with peak RSS under the bound; a 9 GiB
 * file (sparse on the source) restored byte for byte. ferry runs as an installed `ferry` does
 * (bin/ferry.js as a program, with its shebang's node flags).
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, mkdtempSync, rmSync } from 'node:fs';
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
  sshHome,
  uid,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-mem-'));
const RSS_BOUND_MB = 150;
/**
 * An encrypting backup's bound. Sealing every 64 KiB chunk allocates its ciphertext, and that
 * garbage lives outside V8's heap until a collection: the peak stays flat as the volume grows
 * (about the same at 1 and 2 GiB) but above a plain backup's. Bringing it to RSS_BOUND_MB is open.
 */
const ENCRYPTING_RSS_BOUND_MB = 200;
const made: { containers: string[]; volumes: string[] } = { containers: [], volumes: [] };

afterAll(() => {
  cleanup(ENGINE_A, made);
  rmSync(dir, { recursive: true, force: true });
});

/** Run ferry under a heap limit and report its exit code and peak RSS (VmHWM) in MB. */
function runMeasured(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; peakMb: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(BIN, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: ferryEnv({ ...env, NODE_OPTIONS: '--max-old-space-size=200' }),
    });
    let stderr = '';
    let peak = 0;
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
      resolve({ code, peakMb: peak, stderr });
    });
  });
}

describe('memory and size', () => {
  /**
   * The 2 GiB volume of the first two tests (1 GiB of random data, 1 GiB of zeros), made once:
   * the first only reads it; the second backs it up, removes it and restores it.
   */
  const c = uid('mem');
  beforeAll(() => {
    made.containers.push(c);
    made.volumes.push(c);
    docker(['run', '-d', '--name', c, '-v', `${c}:/v`, BUSYBOX, 'sleep', '100000']);
    docker([
      'exec',
      c,
      'sh',
      '-c',
      'dd if=/dev/urandom of=/v/a bs=1M count=1024 2>/dev/null; dd if=/dev/zero of=/v/b bs=1M count=1024 2>/dev/null',
    ]);
  });

  it(`backs up a 2 GiB volume with peak RSS under ${RSS_BOUND_MB} MB (uncompressed and zstd)`, async () => {
    for (const codec of ['none', 'zstd']) {
      const r = await runMeasured(['backup', c, '-o', path.join(dir, `mem-${codec}.tar`), '--compress', codec]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.peakMb, `peak RSS with --compress ${codec}`).toBeGreaterThan(20); // the probe really measured
      expect(r.peakMb, `peak RSS with --compress ${codec}`).toBeLessThan(RSS_BOUND_MB);
      rmSync(path.join(dir, `mem-${codec}.tar`));
    }
  });

  it(`a 2 GiB volume encrypted with age (--recipient) under ${ENCRYPTING_RSS_BOUND_MB} MB, restored (--identity) under ${RSS_BOUND_MB} MB`, async () => {
    const key = path.join(dir, 'age-key.txt');
    spawnSync('age-keygen', ['-o', key], { stdio: 'ignore' });
    const recipient = spawnSync('age-keygen', ['-y', key], { encoding: 'utf8' }).stdout.trim();
    expect(recipient).toMatch(/^age1/);
    // The content before and after, compared whole. (MD5 finds a changed byte as surely as
    // SHA-256 here, and busybox computes it three times as fast: 2 GiB twice.)
    const sum = () =>
      docker(['run', '--rm', '-v', `${c}:/v:ro`, BUSYBOX, 'sh', '-c', 'cd /v && md5sum a b'], {}).trim();
    const before = sum();
    const bundle = path.join(dir, 'mem-age.tar');
    const b = await runMeasured(['backup', c, '-o', bundle, '--compress', 'none', '--recipient', recipient]);
    expect(b.code, b.stderr).toBe(0);
    const head = Buffer.alloc(22);
    const fd = openSync(bundle, 'r');
    readSync(fd, head, 0, 22, 0);
    closeSync(fd);
    expect(head.toString()).toBe('age-encryption.org/v1\n');
    expect(b.peakMb, 'peak RSS of the encrypted backup').toBeGreaterThan(20);
    expect(b.peakMb, 'peak RSS of the encrypted backup').toBeLessThan(ENCRYPTING_RSS_BOUND_MB);
    cleanup(ENGINE_A, { containers: [c], volumes: [c] });
    const r = await runMeasured(['--identity', key, 'restore', bundle, '--no-start']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.peakMb, 'peak RSS of the decrypting restore').toBeGreaterThan(20);
    expect(r.peakMb, 'peak RSS of the decrypting restore').toBeLessThan(RSS_BOUND_MB);
    expect(sum()).toBe(before);
    rmSync(bundle);
    removeSnapshots([c], [ENGINE_A]);
  }, 600_000);

  it(`migrates a 1 GiB volume to ssh:// with peak RSS under ${RSS_BOUND_MB} MB`, async () => {
    // The volume through GNU tar and an SSH channel for seconds (the busybox image is already on
    // engine B): long enough for V8's young generation to grow to its limit. Measured here: 122-128
    // MB with node's default 16 MiB semi-spaces, 108-117 MB with bin/ferry.js's 2 MiB (the bench's
    // first migration of a 421 MB image as well: 135-151 MB against 113-118 MB).
    const c = uid('memmig');
    made.containers.push(c);
    made.volumes.push(c);
    const { home } = sshHome(dir);
    try {
      docker(['run', '-d', '--name', c, '-v', `${c}:/v`, BUSYBOX, 'sleep', '100000']);
      docker(['exec', c, 'sh', '-c', 'dd if=/dev/urandom of=/v/a bs=1M count=1024 2>/dev/null']);
      const r = await runMeasured(['migrate', c, '--to', 'ssh://newhost', '--no-start'], { HOME: home });
      expect(r.code, r.stderr).toBe(0);
      expect(docker(['run', '--rm', '-v', `${c}:/v:ro`, BUSYBOX, 'stat', '-c', '%s', '/v/a'], { host: ENGINE_B })).toBe(
        String(1024 ** 3),
      );
      expect(r.peakMb, 'peak RSS of migrate').toBeGreaterThan(20);
      expect(r.peakMb, 'peak RSS of migrate').toBeLessThan(RSS_BOUND_MB);
    } finally {
      cleanup(ENGINE_B, { containers: [c], volumes: [c] });
      removeSnapshots([c]); // the snapshot images the migration made, on both engines
    }
  }, 300_000);

  it('the ferry program runs node with a small young generation (--max-semi-space-size=2)', () => {
    // execArgv as node sees it: the flags of bin/ferry.js's shebang (env -S).
    const r = spawnSync(BIN, ['--version'], {
      encoding: 'utf8',
      env: {
        ...process.env,
        NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent("process.on('exit',()=>process.stderr.write('execArgv='+JSON.stringify(process.execArgv)))")}`,
      },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('execArgv=["--max-semi-space-size=2"]');
  });

  it('a 9 GiB file (sparse on the source) survives a round trip byte for byte', async () => {
    const c = uid('big');
    made.containers.push(c, `${c}-restored`);
    made.volumes.push(c, `${c}-restored`);
    docker(['run', '-d', '--name', c, '-v', `${c}:/v`, BUSYBOX, 'sleep', '100000']);
    // sparse 9 GiB with data at the start, just past 8 GiB and at the end
    docker([
      'exec',
      c,
      'sh',
      '-c',
      'truncate -s 9G /v/huge && echo start | dd of=/v/huge conv=notrunc 2>/dev/null && echo past-8g | dd of=/v/huge bs=1M seek=8200 conv=notrunc 2>/dev/null && echo end | dd of=/v/huge bs=1 seek=9663676400 conv=notrunc 2>/dev/null',
    ]);
    const bundle = path.join(dir, 'huge.tar');
    const r = await ferry(['backup', c, '-o', bundle, '--compress', 'zstd']);
    expect(r.code, r.stderr).toBe(0);
    const rr = await ferry(['restore', bundle, '--name', `${c}-restored`, '--on-conflict', 'rename', '--no-start']);
    expect(rr.code, rr.stderr).toBe(0);
    const size = docker(['run', '--rm', '-v', `${c}-restored:/r:ro`, BUSYBOX, 'stat', '-c', '%s', '/r/huge']);
    expect(Number(size)).toBe(9 * 1024 ** 3);
    // Byte for byte, with the host's GNU cmp on the volumes' directories: busybox's cmp reads a
    // byte at a time (about 30 s of CPU for these 2 x 9 GiB, against a few for GNU cmp).
    const where = (v: string) => path.join(inspect('volume', v).Mountpoint as string, 'huge');
    const cmp = spawnSync('cmp', [where(c), where(`${c}-restored`)], { encoding: 'utf8' });
    expect(cmp.status, `cmp: ${cmp.stdout}${cmp.stderr}`).toBe(0);
  }, 900_000);
});
