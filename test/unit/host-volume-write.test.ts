/**
 * writeHostVolume on this machine's disk (root): the archive is extracted into the volume's
 * directory, the filesystem is flushed while tar writes and once more after it, before ferry says
 * the data is there; a flush that fails is a warning, not a lost volume.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.js';
import { localShell, type HostShell } from '../../src/engine/host.js';
import { WRITE_BEHIND_MS, writeHostVolume } from '../../src/pipeline/host-volume.js';

/** localShell, recording each command with the time it started and whether tar was still running. */
function recordingShell(replace: (argv: string[]) => string[] = (a) => a) {
  const runs: { argv: string[]; duringTar: boolean }[] = [];
  let tarRunning = false;
  const shell: HostShell = {
    where: 'this host',
    async run(argv) {
      runs.push({ argv, duringTar: tarRunning });
      const p = await localShell.run(replace(argv));
      if (argv[0] === 'tar') {
        tarRunning = true;
        void p.exit.then(() => (tarRunning = false));
      }
      return p;
    },
  };
  return { shell, runs };
}

function engineOn(shell: HostShell, dir: string): Engine {
  return {
    facts: { podman: false, remapped: false },
    host: shell,
    inspectVolume: async () => ({ Driver: 'local', Options: null, Mountpoint: dir }),
  } as unknown as Engine;
}

/** What the engine reports for a container's mount point of dir: Go FileMode bits, RFC 3339 nanoseconds. */
function engineStat(dir: string) {
  const st = fs.statSync(dir, { bigint: true });
  const ns = st.mtimeNs % 1_000_000_000n;
  const iso = new Date(Number(st.mtimeNs / 1_000_000n)).toISOString().replace(/\.\d{3}Z$/, '');
  return { mode: 2 ** 31 + Number(st.mode & 0o777n), mtime: `${iso}.${ns.toString().padStart(9, '0')}Z` };
}

/** The archive in pieces, spread over `ms`. */
function slowly(archive: Buffer, pieces: number, ms: number): Readable {
  const size = Math.ceil(archive.length / pieces);
  return Readable.from(
    (async function* () {
      for (let at = 0; at < archive.length; at += size) {
        await new Promise((r) => setTimeout(r, ms / pieces));
        yield archive.subarray(at, at + size);
      }
    })(),
  );
}

const progress = () => {
  const warnings: string[] = [];
  return { warnings, p: { step() {}, info() {}, warn: (m: string) => warnings.push(m), bytes() {} } as never };
};

describe.skipIf(process.getuid?.() !== 0)('writeHostVolume: extract on the host, flushed to its disk (root)', () => {
  let root: string;
  let archive: Buffer;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-hostwrite-'));
    const src = path.join(root, 'src');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'sub', 'data.bin'), Buffer.alloc(3 << 20, 7));
    fs.writeFileSync(path.join(src, 'note'), 'hello\n');
    archive = execFileSync('tar', ['-C', src, '-cf', '-', '.'], { maxBuffer: 64 << 20 });
    fs.mkdirSync(path.join(root, 'vol'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('flushes while tar writes and once after it, then says the data is there', async () => {
    const dir = path.join(root, 'vol');
    const { shell, runs } = recordingShell();
    const { warnings, p } = progress();
    const ok = await writeHostVolume(engineOn(shell, dir), 'data', async () => engineStat(dir), slowly(archive, 12, 3 * WRITE_BEHIND_MS), p);
    expect(ok).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'note'), 'utf8')).toBe('hello\n');
    expect(fs.statSync(path.join(dir, 'sub', 'data.bin')).size).toBe(3 << 20);
    const syncs = runs.filter((r) => r.argv[0] === 'sync');
    for (const s of syncs) expect(s.argv).toEqual(['sync', '-f', '--', dir]);
    expect(syncs.filter((s) => s.duringTar).length).toBeGreaterThanOrEqual(1);
    expect(runs.at(-1)!.argv[0]).toBe('sync'); // the last command: the flush after tar
    expect(runs.at(-1)!.duringTar).toBe(false);
    expect(warnings).toEqual([]);
  });

  it('a flush that fails: the volume is written, and a warning says it may not be on the disk yet', async () => {
    const dir = path.join(root, 'vol');
    const { shell } = recordingShell((a) => (a[0] === 'sync' ? ['sh', '-c', 'echo "sync: no such option" >&2; exit 1'] : a));
    const { warnings, p } = progress();
    const ok = await writeHostVolume(engineOn(shell, dir), 'data', async () => engineStat(dir), slowly(archive, 4, 100), p);
    expect(ok).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'note'), 'utf8')).toBe('hello\n');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/volume data: written, but flushing it to the disk of this host failed \(sync -f: sync: no such option\)/);
  });
});
