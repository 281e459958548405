import { describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import type { ContainerSpec } from '../../src/model/spec.js';
import { UsageError } from '../../src/errors.js';
import { selectContainers } from '../../src/ops/restore.js';

const spec = (name: string, hostConfig: Record<string, unknown>, networks: string[]): ContainerSpec => ({
  name,
  sourceId: name,
  state: { running: true, paused: false },
  baseImage: { ref: 'x', id: 'x' },
  config: {},
  hostConfig,
  endpoints: networks.map((network) => ({ network })),
  mounts: [],
});
const net = (name: string) => ({ name, driver: 'bridge', internal: false, attachable: false, enableIPv6: false });
const vol = (name: string) => ({ name, anonymous: false, driver: 'local', member: `volumes/${name}.tar` });

function stack(): Manifest {
  return {
    containers: [
      {
        spec: spec('web', { NetworkMode: 'front', VolumesFrom: ['db'] }, ['front', 'back']),
        image: { ref: 'ferry/web:1', member: 'images/web.tar' },
        volumes: ['static', 'shared'],
        binds: [],
        consistency: 'pause',
      },
      {
        spec: spec('db', { NetworkMode: 'back' }, ['back']),
        image: { ref: 'ferry/db:1', member: 'images/db.tar' },
        volumes: ['pgdata', 'shared'],
        binds: [{ container: 'db', hostPath: '/srv/db', destination: '/conf', member: 'binds/db.tar' }],
        consistency: 'pause',
      },
      {
        spec: spec('vpn', { NetworkMode: 'container:web' }, []),
        image: { ref: 'ferry/vpn:1', member: 'images/vpn.tar' },
        volumes: [],
        binds: [],
        consistency: 'pause',
      },
    ],
    volumes: [vol('static'), vol('shared'), vol('pgdata')],
    networks: [net('front'), net('back')],
  } as unknown as Manifest;
}

describe('selectContainers (--only)', () => {
  it('keeps the chosen containers with the volumes they mount and the networks they join', () => {
    const { manifest, notes } = selectContainers(stack(), ['db']);
    expect(manifest.containers.map((c) => c.spec.name)).toEqual(['db']);
    expect(manifest.volumes.map((v) => v.name)).toEqual(['shared', 'pgdata']);
    expect(manifest.networks.map((n) => n.name)).toEqual(['back']);
    expect(manifest.containers[0]!.binds).toHaveLength(1);
    expect(notes).toEqual([]);
  });

  it('says when a chosen container refers to one left out', () => {
    const { manifest, notes } = selectContainers(stack(), ['web', 'vpn']);
    expect(manifest.containers.map((c) => c.spec.name)).toEqual(['web', 'vpn']);
    expect(manifest.volumes.map((v) => v.name)).toEqual(['static']); // shared comes from db (--volumes-from db)
    expect(manifest.networks.map((n) => n.name)).toEqual(['front', 'back']);
    expect(notes).toEqual([
      'web refers to container db, which --only leaves out: it must exist on the target (or restore both)',
    ]);
  });

  it('restores a volume borrowed through --volumes-from with the container it comes from', () => {
    expect(selectContainers(stack(), ['web', 'db']).manifest.volumes.map((v) => v.name)).toEqual([
      'static',
      'shared',
      'pgdata',
    ]);
  });

  it('refuses a name the bundle does not have, listing what it has', () => {
    try {
      selectContainers(stack(), ['db', 'cache']);
      throw new Error('expected a UsageError');
    } catch (err) {
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toBe('--only: the bundle has no container cache');
      expect((err as UsageError).hint).toMatch(/it holds: web, db, vpn/);
    }
  });

  it('leaves the manifest it was given alone', () => {
    const m = stack();
    selectContainers(m, ['vpn']);
    expect(m).toEqual(stack());
  });
});
