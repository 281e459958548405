import { describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { createPlan, type ContainerSpec, type NetworkSpec } from '../../src/model/spec.js';
import { UsageError } from '../../src/errors.js';
import { bindSources } from '../../src/ops/steps/preflight.js';
import { drillSpec } from '../../src/plan/drill.js';
import {
  checkRemap,
  describeRemap,
  mapPath,
  parseRemap,
  remapRewrite,
  remapSpec,
  remapVolume,
  type Remap,
} from '../../src/plan/remap.js';

function webSpec(): ContainerSpec {
  return {
    name: 'web',
    sourceId: 'f'.repeat(64),
    state: { running: true, paused: false },
    baseImage: { ref: 'example/web:1', id: 'sha256:' + 'e'.repeat(64) },
    config: { Env: ['A=1'] },
    hostConfig: {
      NetworkMode: 'shop-net',
      PortBindings: {
        '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }],
        '443/tcp': [
          { HostIp: '', HostPort: '8443' },
          { HostIp: '::1', HostPort: '8443' },
        ],
        '9000/tcp': [{ HostIp: '', HostPort: '' }],
      },
      Binds: [
        'shop-data:/data',
        '/srv/shop/uploads:/uploads:ro',
        '/srv/shopping:/other',
        '/etc/shop.conf:/etc/shop.conf:ro,z',
      ],
      Mounts: [
        { Type: 'bind', Source: '/srv/shop/logs', Target: '/logs' },
        { Type: 'volume', Source: 'shop-cache', Target: '/cache' },
      ],
    },
    endpoints: [{ network: 'shop-net', aliases: ['www'] }, { network: 'backend' }],
    mounts: [
      { type: 'volume', source: 'shop-data', destination: '/data', readOnly: false, origin: 'binds' },
      { type: 'bind', source: '/srv/shop/uploads', destination: '/uploads', readOnly: true, origin: 'binds' },
      { type: 'bind', source: '/srv/shopping', destination: '/other', readOnly: false, origin: 'binds' },
      { type: 'bind', source: '/etc/shop.conf', destination: '/etc/shop.conf', readOnly: true, origin: 'binds' },
      { type: 'bind', source: '/srv/shop/logs', destination: '/logs', readOnly: false, origin: 'mounts' },
      { type: 'volume', source: 'shop-cache', destination: '/cache', readOnly: false, origin: 'mounts' },
    ],
  };
}

const net = (name: string): NetworkSpec => ({
  name,
  driver: 'bridge',
  internal: false,
  attachable: false,
  enableIPv6: false,
});

function manifest(): Manifest {
  return {
    containers: [
      {
        spec: webSpec(),
        image: { ref: 'ferry/web:1', member: 'images/web.tar' },
        volumes: ['shop-data', 'shop-cache'],
        binds: [
          { container: 'web', hostPath: '/srv/shop/uploads', destination: '/uploads', member: 'binds/web_uploads.tar' },
        ],
        consistency: 'pause',
      },
    ],
    volumes: [
      { name: 'shop-data', anonymous: false, driver: 'local', member: 'volumes/shop-data.tar' },
      { name: 'shop-cache', anonymous: false, driver: 'local', member: 'volumes/shop-cache.tar' },
      { name: 'a'.repeat(64), anonymous: true, driver: 'local', member: 'volumes/anon.tar' },
    ],
    networks: [net('shop-net'), net('backend')],
  } as unknown as Manifest;
}

const usage = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
};

describe('parseRemap', () => {
  it('is undefined without any --map-* option', () => {
    expect(parseRemap({})).toBeUndefined();
    expect(parseRemap({ mapVolume: [], mapPort: [] })).toBeUndefined();
  });

  it('reads every kind, normalises paths and ports, longest bind prefix first', () => {
    const r = parseRemap({
      mapVolume: ['shop-data=shop-data-2'],
      mapBind: ['/srv=/mnt/srv', '/srv/shop/=/data//shop'],
      mapPort: ['8080=18080', '127.0.0.1:8443=[::1]:9443'],
      mapNetwork: ['backend=prod-backend'],
    })!;
    expect([...r.volumes]).toEqual([['shop-data', 'shop-data-2']]);
    expect(r.binds).toEqual([
      ['/srv/shop', '/data/shop'],
      ['/srv', '/mnt/srv'],
    ]);
    expect(r.ports).toEqual([
      { from: { ip: '127.0.0.1', port: '8443' }, to: { ip: '::1', port: '9443' } }, // one address before any address
      { from: { port: '8080' }, to: { port: '18080' } },
    ]);
    expect([...r.networks]).toEqual([['backend', 'prod-backend']]);
    expect(describeRemap(r)).toEqual([
      'volume shop-data -> shop-data-2',
      'host paths under /srv/shop -> /data/shop',
      'host paths under /srv -> /mnt/srv',
      'host port 127.0.0.1:8443 -> [::1]:9443',
      'host port 8080 -> 18080',
      'network backend -> prod-backend',
    ]);
  });

  it.each([
    [{ mapVolume: ['data'] }, /--map-volume data: expected OLD=NEW/],
    [{ mapVolume: ['=x'] }, /expected OLD=NEW/],
    [{ mapVolume: ['x='] }, /expected OLD=NEW/],
    [{ mapVolume: ['data=my/vol'] }, /my\/vol is not a volume name/],
    [{ mapVolume: ['a=b', 'a=c'] }, /a is mapped twice/],
    [{ mapBind: ['srv=/mnt'] }, /srv is not an absolute path/],
    [{ mapBind: ['/srv=/mnt/../etc'] }, /has \. or \.\. in it/],
    [{ mapBind: ['/srv/=/a', '/srv=/b'] }, /\/srv is mapped twice/],
    [{ mapPort: ['8080=http'] }, /http is not a host port/],
    [{ mapPort: ['0=80'] }, /0 is not a host port/],
    [{ mapPort: ['80=70000'] }, /70000 is not a host port/],
    [{ mapNetwork: ['bridge=mine'] }, /bridge is one of the engine's own networks/],
    [{ mapNetwork: ['mine=host'] }, /host is one of the engine's own networks/],
  ])('refuses %j', (flags, msg) => {
    expect(usage(() => parseRemap(flags))).toMatch(msg);
  });
});

describe('mapPath', () => {
  const r = parseRemap({ mapBind: ['/srv/shop=/mnt/shop', '/etc=/opt/etc', '/=/chroot'] })!;
  it.each([
    ['/srv/shop', '/mnt/shop'],
    ['/srv/shop/uploads', '/mnt/shop/uploads'],
    ['/srv/shopping', '/chroot/srv/shopping'], // whole components only: not under /srv/shop
    ['/etc/shop.conf', '/opt/etc/shop.conf'],
    ['/var/x', '/chroot/var/x'],
  ])('%s -> %s', (from, to) => expect(mapPath(r, from)).toBe(to));
  it('leaves paths alone without a matching prefix', () => {
    expect(mapPath(parseRemap({ mapBind: ['/srv/shop=/x'] })!, '/srv/shopping')).toBe('/srv/shopping');
  });
  it('maps a prefix onto /', () => {
    expect(mapPath(parseRemap({ mapBind: ['/old=/'] })!, '/old/a/b')).toBe('/a/b');
    expect(mapPath(parseRemap({ mapBind: ['/old=/'] })!, '/old')).toBe('/');
  });
});

describe('remapSpec', () => {
  const r = parseRemap({
    mapBind: ['/srv/shop=/mnt/shop'],
    mapPort: ['8443=9443', '127.0.0.1:8080=0.0.0.0:18080'],
    mapNetwork: ['shop-net=prod-shop', 'backend=prod-backend'],
    mapVolume: ['shop-data=shop-data-2'],
  })!;
  const out = remapSpec(r, webSpec());

  it('moves bind sources in Binds, Mounts and the mount list; volumes and other paths stay', () => {
    expect(out.hostConfig.Binds).toEqual([
      'shop-data:/data',
      '/mnt/shop/uploads:/uploads:ro',
      '/srv/shopping:/other',
      '/etc/shop.conf:/etc/shop.conf:ro,z',
    ]);
    expect(out.hostConfig.Mounts).toEqual([
      { Type: 'bind', Source: '/mnt/shop/logs', Target: '/logs' },
      { Type: 'volume', Source: 'shop-cache', Target: '/cache' },
    ]);
    expect(out.mounts.filter((m) => m.type === 'bind').map((m) => m.source)).toEqual([
      '/mnt/shop/uploads',
      '/srv/shopping',
      '/etc/shop.conf',
      '/mnt/shop/logs',
    ]);
  });

  it('moves host ports: any address, or only the one named (and then to the new one)', () => {
    expect(out.hostConfig.PortBindings).toEqual({
      '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '18080' }],
      '443/tcp': [
        { HostIp: '', HostPort: '9443' },
        { HostIp: '::1', HostPort: '9443' },
      ],
      '9000/tcp': [{ HostIp: '', HostPort: '' }],
    });
  });

  it('a rule for one address wins over one for any, whatever their order', () => {
    const both = parseRemap({ mapPort: ['8443=1443', '[::1]:8443=2443'] })!;
    expect(remapSpec(both, webSpec()).hostConfig.PortBindings).toMatchObject({
      '443/tcp': [
        { HostIp: '', HostPort: '1443' },
        { HostIp: '::1', HostPort: '2443' },
      ],
    });
  });

  it('renames networks in the network mode and the endpoints', () => {
    expect(out.hostConfig.NetworkMode).toBe('prod-shop');
    expect(out.endpoints).toEqual([{ network: 'prod-shop', aliases: ['www'] }, { network: 'prod-backend' }]);
  });

  it('does not touch the input', () => {
    const s = webSpec();
    remapSpec(r, s);
    expect(s).toEqual(webSpec());
  });

  it('with the restore volume table, the create body mounts the renamed volume', () => {
    const v = remapVolume(r, { name: 'shop-data', anonymous: false });
    expect(v.name).toBe('shop-data-2');
    expect(remapVolume(r, { name: 'a'.repeat(64), anonymous: true }).name).toBe('a'.repeat(64));
    const plan = createPlan(out, 'ferry/web:1', { volumeNames: { 'shop-data': v.name, 'shop-cache': 'shop-cache' } });
    const hc = plan.body.HostConfig as Record<string, unknown>;
    expect(hc.Binds).toContain('shop-data-2:/data');
    expect(hc.NetworkMode).toBe('prod-shop');
  });
});

describe('checkRemap', () => {
  const subject = () => {
    const m = manifest();
    return { specs: m.containers.map((c) => c.spec), volumes: m.volumes, networks: m.networks };
  };
  const check = (flags: Parameters<typeof parseRemap>[0]) => checkRemap(parseRemap(flags)!, subject());

  it('accepts mappings that all match something', () => {
    expect(() =>
      check({
        mapVolume: ['shop-data=x'],
        mapBind: ['/srv/shop=/y', '/etc/shop.conf=/z'],
        mapPort: ['8080=1', '[::1]:8443=2'],
        mapNetwork: ['backend=b2'],
      }),
    ).not.toThrow();
    expect(() => check({ mapBind: ['/=/new-root'] })).not.toThrow();
  });

  it.each([
    [
      { mapVolume: ['shop_data=x'] },
      /--map-volume: there is no named volume shop_data \(there are: shop-data, shop-cache\)/,
    ],
    [{ mapVolume: ['a'.repeat(64) + '=x'] }, /there is no named volume/], // anonymous volumes cannot be mapped
    [
      { mapBind: ['/srv/sho=/y'] },
      /--map-bind: no bind mount is at or under \/srv\/sho \(the bind mounts are: .*\/srv\/shop\/uploads/,
    ],
    [
      { mapPort: ['8081=1'] },
      /--map-port: no container publishes host port 8081 \(published: 127\.0\.0\.1:8080, 8443, ::1:8443\)/,
    ],
    [{ mapPort: ['0.0.0.0:8080=1'] }, /no container publishes host port 0\.0\.0\.0:8080/],
    [
      { mapNetwork: ['frontend=x'] },
      /--map-network: there is no user-defined network frontend \(there are: shop-net, backend\)/,
    ],
  ])('refuses %j', (flags, msg) => {
    expect(usage(() => check(flags))).toMatch(msg);
  });

  it('reports every unmatched mapping at once', () => {
    const msg = usage(() => check({ mapVolume: ['nope=x'], mapNetwork: ['nada=y'] }));
    expect(msg).toMatch(/nope/);
    expect(msg).toMatch(/nada/);
  });
});

describe('remapRewrite', () => {
  it('renames volumes and networks, moves bind data, keeps container names', () => {
    const r: Remap = parseRemap({
      mapVolume: ['shop-data=d2'],
      mapNetwork: ['backend=b2'],
      mapBind: ['/srv/shop=/mnt/shop'],
    })!;
    const m = manifest();
    const rw = remapRewrite(r, m);
    expect(rw.containerName('web')).toBe('web');
    expect(m.volumes.map((v) => rw.volume(v).name)).toEqual(['d2', 'shop-cache', 'a'.repeat(64)]);
    expect(m.networks.map((n) => rw.network(n).name)).toEqual(['shop-net', 'b2']);
    expect(rw.bindPath!(m.containers[0]!.binds[0]!)).toBe('/mnt/shop/uploads');
    expect(rw.bindVolume(m.containers[0]!.binds[0]!)).toBeUndefined();
    expect(rw.spec(m.containers[0]!.spec).endpoints.map((e) => e.network)).toEqual(['shop-net', 'b2']);
  });

  it('checks the mappings against the bundle first', () => {
    expect(usage(() => remapRewrite(parseRemap({ mapVolume: ['nope=x'] })!, manifest()))).toMatch(
      /no named volume nope/,
    );
  });
});

describe('bindSources', () => {
  it('lists the host paths of the create options: -v binds and --mount binds, not volumes', () => {
    expect(bindSources(webSpec())).toEqual([
      { source: '/srv/shop/uploads', destination: '/uploads', origin: 'binds' },
      { source: '/srv/shopping', destination: '/other', origin: 'binds' },
      { source: '/etc/shop.conf', destination: '/etc/shop.conf', origin: 'binds' },
      { source: '/srv/shop/logs', destination: '/logs', origin: 'mounts' },
    ]);
  });

  it('follows a rewrite: mapped paths, and bind data a drill restores into volumes is no bind any more', () => {
    const r = parseRemap({ mapBind: ['/srv/shop=/mnt/shop'] })!;
    expect(bindSources(remapSpec(r, webSpec())).map((b) => b.source)).toEqual([
      '/mnt/shop/uploads',
      '/srv/shopping',
      '/etc/shop.conf',
      '/mnt/shop/logs',
    ]);
    const drilled = drillSpec(webSpec(), {
      id: 'a1b2c3',
      containers: new Set(['web']),
      networks: new Set(['shop-net', 'backend']),
      bindData: [
        { container: 'web', destination: '/uploads' },
        { container: 'web', destination: '/logs' },
      ],
    }).value;
    expect(bindSources(drilled).map((b) => b.destination)).toEqual(['/other', '/etc/shop.conf']);
  });
});
