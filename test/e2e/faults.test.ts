/**
 * Faults: a backup killed with SIGKILL while the container is paused (the next run notices and
 * puts it back; no bundle-looking file remains, and the temporary is cleaned by the next write);
 * a full disk (clear error, nothing partial, source untouched).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
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
  sshHome,
  uid,
  waitFor,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-faults-'));
const stateDir = path.join(dir, 'state');
const name = uid('kill');
const env = { FERRY_STATE_DIR: stateDir };

afterAll(() => {
  spawnSync('umount', [path.join(dir, 'small')]);
  cleanup(ENGINE_A, { containers: [name, `${name}-2`], volumes: [name, `${name}-2`] });
  rmSync(dir, { recursive: true, force: true });
});

/** Whether a tar of ferry's reads the directory `mp` (a volume read from the host disk). */
function tarRunsOn(mp: string): boolean {
  const r = spawnSync('pgrep', ['-f', '--', `^tar .*--directory=${mp} `]);
  if (r.status !== 0 && r.status !== 1) throw new Error(`pgrep: ${r.stderr}`);
  return r.status === 0;
}

/** Start `ferry backup container -o out`, and SIGKILL it 0.3 s into its volume copy (`whileCopying` runs first). */
async function killMidVolume(
  container: string,
  out: string,
  whileCopying?: () => void | Promise<void>,
  extraEnv: Record<string, string> = {},
): Promise<void> {
  const child = spawn(BIN, ['backup', container, '-o', out, '--mkdir', '--compress', 'gzip'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: ferryEnv({ ...env, ...extraEnv }),
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const closed = new Promise((r) => child.on('close', r));
  try {
    await waitFor('the volume copy to start', () => /volume .* -> /.test(stderr), 30_000);
    await whileCopying?.();
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    child.kill('SIGKILL');
    await closed;
  }
}

describe('killed mid-backup', () => {
  it('SIGKILL leaves the container paused; the next run resumes it, removes the snapshot and temporaries, and says so', async () => {
    // A tmpfs inside the volume's path: the volume is then read through a helper (read in place,
    // the tmpfs would come along), whose sweep by the next run is checked below. Through the
    // engine (FERRY_HOST_VOLUMES=0), as for a remote engine: from the host's disk, no helper is made.
    docker(['run', '-d', '--name', name, '-v', `${name}:/v`, '--tmpfs', '/v/run', BUSYBOX, 'sleep', '100000']);
    docker(['exec', name, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=300 2>/dev/null']);
    const out = path.join(dir, 'store');
    await killMidVolume(name, out, undefined, { FERRY_HOST_VOLUMES: '0' });
    expect(inspect('container', name).State.Paused).toBe(true); // nobody could resume it
    // no file that looks like a finished bundle; only the hidden temporary
    expect(readdirSync(out).filter((f) => f.endsWith('.tar'))).toEqual([]);
    expect(readdirSync(out).filter((f) => f.endsWith('.partial'))).toHaveLength(1);

    // the next run (of another container, into the same store) notices
    docker(['run', '-d', '--name', `${name}-2`, BUSYBOX, 'sleep', '100000']);
    const r = await ferry(['backup', `${name}-2`, '-o', out, '--mkdir'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      new RegExp(`resumed container ${name}: a ferry run \\(pid \\d+\\) that was killed at .* had left it paused`),
    );
    const st = inspect('container', name).State;
    expect(st.Paused).toBe(false);
    expect(st.Running).toBe(true);
    expect(docker(['images', '-q', `ferry/${name}`])).toBe(''); // the killed run's snapshot is gone
    expect(r.stderr).toMatch(/removed helper containers left by a killed ferry run/);
    expect(docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.role=holder'])).toBe(''); // the killed run's helper is gone
    expect(readdirSync(out).filter((f) => f.endsWith('.partial'))).toEqual([]); // the dead run's temporary is gone
  });

  it.each([
    ['straight from its container (through the engine)', { FERRY_HOST_VOLUMES: '0' }],
    ['from the host disk', {}],
  ])(
    'a volume read %s: no helper is made, and after a SIGKILL the next run resumes the container',
    async (how, extraEnv) => {
      const n = `${name}-3${'FERRY_HOST_VOLUMES' in extraEnv ? 'e' : 'h'}`;
      docker(['run', '-d', '--name', n, '-v', `${n}:/v`, BUSYBOX, 'sleep', '100000']);
      try {
        docker(['exec', n, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=300 2>/dev/null']);
        const out = path.join(dir, `store3-${n}`);
        const mp = inspect('volume', n).Mountpoint as string;
        const fromHost = !('FERRY_HOST_VOLUMES' in extraEnv);
        await killMidVolume(
          n,
          out,
          async () => {
            expect(docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.role=holder'])).toBe('');
            // The step is announced as its reader starts: the host's tar may be a moment behind.
            if (fromHost) await waitFor(`a tar of ferry's on ${mp}`, () => tarRunsOn(mp), 5_000);
            else expect(tarRunsOn(mp), how).toBe(false);
          },
          extraEnv,
        );
        expect(inspect('container', n).State.Paused).toBe(true);
        // no tar of the killed run goes on reading the volume (its output pipe is gone)
        await waitFor(`no tar left on ${mp}`, () => !tarRunsOn(mp), 10_000);
        const r = await ferry(['backup', n, '-o', out, '--mkdir', '--compress', 'none'], { env });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toMatch(new RegExp(`resumed container ${n}: a ferry run \\(pid \\d+\\) that was killed`));
        expect(inspect('container', n).State.Paused).toBe(false);
        const v = await ferry([
          'verify',
          path.join(
            out,
            readdirSync(out).find((f) => f.endsWith('.tar'))!,
          ),
        ]);
        expect(v.code, v.stderr + v.stdout).toBe(0);
      } finally {
        cleanup(ENGINE_A, { containers: [n], volumes: [n] });
      }
    },
  );
});

describe('disk full', () => {
  it('a full target fails clearly, leaves nothing partial and the source running', async () => {
    const small = path.join(dir, 'small');
    mkdirSync(small);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', small]);
    expect(m.status, String(m.stderr)).toBe(0);
    docker(['run', '-d', '--name', `${name}-full`, '-v', `${name}-full:/v`, BUSYBOX, 'sleep', '100000']);
    try {
      docker(['exec', `${name}-full`, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=20 2>/dev/null']);
      const r = await ferry(['backup', `${name}-full`, '-o', small, '--compress', 'none']);
      expect(r.code, r.stderr).toBe(8);
      expect(r.stderr).toMatch(/no space left on device/);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      expect(readdirSync(small)).toEqual([]);
      const st = inspect('container', `${name}-full`).State;
      expect(st.Running).toBe(true);
      expect(st.Paused).toBe(false);
    } finally {
      cleanup(ENGINE_A, { containers: [`${name}-full`], volumes: [`${name}-full`] });
    }
  });
});

describe('ssh connection dropped mid-migration', () => {
  // In one pass (the source frozen, or stopped), and in the pre-copy's first pass while it runs.
  it.each([
    ['one pass', ['--no-precopy'], /volume .* -> .* on ssh:\/\/newhost/],
    [
      'one pass --stop-source',
      ['--no-precopy', '--stop-source', '--stop-timeout', '1'],
      /volume .* -> .* on ssh:\/\/newhost/,
    ],
    ['pre-copy', [], /volume .* -> .*: pass 1 while it runs/],
  ] as const)(
    'fails clearly; the target keeps nothing it got, the source keeps running: %s',
    async (what, flags, started) => {
      const c = `${name}-mig${what === 'one pass' ? '' : what === 'pre-copy' ? '-pre' : '-cut'}`;
      const { home } = sshHome(path.join(dir, 'ssh'));
      docker(['run', '-d', '--name', c, '-v', `${c}:/v`, BUSYBOX, 'sleep', '100000']);
      try {
        // 1 GiB: seconds of streaming, so the cut lands in the middle of the volume copy
        docker(['exec', c, 'sh', '-c', 'dd if=/dev/zero of=/v/blob bs=1M count=1024 2>/dev/null']);
        // With --stop-source the source was stopped for its snapshot: the rollback starts it again.
        const child = spawn(
          BIN,
          ['migrate', c, '--to', 'ssh://newhost', ...flags],
          // ferryEnv: the run's primary engine (engine C in the containerd run), where `c` is.
          { stdio: ['ignore', 'ignore', 'pipe'], env: ferryEnv({ ...env, HOME: home }) },
        );
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        await waitFor('the volume transfer to start', () => started.test(stderr), 30_000);
        await new Promise((r) => setTimeout(r, 100));
        // kill the sshd session processes (not the listener): the connection drops
        spawnSync('pkill', ['-f', '^sshd: root']);
        const code = await new Promise<number | null>((r) => child.on('close', r));
        expect(code, stderr).toBe(4);
        expect(stderr).not.toMatch(/at .*\.js:\d+/);
        expect(stderr).toMatch(/rollback: remove volume/);
        expect(exists('container', c, ENGINE_B), stderr).toBe(false);
        expect(exists('volume', c, ENGINE_B), stderr).toBe(false);
        expect(docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.role=holder'], { host: ENGINE_B })).toBe('');
        const st = inspect('container', c).State;
        expect(st.Running).toBe(true);
        expect(st.Paused).toBe(false);
      } finally {
        cleanup(ENGINE_A, { containers: [c], volumes: [c] });
        cleanup(ENGINE_B, { containers: [c], volumes: [c] });
      }
    },
  );
});
