import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { collect } from '../helpers/tar.js';
import { TarEndTrim } from '../../src/util/tar-end.js';
import { quirksFor } from '../../src/engine/quirks.js';
import { shellQuote } from '../../src/hostaccess/shell.js';
import { hostAccessRefusal } from '../../src/hostaccess/refusals.js';
import {
  hostDeltaTarArgs,
  hostTarArgs,
  hostTarSizeArgs,
  hostUntarArgs,
  parseTarTotals,
  parseStat,
  rfc3339Nanos,
  sameDirectory,
} from '../../src/data/host-volume.js';

const facts = { host: true, ...quirksFor({ podman: false }), remapped: false };
const vol = { Driver: 'local', Options: null, Mountpoint: '/var/lib/docker/volumes/data/_data' };

describe('hostAccessRefusal: when a volume is reached on the host disk', () => {
  it('a plain local volume of an engine whose host ferry can run commands on: yes', () => {
    expect(hostAccessRefusal(facts, vol, undefined)).toBeUndefined();
    expect(hostAccessRefusal(facts, { ...vol, Options: {} }, undefined)).toBeUndefined();
    expect(hostAccessRefusal(facts, vol, '1')).toBeUndefined();
  });
  it('anything else goes through the engine, with the reason', () => {
    expect(hostAccessRefusal(facts, vol, '0')).toMatch(/FERRY_HOST_VOLUMES=0/);
    expect(hostAccessRefusal(facts, vol, 'off')).toMatch(/FERRY_HOST_VOLUMES=off/);
    expect(hostAccessRefusal({ ...facts, host: false }, vol, undefined)).toMatch(/TCP engine/);
    expect(hostAccessRefusal({ ...facts, ...quirksFor({ podman: true }) }, vol, undefined)).toMatch(/Podman/);
    expect(hostAccessRefusal({ ...facts, remapped: true }, vol, undefined)).toMatch(/remaps/);
    expect(hostAccessRefusal(facts, undefined, undefined)).toMatch(/no such volume/);
    expect(hostAccessRefusal(facts, { ...vol, Driver: 'rexray' }, undefined)).toMatch(/driver rexray/);
    // an NFS or bind mount of the local driver: the directory is empty while no container runs
    expect(
      hostAccessRefusal(facts, { ...vol, Options: { type: 'nfs', o: 'addr=10.0.0.1', device: ':/export' } }, undefined),
    ).toMatch(/driver options/);
    expect(hostAccessRefusal(facts, { ...vol, Mountpoint: '' }, undefined)).toMatch(/mount point/);
    expect(hostAccessRefusal(facts, { ...vol, Mountpoint: 'relative/_data' }, undefined)).toMatch(/mount point/);
  });
});

describe('sameDirectory: the directory here is the one the engine mounts', () => {
  const local = { mode: 0o40750, mtimeNs: 1796276885779145866n, isDirectory: true };
  const seen = { mode: 2 ** 31 + 0o750, mtime: '2026-12-03T05:48:05.779145866Z' };
  it('same mode and mtime to the nanosecond', () => {
    expect(sameDirectory(seen, local)).toBe(true);
  });
  it('a nanosecond off, another mode, not a directory on either side: no', () => {
    expect(sameDirectory({ ...seen, mtime: '2026-12-03T05:48:05.779145867Z' }, local)).toBe(false);
    expect(sameDirectory({ ...seen, mode: 2 ** 31 + 0o755 }, local)).toBe(false);
    expect(sameDirectory({ ...seen, mode: 0o750 }, local)).toBe(false);
    expect(sameDirectory(seen, { ...local, isDirectory: false })).toBe(false);
    expect(sameDirectory({ ...seen, mtime: 'yesterday' }, local)).toBe(false);
  });
  it('reads RFC 3339 times as Go writes them (fraction trimmed of trailing zeros, offsets)', () => {
    expect(rfc3339Nanos('2026-12-03T05:48:05Z')).toBe(1796276885000000000n);
    expect(rfc3339Nanos('2026-12-03T05:48:05.5Z')).toBe(1796276885500000000n);
    expect(rfc3339Nanos('2026-12-03T06:48:05.000000001+01:00')).toBe(1796276885000000001n);
    expect(rfc3339Nanos('2026-12-03 05:48:05Z')).toBeUndefined();
  });
});

describe('hostTarArgs', () => {
  it('the archive the engine would give: sorted, numeric owners, no sub-second or access times, capability, user and trusted xattrs, holes', () => {
    const a = hostTarArgs('/var/lib/docker/volumes/v/_data');
    expect(a).toContain('--directory=/var/lib/docker/volumes/v/_data');
    expect(a).toEqual(
      expect.arrayContaining([
        '--create',
        '--file=-',
        '--format=posix',
        '--numeric-owner',
        '--sort=name',
        '--xattrs',
        '--xattrs-include=security.capability',
        '--xattrs-include=user.*',
        '--xattrs-include=trusted.*',
        '--sparse',
        '--pax-option=delete=atime,delete=ctime,delete=mtime',
      ]),
    );
    expect(a.at(-1)).toBe('.');
    expect(a).not.toContain('--one-file-system'); // the container sees what is mounted inside (rbind)
    expect(a).toContain('--blocking-factor=128'); // 64 KiB records, not 10 KiB: see TAR_RECORD_BLOCKS
  });
});

describe('parseStat', () => {
  it('reads `stat --format=%f:%.9Y`', () => {
    expect(parseStat('41e8:1796276885.779145866\n')).toEqual({
      mode: 0o40750,
      mtimeNs: 1796276885779145866n,
      isDirectory: true,
    });
    expect(parseStat('81a4:1796276885.000000000')).toMatchObject({ isDirectory: false });
    expect(parseStat('41e8:1796276885')).toBeUndefined(); // a stat without nanoseconds: not trusted
    expect(parseStat('stat: cannot stat')).toBeUndefined();
  });
});

describe('hostUntarArgs', () => {
  it('extracts as the engine does: numeric owners, permissions, xattrs, into the directory', () => {
    const a = hostUntarArgs('/var/lib/docker/volumes/v/_data');
    expect(a).toEqual(
      expect.arrayContaining([
        '--extract',
        '--file=-',
        '--directory=/var/lib/docker/volumes/v/_data',
        '--numeric-owner',
        '--same-owner',
        '--preserve-permissions',
        '--xattrs',
        '--xattrs-include=*',
      ]),
    );
    expect(a).toContain('--blocking-factor=128');
  });
});

describe('shellQuote', () => {
  it('leaves plain words alone and quotes the rest for a POSIX shell', () => {
    expect(shellQuote('--directory=/var/lib/docker/volumes/v/_data')).toBe(
      '--directory=/var/lib/docker/volumes/v/_data',
    );
    expect(shellQuote('--xattrs-include=user.*')).toBe(`'--xattrs-include=user.*'`);
    expect(shellQuote("it's $HOME")).toBe(`'it'\\''s $HOME'`);
    expect(shellQuote('')).toBe(`''`);
  });
});

describe('hostTarSizeArgs: the size of the archive, for the progress total', () => {
  it('the same tar, into /dev/null in 512-byte records, with --totals', () => {
    const dir = '/var/lib/docker/volumes/v/_data';
    const a = hostTarSizeArgs(dir);
    const same = hostTarArgs(dir).filter((x) => x !== '--file=-' && !x.startsWith('--blocking-factor='));
    expect(a.filter((x) => !['--file=/dev/null', '--blocking-factor=1', '--totals'].includes(x))).toEqual(same);
    expect(a).toEqual(expect.arrayContaining(['--file=/dev/null', '--blocking-factor=1', '--totals']));
    expect(a.at(-1)).toBe('.');
    expect(parseTarTotals('Total bytes written: 3005440 (2.9MiB, 16GiB/s)\n')).toBe(3005440);
    expect(parseTarTotals('tar: something\nTotal bytes written: 10240 (10KiB, 1MiB/s)')).toBe(10240);
    expect(parseTarTotals('tar: error')).toBeUndefined();
  });

  it("with this machine's GNU tar: exactly the bytes of the archive the reader gives", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-tarsize-'));
    try {
      writeFileSync(path.join(dir, 'a'), Buffer.alloc(300_001, 7));
      mkdirSync(path.join(dir, 'sub'));
      writeFileSync(path.join(dir, 'sub', 'b'), 'b');
      const sizeRun = execFileSync('sh', ['-c', 'tar "$@" 2>&1 >/dev/null', 'sh', ...hostTarSizeArgs(dir)], {
        encoding: 'utf8',
      });
      const archive = execFileSync('tar', hostTarArgs(dir), { maxBuffer: 1 << 24 });
      const trimmed = await collect(Readable.from([archive]).pipe(new TarEndTrim()));
      expect(parseTarTotals(sizeRun)).toBe(trimmed.length);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('hostDeltaTarArgs: the tar of a pre-copy pass', () => {
  it('reads NUL-separated names from stdin, literally, without recursion, as the whole archive would hold them', () => {
    const a = hostDeltaTarArgs('/v', false);
    expect(a).not.toContain('.');
    expect(a).not.toContain('--sort=name'); // the list comes sorted
    expect(a.slice(-4)).toEqual(['--no-recursion', '--null', '--no-unquote', '--files-from=-']);
    // the same archive format as a whole volume's
    for (const x of hostTarArgs('/v').filter((x) => x !== '.' && x !== '--sort=name')) expect(a).toContain(x);
    // positional: the directory comes before the names
    expect(a.indexOf('--directory=/v')).toBeLessThan(a.indexOf('--files-from=-'));
    expect(a).not.toContain('--ignore-failed-read');
  });
  it('while the container runs, an entry gone before tar reaches it is skipped (the next listing sees it)', () => {
    const a = hostDeltaTarArgs('/v', true);
    expect(a).toContain('--ignore-failed-read');
    expect(a[a.length - 1]).toBe('--files-from=-');
  });
});
