/**
 * Volume data that the engine's archive endpoints handle badly (issue 22): symlinks that point
 * above the volume's root, restored through the engine (FERRY_HOST_VOLUMES=0), as on an engine
 * ferry cannot reach the host of. Runs on engine A and, in the containerd run, on engine C.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  ferry,
  inspect,
  removeSnapshots,
  uid,
  volumeListing,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-e2e-volfid-'));
const made: { containers: string[]; volumes: string[] } = { containers: [], volumes: [] };

afterAll(() => {
  cleanup(ENGINE_A, made);
  removeSnapshots(made.containers, [ENGINE_A]);
  rmSync(dir, { recursive: true, force: true });
});

/** A container `name` with volume `<name>-v` at /data, filled by `script` (run in /data). */
function service(name: string, script: string): string {
  const vol = `${name}-v`;
  made.containers.push(name);
  made.volumes.push(vol);
  docker(['run', '-d', '--name', name, '-v', `${vol}:/data`, BUSYBOX, 'sleep', '100000']);
  docker(['exec', name, 'sh', '-c', `cd /data && ${script}`]);
  return vol;
}

describe('symlinks that point above the volume root', () => {
  const env = { FERRY_HOST_VOLUMES: '0' };

  it('back up, restore through the engine as they were, and the service runs', async () => {
    const name = uid('symup');
    const vol = service(
      name,
      [
        'mkdir -p d/e',
        'ln -s ../../../etc/passwd d/up',
        'ln -s ../../../../../../../../../../x d/e/far',
        'ln -s ../outside top',
        'ln -s ../f d/inside',
        'ln -s /abs/path abs',
        'echo hi > f',
        'touch -d "2001-02-03 04:05:06" d d/e .',
      ].join(' && '),
    );
    const before = volumeListing(vol);
    const bundle = path.join(dir, `${name}.tar`);
    const b = await ferry(['backup', name, '-o', bundle], { env });
    expect(b.code, b.stderr).toBe(0);
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bundle], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(volumeListing(vol)).toBe(before);
    expect(docker(['exec', name, 'readlink', '/data/d/up'])).toBe('../../../etc/passwd');
    const v = await ferry(['verify', bundle]);
    expect(v.code, v.stderr).toBe(0);
  });
});

describe('sparse files', () => {
  const GiB2 = 2 * 1024 * 1024 * 1024;
  /** Allocated KiB of a file in a volume (du), on `host`. */
  const allocated = (vol: string, file: string, host = ENGINE_A) =>
    Number(
      docker(['run', '--rm', '--network', 'none', '-v', `${vol}:/v:ro`, BUSYBOX, 'du', '-k', `/v/${file}`], {
        host,
      }).split(/\s/)[0],
    );

  it('keep their holes in the bundle, on restore and in a migration (host tar on both sides)', async () => {
    const name = uid('sparse');
    // a 2 GiB disk image with 1 MiB of data at 1 GiB and one byte at its end
    const vol = service(
      name,
      'dd if=/dev/urandom of=disk.img bs=1048576 count=1 seek=1024 2>/dev/null && dd if=/dev/zero of=disk.img bs=1 count=1 seek=2147483647 conv=notrunc 2>/dev/null && echo small > small.txt',
    );
    expect(allocated(vol, 'disk.img')).toBeLessThan(2048);
    const before = volumeListing(vol);
    expect(before).toContain(`./disk.img 0:0 644 1`);
    expect(before).toContain(` ${GiB2} `);

    const bundle = path.join(dir, `${name}.tar`);
    const b = await ferry(['backup', name, '-o', bundle, '--compress', 'none']);
    expect(b.code, b.stderr).toBe(0);
    expect(statSync(bundle).size).toBeLessThan(16 << 20); // the holes are not in the archive
    const v = await ferry(['verify', bundle]);
    expect(v.code, v.stderr).toBe(0);

    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(volumeListing(vol)).toBe(before);
    expect(allocated(vol, 'disk.img')).toBeLessThan(2048); // written with its holes

    // to engine B (both sides on this host, as root): the holes are not shipped
    made.containers.push(name);
    const m = await ferry(['migrate', name, '--to', ENGINE_B, '--json']);
    expect(m.code, m.stderr).toBe(0);
    const res = JSON.parse(m.stdout);
    expect(res.volumeBytes).toBeLessThan(16 << 20);
    try {
      expect(volumeListing(vol, ENGINE_B)).toBe(before);
      expect(allocated(vol, 'disk.img', ENGINE_B)).toBeLessThan(2048);
    } finally {
      cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
      removeSnapshots([name], [ENGINE_B]);
    }
  });
});

describe('extended attributes', () => {
  const getx = (file: string, key: string) =>
    execFileSync('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], sys.argv[2]).hex())', file, key], {
      encoding: 'utf8',
    }).trim();

  it('user.* and trusted.* xattrs survive a backup and restore by host tar', async () => {
    const name = uid('xattr');
    const vol = service(name, 'echo x > f && mkdir d');
    const mp = () => inspect('volume', vol).Mountpoint as string;
    execFileSync('python3', [
      '-c',
      "import os,sys; os.setxattr(sys.argv[1] + '/f', 'user.origin', b'ferry'); os.setxattr(sys.argv[1] + '/f', 'trusted.overlay.x', b'y'); os.setxattr(sys.argv[1] + '/d', 'trusted.md5', b'abc')",
      mp(),
    ]);
    const bundle = path.join(dir, `${name}.tar`);
    const b = await ferry(['backup', name, '-o', bundle]);
    expect(b.code, b.stderr).toBe(0);
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(getx(`${mp()}/f`, 'user.origin')).toBe(Buffer.from('ferry').toString('hex'));
    expect(getx(`${mp()}/f`, 'trusted.overlay.x')).toBe(Buffer.from('y').toString('hex'));
    expect(getx(`${mp()}/d`, 'trusted.md5')).toBe(Buffer.from('abc').toString('hex'));
  });
});
