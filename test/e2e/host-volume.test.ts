/**
 * Volumes read from the engine host's disk (ferry as root beside a local engine): GNU tar on the
 * volume's directory instead of the engine's archive endpoint. The archive must be the engine's
 * own, entry for entry, and restore the same data; anything the disk would get wrong goes through
 * the engine; a tar that fails half-way fails the backup and leaves no bundle.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tarStream from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { hostUntarArgs } from '../../src/data/host-volume.js';
import {
  AWKWARD_DATA,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  ferry,
  inspect,
  sh,
  sshHome,
  uid,
  volumeListing,
} from '../helpers/lab.js';

/** Which data path carried each volume, as a --json result says it (src/data/paths.ts). */
function volumePaths(stdout: string): Record<string, unknown>[] {
  return JSON.parse(stdout).dataPaths.volumes;
}
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostvol-'));
const name = uid('hv');
const all = ['', '-r', '-r0', '-opt', '-fail', '-wfail', '-m', '-s', '-b', '-b-r', '-b-r0'].map((x) => `${name}${x}`);
const made = { containers: all, volumes: all };

afterAll(() => {
  cleanup(ENGINE_A, made);
  cleanup(ENGINE_B, made);
  rmSync(dir, { recursive: true, force: true });
});

const mountpoint = (v: string, host = ENGINE_A) => inspect('volume', v, host).Mountpoint as string;

/** A `tar` first on PATH that is GNU tar for --version and fails (exit 2) after `afterBytes` of its work. */
function failingTar(bin: string, mode: 'create' | 'extract', afterBytes: number): string {
  mkdirSync(bin, { recursive: true });
  const body =
    mode === 'create'
      ? `/usr/bin/tar "$@" | head -c ${afterBytes}\necho "tar: ./blob: Read error at byte 0: Input/output error" >&2\nexit 2\n`
      : `case "$*" in *--extract*) head -c ${afterBytes} | /usr/bin/tar "$@"; cat > /dev/null; echo "tar: ./blob: Cannot write: No space left on device" >&2; exit 2;; esac\nexec /usr/bin/tar "$@"\n`;
  writeFileSync(
    path.join(bin, 'tar'),
    `#!/bin/sh\nif [ "$1" = --version ]; then exec /usr/bin/tar --version; fi\n${body}`,
  );
  chmodSync(path.join(bin, 'tar'), 0o755);
  return `${bin}:${process.env.PATH}`;
}

/** Every entry of the volume member of a bundle (written with --compress none): headers, xattrs and a hash of the data. */
async function volumeEntries(bundleFile: string, volume: string): Promise<Map<string, Record<string, unknown>>> {
  const c = spawn('tar', ['-xOf', bundleFile, `volumes/${volume}.tar`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ex = tarStream.extract();
  c.stdout.pipe(ex);
  const out = new Map<string, Record<string, unknown>>();
  for await (const e of ex) {
    const h = e.header;
    const hash = createHash('sha256');
    for await (const b of e) hash.update(b as Buffer);
    const pax = (h.pax ?? {}) as Record<string, string>;
    // A sparse file read by GNU tar (PAX sparse 1.0): its real name and size are in the PAX records.
    const sparse = pax['GNU.sparse.name'] !== undefined;
    out.set((pax['GNU.sparse.name'] ?? h.name).replace(/^\.\//, '').replace(/\/$/, ''), {
      type: h.type,
      mode: (h.mode ?? 0) & 0o7777,
      uid: pax.uid ?? h.uid,
      gid: pax.gid ?? h.gid,
      size: sparse ? Number(pax['GNU.sparse.realsize']) : h.size,
      ...(sparse ? { stored: h.size } : {}),
      mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000),
      linkname: h.linkname ?? null,
      dev: `${h.devmajor ?? 0}:${h.devminor ?? 0}`,
      xattrs: Object.fromEntries(Object.entries(pax).filter(([k]) => k.startsWith('SCHILY.xattr.'))),
      sha: hash.digest('hex').slice(0, 16),
    });
  }
  return out;
}

function onlyBundle(d: string): string {
  const tars = readdirSync(d).filter((f) => f.endsWith('.tar'));
  expect(tars).toHaveLength(1);
  return path.join(d, tars[0]!);
}

/** lab's sh, failing the test on a non-zero exit; its trimmed stdout. */
function run(cmd: string): string {
  const r = sh(cmd);
  expect(r.code, `${cmd}: ${r.stderr}`).toBe(0);
  return r.stdout.trim();
}

/** An xattr of a file on this host, in hex (Python's os.getxattr: no attr tools on the lab host). */
function xattr(file: string, key: string): string {
  return run(`python3 -c "import os,sys; print(os.getxattr(sys.argv[1], sys.argv[2]).hex())" '${file}' '${key}'`);
}

describe('volumes read from the host disk', () => {
  it('backup reads a local volume with tar on the host; the archive is the engine`s own, entry for entry, and restores the same data', async () => {
    docker(['run', '-d', '--name', name, '-v', `${name}:/data`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', name, 'sh', '-c', AWKWARD_DATA]);
    // What AWKWARD_DATA lacks: a fifo, a setuid file with two names, a device node, a 120-byte name, a path past 155 bytes, a
    // symlink target past 100 bytes, a sparse file, a user xattr and a file capability.
    const mp = mountpoint(name);
    run(
      [
        `cd '${mp}'`,
        'mkfifo fifo',
        'echo s > suid-linked && chmod 4755 suid-linked && ln suid-linked suid-linked-2',
        'mknod null-dev c 1 3',
        `echo long > ${'n'.repeat(120)}`,
        `mkdir -p ${'p'.repeat(90)}/${'q'.repeat(90)} && echo deep > ${'p'.repeat(90)}/${'q'.repeat(90)}/f`,
        `ln -s /nonexistent/${'x'.repeat(150)} longsym`,
        'truncate -s 64M sparse && printf x | dd of=sparse bs=1 seek=30000000 conv=notrunc status=none',
        `python3 -c "import os; os.setxattr('www/index.html', 'user.origin', b'ferry'); os.setxattr('owned', 'security.capability', bytes.fromhex('0100000200040000000000000000000000000000'))"`,
      ].join(' && '),
    );
    const before = volumeListing(name);

    const host = path.join(dir, 'host');
    const r = await ferry(['backup', name, '-o', host, '--mkdir', '--compress', 'none', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`volume ${name}: read from ${mp} on this host`);
    expect(volumePaths(r.stdout)).toEqual([{ name, path: 'host-tar' }]);
    const eng = path.join(dir, 'engine');
    const e = await ferry(['backup', name, '-o', eng, '--mkdir', '--compress', 'none', '--json'], {
      env: { FERRY_HOST_VOLUMES: '0' },
    });
    expect(e.code, e.stderr).toBe(0);
    expect(volumePaths(e.stdout)).toEqual([
      {
        name,
        path: 'engine-archive',
        fallback: { from: 'host-tar', reason: 'FERRY_HOST_VOLUMES=0' },
        xattrsUnread: ['user.*', 'trusted.*'],
      },
    ]);

    const a = await volumeEntries(onlyBundle(host), name);
    const b = await volumeEntries(onlyBundle(eng), name);
    expect([...a.keys()]).toEqual([...b.keys()]); // the same entries, in the same order
    expect(a.size).toBeGreaterThan(20);
    for (const [k, want] of b) {
      const got = a.get(k)!;
      // The engine keeps only the capability; the host's tar keeps user xattrs too.
      const { xattrs: gx, ...g } = got as { xattrs: Record<string, string> };
      const { xattrs: wx, ...w } = want as { xattrs: Record<string, string> };
      if (k === 'sparse') {
        // The host's tar keeps the holes: the map and the data blocks, not 64 MiB of zeros.
        const { sha: _s, stored, ...rest } = g as Record<string, unknown>;
        const { sha: _w, ...restW } = w as Record<string, unknown>;
        expect(rest, k).toEqual(restW);
        expect(stored as number).toBeLessThan(64 * 1024);
        continue;
      }
      expect(g, k).toEqual(w);
      expect(gx, k).toEqual({ ...wx, ...(k === 'www/index.html' ? { 'SCHILY.xattr.user.origin': 'ferry' } : {}) });
    }
    expect(a.get('owned')!.xattrs).toHaveProperty(['SCHILY.xattr.security.capability']);
    expect(a.get('sparse')!.size).toBe(64 << 20);

    // restored under another name: the same listing, xattrs and all
    const rr = await ferry([
      'restore',
      onlyBundle(host),
      '--name',
      `${name}-r`,
      '--map-volume',
      `${name}=${name}-r`,
      '--json',
    ]);
    expect(rr.code, rr.stderr).toBe(0);
    expect(rr.stderr).toContain(`volume ${name}-r: written into ${mountpoint(`${name}-r`)} on this host`);
    expect(volumePaths(rr.stdout)).toEqual([{ name: `${name}-r`, path: 'host-tar' }]);
    expect(volumeListing(`${name}-r`)).toBe(before);
    const rmp = mountpoint(`${name}-r`);
    expect(xattr(path.join(rmp, 'www/index.html'), 'user.origin')).toBe(Buffer.from('ferry').toString('hex'));
    expect(xattr(path.join(rmp, 'owned'), 'security.capability')).toBe('0100000200040000000000000000000000000000');
    expect(inspect('container', `${name}-r`).State.Running).toBe(true);
    expect(inspect('container', name).State.Running).toBe(true); // and the source runs on

    // the engine's bundle, restored through the engine, gives the same listing ...
    const r0 = await ferry(
      ['restore', onlyBundle(eng), '--name', `${name}-r0`, '--map-volume', `${name}=${name}-r0`, '--json'],
      { env: { FERRY_HOST_VOLUMES: '0' } },
    );
    expect(r0.code, r0.stderr).toBe(0);
    expect(volumePaths(r0.stdout)).toEqual([
      { name: `${name}-r0`, path: 'engine-archive', fallback: { from: 'host-tar', reason: 'FERRY_HOST_VOLUMES=0' } },
    ]);
    // ... but for the setuid bit of a file with two names: Docker 20.10's archive PUT chowns the
    // second name after the first got its mode (which clears the bit) and does not chmod it again.
    const drop = (l: string) =>
      l
        .split('\n')
        .filter((x) => !/^\.\/suid-linked/.test(x))
        .join('\n');
    expect(drop(volumeListing(`${name}-r0`))).toBe(drop(before));
    expect(before).toMatch(/^\.\/suid-linked \S+ 4755 2 /m);
    expect(volumeListing(`${name}-r`)).toMatch(/^\.\/suid-linked \S+ 4755 2 /m); // on the host's disk it is kept
  });

  it('a volume with driver options (its directory is a mount made only while in use) goes through the engine', async () => {
    const src = path.join(dir, 'bind-src');
    mkdirSync(src);
    writeFileSync(path.join(src, 'payload'), 'behind a bind of the local driver\n');
    const v = `${name}-opt`;
    docker([
      'volume',
      'create',
      '--driver',
      'local',
      '--opt',
      'type=none',
      '--opt',
      'o=bind',
      '--opt',
      `device=${src}`,
      v,
    ]);
    docker(['create', '--name', v, '-v', `${v}:/data`, BUSYBOX, 'sleep', '100000']); // created, never started: nothing mounted
    const out = path.join(dir, 'opt');
    const r = await ferry(['backup', v, '-o', out, '--mkdir', '--compress', 'none', '--json', '--debug']);
    expect(r.code, r.stderr).toBe(0);
    // --debug: the engine's calls, the host's offer, and the path refused for this volume, with why
    expect(r.stderr).toContain(`ferry: debug: engine ${ENGINE_A}: inspect container ${v}`);
    expect(r.stderr).toMatch(/ferry: debug: host access for \S+: volumes by host-tar yes /);
    expect(r.stderr).toContain(
      `ferry: debug: read volume ${v} on ${ENGINE_A}: not host-tar: a volume with driver options (mounted only while in use)`,
    );
    expect(volumePaths(r.stdout)).toEqual([
      {
        name: v,
        path: 'engine-archive',
        fallback: { from: 'host-tar', reason: 'a volume with driver options (mounted only while in use)' },
        xattrsUnread: ['user.*', 'trusted.*'],
      },
    ]);
    const entries = await volumeEntries(onlyBundle(out), v);
    expect(entries.get('payload')).toMatchObject({ size: 34 });
  });

  it('a tar that fails half-way fails the backup (exit 8): no bundle, and the container runs on', async () => {
    const n = `${name}-fail`;
    docker(['run', '-d', '--name', n, '-v', `${n}:/data`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', n, 'sh', '-c', 'dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null']);
    // GNU tar as far as --version goes; then a read error after 300 kB of a valid archive
    const PATH = failingTar(path.join(dir, 'fake-read'), 'create', 300_000);
    const out = path.join(dir, 'fail');
    const r = await ferry(['backup', n, '-o', out, '--mkdir', '--compress', 'none'], { env: { PATH } });
    expect(r.code, r.stderr).toBe(8);
    expect(r.stderr).toMatch(/tar could not read volume .* \(exit 2\): tar: \.\/blob: Read error/);
    expect(r.stderr).toContain('FERRY_HOST_VOLUMES=0');
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(readdirSync(out).filter((f) => !f.startsWith('.'))).toEqual([]);
    const st = inspect('container', n).State;
    expect(st.Running && !st.Paused).toBe(true);
  });

  it('a tar that fails half-way through a restore fails it (exit 8) and leaves neither the volume nor the container', async () => {
    const n = `${name}-wfail`;
    docker(['run', '-d', '--name', n, '-v', `${n}:/data`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', n, 'sh', '-c', 'dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null']);
    const out = path.join(dir, 'wfail');
    const b = await ferry(['backup', n, '-o', out, '--mkdir']);
    expect(b.code, b.stderr).toBe(0);
    const PATH = failingTar(path.join(dir, 'fake-write'), 'extract', 1_000_000);
    const r = await ferry(['restore', onlyBundle(out), '--name', `${n}-x`, '--map-volume', `${n}=${n}-x`], {
      env: { PATH },
    });
    expect(r.code, r.stderr).toBe(8);
    expect(r.stderr).toMatch(
      /tar could not write volume .*-x into .* on this host \(exit 2\):[^]*tar: \.\/blob: Cannot write: No space left on device/,
    );
    expect(r.stderr).not.toMatch(/MaxListenersExceeded|Warning:/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(docker(['volume', 'ls', '-q', '--filter', `name=${n}-x`])).toBe('');
    expect(docker(['ps', '-a', '-q', '--filter', `name=${n}-x`])).toBe('');
    expect(docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.role=holder'])).toBe('');
  });

  it('migrate reads the source volume from the host as well', async () => {
    const n = `${name}-m`;
    docker(['run', '-d', '--name', n, '-v', `${n}:/data`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', n, 'sh', '-c', AWKWARD_DATA]);
    const before = volumeListing(n);
    // In one pass once the container is frozen (the pre-copy has its own tests: precopy.test.ts).
    const r = await ferry(['migrate', n, '--to', ENGINE_B, '--json', '--no-precopy']);
    expect(r.code, r.stderr).toBe(0);
    expect(volumePaths(r.stdout)).toEqual([{ name: n, path: 'host-tar', target: { path: 'host-tar' } }]);
    expect(r.stderr).toContain(`volume ${n}: read from ${mountpoint(n)} on this host`);
    expect(r.stderr).toContain(`volume ${n}: written into ${mountpoint(n, ENGINE_B)} on this host`);
    expect(volumeListing(n, ENGINE_B)).toBe(before);
    expect(inspect('container', n, ENGINE_B).State.Running).toBe(true);
  });

  it('migrate to ssh://: the target volume is written by tar on the SSH host, over the same connection', async () => {
    const n = `${name}-s`;
    docker(['run', '-d', '--name', n, '-v', `${n}:/data`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', n, 'sh', '-c', AWKWARD_DATA]);
    const before = volumeListing(n);
    const { home } = sshHome(path.join(dir, 'ssh'));
    const r = await ferry(['migrate', n, '--to', 'ssh://newhost', '--json'], { env: { HOME: home } });
    expect(r.code, r.stderr).toBe(0);
    // The volume went by the pre-copy (docs/precopy.md), read and written by tar on both hosts,
    // while it ran and then what changed.
    expect(volumePaths(r.stdout)).toEqual([
      { name: n, path: 'host-tar', target: { path: 'host-tar' }, precopy: expect.objectContaining({ passes: 1 }) },
    ]);
    expect(volumeListing(n, ENGINE_B)).toBe(before);
    expect(inspect('container', n, ENGINE_B).State.Running).toBe(true);
  });

  it('backup from and restore onto an ssh:// engine: tar runs on the SSH host, both ways, and the data is the engine`s', async () => {
    const n = `${name}-b`;
    docker(['run', '-d', '--name', n, '-v', `${n}:/data`, BUSYBOX, 'sleep', '100000'], { host: ENGINE_B });
    docker(['exec', n, 'sh', '-c', AWKWARD_DATA], { host: ENGINE_B });
    const before = volumeListing(n, ENGINE_B);
    const { home } = sshHome(path.join(dir, 'ssh-b'));
    const env = { HOME: home };
    const out = path.join(dir, 'from-ssh');
    const b = await ferry(['-H', 'ssh://newhost', 'backup', n, '-o', out, '--mkdir'], { env });
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toContain(`volume ${n}: read from ${mountpoint(n, ENGINE_B)} on ssh://newhost`);
    const r = await ferry(
      ['-H', 'ssh://newhost', 'restore', onlyBundle(out), '--name', `${n}-r`, '--map-volume', `${n}=${n}-r`],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`volume ${n}-r: written into ${mountpoint(`${n}-r`, ENGINE_B)} on ssh://newhost`);
    expect(volumeListing(`${n}-r`, ENGINE_B)).toBe(before);
    expect(inspect('container', `${n}-r`, ENGINE_B).State.Running).toBe(true);
    // and through the engine (FERRY_HOST_VOLUMES=0) the same bundle gives the same data
    const r0 = await ferry(
      [
        '-H',
        'ssh://newhost',
        'restore',
        onlyBundle(out),
        '--name',
        `${n}-r0`,
        '--map-volume',
        `${n}=${n}-r0`,
        '--json',
      ],
      { env: { ...env, FERRY_HOST_VOLUMES: '0' } },
    );
    expect(r0.code, r0.stderr).toBe(0);
    expect(volumePaths(r0.stdout)).toEqual([
      { name: `${n}-r0`, path: 'engine-archive', fallback: { from: 'host-tar', reason: 'FERRY_HOST_VOLUMES=0' } },
    ]);
    expect(volumeListing(`${n}-r0`, ENGINE_B)).toBe(before);
  });

  it('a hostile volume archive, extracted with ferry`s tar arguments, writes nothing outside the volume directory and fails', () => {
    const root = path.join(dir, 'hostile');
    const vol = path.join(root, 'vol');
    const outside = path.join(root, 'outside');
    mkdirSync(vol, { recursive: true });
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'victim'), 'keep\n');
    const archive = path.join(root, 'evil.tar');
    run(
      `python3 - <<'EOF'\nimport tarfile, io\nt = tarfile.open('${archive}', 'w', format=tarfile.PAX_FORMAT)\n` +
        `def add(name, kind=tarfile.REGTYPE, link=''):\n  ti = tarfile.TarInfo(name); ti.type = kind; ti.linkname = link; ti.size = 1 if kind == tarfile.REGTYPE else 0\n  t.addfile(ti, io.BytesIO(b'x') if kind == tarfile.REGTYPE else None)\n` +
        `add('../outside/dotdot')\nadd('${outside}/abs')\nadd('./s', tarfile.SYMTYPE, '${outside}')\nadd('./s/through-symlink')\n` +
        `add('./h', tarfile.LNKTYPE, '../outside/victim')\nadd('./rel', tarfile.SYMTYPE, '../outside')\nadd('./rel/through-rel')\nt.close()\nEOF`,
    );
    const r = spawnSync('tar', hostUntarArgs(vol), { input: readFileSync(archive) });
    expect(r.status, String(r.stderr)).toBe(2); // a failure: the restore rolls back
    expect(readdirSync(outside)).toEqual(['victim']); // nothing written beside it
    expect(readFileSync(path.join(outside, 'victim'), 'utf8')).toBe('keep\n');
    expect(statSync(path.join(outside, 'victim')).nlink).toBe(1); // not hard-linked into the volume
  });
});
