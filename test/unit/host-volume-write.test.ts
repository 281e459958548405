/**
 * writeHostVolume on this machine's disk (root): the archive is extracted into the volume's
 * directory, the filesystem is flushed while tar writes and once more after it, before ferry says
 * the data is there; a flush that fails is a warning, not a lost volume; a directory that is not
 * the engine's is left alone.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { quirksFor } from '../../src/engine/quirks.js';
import type { Engine } from '../../src/engine/engine.js';
import { localShell, type HostShell } from '../../src/hostaccess/shell.js';
import { WRITE_BEHIND_MS, writeHostVolume } from '../../src/data/host-volume.js';
import { hostAccess } from '../../src/hostaccess/access.js';

/** What the engine's host offers, asked as a run asks it (no FERRY_HOST_* switch). */
const offered = (engine: Engine) => hostAccess(engine as never, {});

/**
 * localShell with `sync` and `tar` wrapped (a directory first on PATH): each logs to `log` what it
 * did and when tar ended, then runs the real one. `syncFails`: sync says so and exits 1.
 */
function wrappedShell(root: string, syncFails = false) {
  const bin = path.join(root, 'bin');
  const log = path.join(root, 'log');
  fs.mkdirSync(bin);
  fs.writeFileSync(
    path.join(bin, 'sync'),
    syncFails
      ? `#!/bin/sh\necho "sync $*" >> ${log}\necho "sync: no such option" >&2\nexit 1\n`
      : `#!/bin/sh\necho "sync $*" >> ${log}\nexec /bin/sync "$@"\n`,
    { mode: 0o755 },
  );
  fs.writeFileSync(
    path.join(bin, 'tar'),
    `#!/bin/sh\n[ "$1" = --version ] && exec /usr/bin/tar "$@"\necho tar-start >> ${log}\n/usr/bin/tar "$@"; s=$?\necho tar-end >> ${log}\nexit $s\n`,
    { mode: 0o755 },
  );
  const runs: string[][] = [];
  const shell: HostShell = {
    where: 'this host',
    run(argv) {
      runs.push(argv);
      return localShell.run(['env', `PATH=${bin}:${process.env.PATH}`, ...argv]);
    },
  };
  const lines = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : []);
  return { shell, runs, lines };
}

function engineOn(shell: HostShell, dir: string): Engine {
  return {
    facts: { podman: false, remapped: false },
    quirks: quirksFor({ podman: false }),
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

  it('flushes while tar writes and once after it, in one command on the host, then says the data is there', async () => {
    const dir = path.join(root, 'vol');
    const { shell, runs, lines } = wrappedShell(root);
    const { warnings, p } = progress();
    const ok = await writeHostVolume(
      engineOn(shell, dir),
      'data',
      async () => engineStat(dir),
      slowly(archive, 12, 3 * WRITE_BEHIND_MS),
      p,
      offered(engineOn(shell, dir)),
    );
    expect(ok).toEqual({}); // written, nothing lost
    expect(fs.readFileSync(path.join(dir, 'note'), 'utf8')).toBe('hello\n');
    expect(fs.statSync(path.join(dir, 'sub', 'data.bin')).size).toBe(3 << 20);
    // What the host offers (asked once per host), then the stat, the go-ahead, tar and the flushes in one exec.
    expect(runs.filter((r) => !/tar --version/.test(r.join(' ')))).toHaveLength(1);
    const log = lines();
    const end = log.indexOf('tar-end');
    expect(log[0]).toBe('tar-start');
    expect(end).toBeGreaterThan(0);
    const syncs = log.filter((l) => l.startsWith('sync'));
    for (const l of syncs) expect(l).toBe(`sync -f -- ${dir}`);
    expect(log.slice(0, end).filter((l) => l.startsWith('sync')).length).toBeGreaterThanOrEqual(1); // while tar wrote
    expect(log.at(-1)).toBe(`sync -f -- ${dir}`); // and after it
    expect(warnings).toEqual([]);
    await new Promise((r) => setTimeout(r, 2 * WRITE_BEHIND_MS));
    expect(lines()).toEqual(log); // the write-behind loop ended with the command
  });

  it('extended attributes the filesystem refused: written, one warning for the volume, and listed in the answer', async () => {
    const dir = path.join(root, 'vol');
    const bin = path.join(root, 'xbin');
    fs.mkdirSync(bin);
    // GNU tar's own words (exit 0) when a filesystem refuses an xattr of the archive
    fs.writeFileSync(
      path.join(bin, 'tar'),
      `#!/bin/sh\n[ "$1" = --version ] && exec /usr/bin/tar "$@"\n/usr/bin/tar "$@" || exit $?\n` +
        `echo "tar: setxattrat: Cannot set 'trusted.k' extended attribute for file './note': Operation not permitted" >&2\n` +
        `echo "tar: setxattrat: Cannot set 'user.a' extended attribute for file './sub/data.bin': Operation not supported" >&2\n`,
      { mode: 0o755 },
    );
    const shell: HostShell = {
      where: 'this host',
      run: (argv) => localShell.run(['env', `PATH=${bin}:${process.env.PATH}`, ...argv]),
    };
    const { warnings, p } = progress();
    const res = await writeHostVolume(
      engineOn(shell, dir),
      'data',
      async () => engineStat(dir),
      slowly(archive, 2, 10),
      p,
      offered(engineOn(shell, dir)),
    );
    expect(res).toEqual({
      xattrsLost: ['trusted.k on ./note: Operation not permitted', 'user.a on ./sub/data.bin: Operation not supported'],
    });
    expect(fs.readFileSync(path.join(dir, 'note'), 'utf8')).toBe('hello\n');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /volume data: 2 extended attributes of the archive could not be set .*trusted\.k on \.\/note/,
    );
  });

  it('a flush that fails: the volume is written, and a warning says it may not be on the disk yet', async () => {
    const dir = path.join(root, 'vol');
    const { shell } = wrappedShell(root, true);
    const { warnings, p } = progress();
    const ok = await writeHostVolume(
      engineOn(shell, dir),
      'data',
      async () => engineStat(dir),
      slowly(archive, 4, 100),
      p,
      offered(engineOn(shell, dir)),
    );
    expect(ok).toEqual({}); // written, nothing lost
    expect(fs.readFileSync(path.join(dir, 'note'), 'utf8')).toBe('hello\n');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /volume data: written, but flushing it to the disk of this host failed \(sync -f: sync: no such option\)/,
    );
  });

  it('a directory that is not the one the engine mounts: nothing is run on it and nothing read from the data', async () => {
    const dir = path.join(root, 'vol');
    const { shell, lines } = wrappedShell(root);
    const { p } = progress();
    const st = engineStat(dir);
    const data = slowly(archive, 4, 10);
    const ok = await writeHostVolume(
      engineOn(shell, dir),
      'data',
      async () => ({ ...st, mtime: st.mtime.replace(/\d(Z)$/, (d) => `${(Number(d[0]) + 1) % 10}Z`) }),
      data,
      p,
      offered(engineOn(shell, dir)),
    );
    expect(ok).toEqual({ refused: "the volume's directory on the host is not the one the engine mounts" });
    expect(lines()).toEqual([]); // no tar, no flush
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(data.readableDidRead).toBe(false); // the engine gets the data whole
  });

  it('a directory that is not on that host (stat fails there): not used', async () => {
    const dir = path.join(root, 'vol');
    const { shell, lines } = wrappedShell(root);
    const { p } = progress();
    const st = engineStat(dir);
    const eng = {
      ...engineOn(shell, dir),
      inspectVolume: async () => ({ Driver: 'local', Options: null, Mountpoint: path.join(root, 'nowhere') }),
    } as unknown as Engine;
    expect(await writeHostVolume(eng, 'data', async () => st, slowly(archive, 4, 10), p, offered(eng))).toEqual({
      refused: "the volume's directory on the host is not the one the engine mounts",
    });
    expect(lines()).toEqual([]);
  });
});
