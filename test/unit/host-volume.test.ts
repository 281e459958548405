import { describe, expect, it } from 'vitest';
import { hostReadRefusal, hostTarArgs, rfc3339Nanos, sameDirectory } from '../../src/pipeline/host-volume.js';

const facts = { local: true, podman: false, remapped: false };
const vol = { Driver: 'local', Options: null, Mountpoint: '/var/lib/docker/volumes/data/_data' };
const root = { uid: 0, setting: undefined };

describe('hostReadRefusal: when a volume is read from the host disk', () => {
  it('a plain local volume of a local engine, ferry as root: yes', () => {
    expect(hostReadRefusal(facts, vol, root)).toBeUndefined();
    expect(hostReadRefusal(facts, { ...vol, Options: {} }, root)).toBeUndefined();
    expect(hostReadRefusal(facts, vol, { uid: 0, setting: '1' })).toBeUndefined();
  });
  it('anything else goes through the engine, with the reason', () => {
    expect(hostReadRefusal(facts, vol, { uid: 0, setting: '0' })).toMatch(/FERRY_HOST_VOLUMES=0/);
    expect(hostReadRefusal(facts, vol, { uid: 0, setting: 'off' })).toMatch(/FERRY_HOST_VOLUMES=off/);
    expect(hostReadRefusal(facts, vol, { uid: 1000, setting: undefined })).toMatch(/not root/);
    expect(hostReadRefusal(facts, vol, { uid: undefined, setting: undefined })).toMatch(/not root/);
    expect(hostReadRefusal({ ...facts, local: false }, vol, root)).toMatch(/not on this host/);
    expect(hostReadRefusal({ ...facts, podman: true }, vol, root)).toMatch(/Podman/);
    expect(hostReadRefusal({ ...facts, remapped: true }, vol, root)).toMatch(/remaps/);
    expect(hostReadRefusal(facts, undefined, root)).toMatch(/no such volume/);
    expect(hostReadRefusal(facts, { ...vol, Driver: 'rexray' }, root)).toMatch(/driver rexray/);
    // an NFS or bind mount of the local driver: the directory is empty while no container runs
    expect(hostReadRefusal(facts, { ...vol, Options: { type: 'nfs', o: 'addr=10.0.0.1', device: ':/export' } }, root)).toMatch(/driver options/);
    expect(hostReadRefusal(facts, { ...vol, Mountpoint: '' }, root)).toMatch(/mount point/);
    expect(hostReadRefusal(facts, { ...vol, Mountpoint: 'relative/_data' }, root)).toMatch(/mount point/);
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
  it('the archive the engine would give: sorted, numeric owners, no sub-second or access times, capability and user xattrs', () => {
    const a = hostTarArgs('/var/lib/docker/volumes/v/_data');
    expect(a).toContain('--directory=/var/lib/docker/volumes/v/_data');
    expect(a).toEqual(expect.arrayContaining(['--create', '--file=-', '--format=posix', '--numeric-owner', '--sort=name', '--xattrs', '--xattrs-include=security.capability', '--xattrs-include=user.*', '--pax-option=delete=atime,delete=ctime,delete=mtime']));
    expect(a.at(-1)).toBe('.');
    expect(a).not.toContain('--one-file-system'); // the container sees what is mounted inside (rbind)
  });
});
