import { describe, expect, it } from 'vitest';
import { holderCreateBody, namedVolumes, tarHelperCreateBody } from '../../src/pipeline/volumes.js';

describe('holderCreateBody', () => {
  const reader = holderCreateBody('sha256:abc', { Type: 'volume', Source: 'data', Target: '/.ferry-data', ReadOnly: true, VolumeOptions: { NoCopy: true } });
  const writer = holderCreateBody('ferry-holder:empty', { Type: 'volume', Source: 'data', Target: '/.ferry-data/v', VolumeOptions: { NoCopy: true } });
  const hc = (b: Record<string, unknown>) => b.HostConfig as Record<string, unknown>;

  it('has no network, no capabilities, no privilege gain, and never restarts', () => {
    for (const b of [reader, writer]) {
      expect(b.NetworkDisabled).toBe(true);
      expect(hc(b).NetworkMode).toBe('none');
      expect(hc(b).CapDrop).toEqual(['ALL']);
      expect(hc(b).SecurityOpt).toEqual(['no-new-privileges']);
      expect(hc(b).RestartPolicy).toEqual({ Name: 'no' });
      expect(b.Entrypoint).toEqual(['/nonexistent-ferry-holder']);
      expect((b.Labels as Record<string, string>)['io.ferry.role']).toBe('holder');
      expect((b.Labels as Record<string, string>)['io.ferry.run']).toMatch(/^\d+-/);
    }
  });

  it('mounts the volume without copy-up, read-only with a read-only root when it only reads', () => {
    expect(hc(reader).ReadonlyRootfs).toBe(true);
    expect(hc(reader).Mounts).toEqual([{ Type: 'volume', Source: 'data', Target: '/.ferry-data', ReadOnly: true, VolumeOptions: { NoCopy: true } }]);
    expect(hc(writer).ReadonlyRootfs).toBe(false);
  });

  it('uses a Binds entry for host paths so a missing path is created', () => {
    const b = holderCreateBody('img', { bind: '/srv/conf:/.ferry-data' });
    expect(hc(b).Binds).toEqual(['/srv/conf:/.ferry-data']);
    expect(hc(b).Mounts).toBeUndefined();
  });
});

describe('tarHelperCreateBody (reading volumes on Podman)', () => {
  const b = tarHelperCreateBody('sha256:abc', { Type: 'volume', Source: 'data', Target: '/.ferry-data', ReadOnly: true, VolumeOptions: { NoCopy: true } });
  const h = b.HostConfig as Record<string, unknown>;
  it('runs the image\'s tar on the mount to stdout, as root, able only to read past permissions', () => {
    expect(b.Entrypoint).toEqual(['tar', '-c', '-f', '-', '-C', '/.ferry-data', '.']);
    expect(b.User).toBe('0:0');
    expect(b.Tty).toBe(false);
    expect(h.CapDrop).toEqual(['ALL']);
    expect(h.CapAdd).toEqual(['DAC_READ_SEARCH']);
    expect(h.ReadonlyRootfs).toBe(true);
    expect(h.NetworkMode).toBe('none');
    expect(h.SecurityOpt).toEqual(['no-new-privileges']);
    expect((b.Labels as Record<string, string>)['io.ferry.role']).toBe('holder');
  });
});

describe('namedVolumes (the volumes a removed helper or restored container never takes with it)', () => {
  it('lists volumes mounted by name through Mounts and Binds, not host paths or other mount types', () => {
    const body = {
      HostConfig: {
        Mounts: [
          { Type: 'volume', Source: 'data', Target: '/data' },
          { Type: 'bind', Source: '/etc/app', Target: '/etc/app' },
          { Type: 'tmpfs', Target: '/run' },
          { Type: 'volume', Target: '/anon' },
        ],
        Binds: ['cache:/cache:ro', '/srv/www:/www'],
      },
    };
    expect([...namedVolumes(body)].sort()).toEqual(['cache', 'data']);
    expect(namedVolumes({}).size).toBe(0);
  });
});
