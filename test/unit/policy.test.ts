import { describe, expect, it } from 'vitest';
import {
  allowFor,
  hostAccess,
  isSensitivePath,
  normalPath,
  parseAllow,
  refusedAccess,
  HOST_ACCESS_KINDS,
} from '../../src/plan/policy.js';
import type { ContainerSpec } from '../../src/model/spec.js';
import { UsageError } from '../../src/errors.js';

const spec = (hostConfig: Record<string, unknown>, name = 'app'): ContainerSpec =>
  ({
    name,
    config: {},
    hostConfig,
    endpoints: [],
    state: { running: true, paused: false },
  }) as unknown as ContainerSpec;

describe('restore policy', () => {
  it('finds nothing in an ordinary container', () => {
    expect(
      hostAccess(
        spec({
          Binds: ['/srv/app:/data', 'named:/v', '/tmp/x:/x:ro'],
          NetworkMode: 'bridge',
          CapAdd: ['NET_ADMIN', 'CHOWN'],
          SecurityOpt: ['no-new-privileges'],
          Devices: [],
          Privileged: false,
        }),
      ),
    ).toEqual([]);
  });

  it('lists every kind of host access, with what it is', () => {
    const found = hostAccess(
      spec({
        Privileged: true,
        Binds: ['/:/host', '/var/run/docker.sock:/var/run/docker.sock', '/srv/ok:/ok'],
        Mounts: [
          { Type: 'bind', Source: '/etc/', Target: '/host-etc' },
          { Type: 'volume', Source: 'v', Target: '/v' },
        ],
        NetworkMode: 'host',
        PidMode: 'host',
        IpcMode: 'host',
        Devices: [{ PathOnHost: '/dev/sda', PathInContainer: '/dev/sda', CgroupPermissions: 'rwm' }],
        DeviceCgroupRules: ['b 8:* rmw'],
        CapAdd: ['cap_sys_admin', 'SYS_PTRACE', 'NET_ADMIN'],
        SecurityOpt: ['seccomp=unconfined', 'apparmor:unconfined', 'label=disable'],
      }),
    );
    expect(found.map((f) => f.kind)).toEqual([
      'privileged',
      'host-binds',
      'host-binds',
      'host-binds',
      'host-network',
      'host-pid',
      'host-ipc',
      'devices',
      'devices',
      'capabilities',
      'capabilities',
      'unconfined',
      'unconfined',
      'unconfined',
    ]);
    expect(found.map((f) => f.detail)).toContain('bind of host /var/run/docker.sock -> /var/run/docker.sock');
    expect(found.map((f) => f.detail)).toContain('bind of host /etc/ -> /host-etc');
    expect(found.map((f) => f.detail)).toContain('--cap-add SYS_ADMIN');
    expect(new Set(found.map((f) => f.kind))).toEqual(new Set(HOST_ACCESS_KINDS));
  });

  it('takes a bind of a sensitive path, anything under it or above it, however it is spelled', () => {
    for (const p of [
      '/',
      '//',
      '/etc',
      '/etc/ssh',
      '/var',
      '/var/run/docker.sock',
      '/run/containerd',
      '/home/u/.ssh',
      '/srv/../etc',
      '/usr/',
    ])
      expect(isSensitivePath(p), p).toBe(true);
    for (const p of ['/srv/app', '/tmp', '/opt/data', '/var/lib/app', '/mnt/disk', '/etcetera', '/data/etc'])
      expect(isSensitivePath(p), p).toBe(false);
    expect(normalPath('/var/./run/../lib//docker/')).toBe('/var/lib/docker');
  });

  it('refuses what --allow does not allow, nothing when the signer is trusted', () => {
    const found = hostAccess(spec({ Privileged: true, Binds: ['/:/host'], NetworkMode: 'host' }));
    expect(refusedAccess(found, new Set(), false).map((f) => f.kind)).toEqual([
      'privileged',
      'host-binds',
      'host-network',
    ]);
    expect(refusedAccess(found, parseAllow(['privileged,host-binds']), false).map((f) => f.kind)).toEqual([
      'host-network',
    ]);
    expect(refusedAccess(found, parseAllow(['privileged', 'host-binds', 'host-network']), false)).toEqual([]);
    expect(refusedAccess(found, parseAllow(['all']), false)).toEqual([]);
    expect(refusedAccess(found, new Set(), true)).toEqual([]);
    expect(allowFor(found)).toBe('privileged,host-binds,host-network');
  });

  it('refuses an unknown kind in --allow', () => {
    expect(() => parseAllow(['privileged,root'])).toThrow(UsageError);
    expect(() => parseAllow(['root'])).toThrow(/--allow root: not a kind of host access/);
  });
});
