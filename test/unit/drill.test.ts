import { describe, expect, it } from 'vitest';
import type { Manifest, VolumeEntry } from '../../src/bundle/manifest.js';
import { createPlan, type ContainerSpec, type NetworkSpec } from '../../src/model/spec.js';
import {
  bindVolumeName,
  drillBindVolume,
  drillName,
  drillNetwork,
  drillRewrite,
  drillSpec,
  drillVolume,
  LABEL_DRILL,
  newDrillId,
  type DrillContext,
} from '../../src/plan/drill.js';

const ID = 'a1b2c3';

function webSpec(): ContainerSpec {
  return {
    name: 'web',
    sourceId: 'f'.repeat(64),
    state: { running: true, paused: false },
    baseImage: { ref: 'example/web:1', id: 'sha256:' + 'e'.repeat(64) },
    config: {
      Hostname: 'web1',
      Env: ['A=1'],
      Labels: { app: 'web', 'com.docker.compose.project': 'shop', 'com.docker.compose.service': 'web' },
      Healthcheck: { Test: ['CMD-SHELL', 'true'], Interval: 1e9 },
    },
    hostConfig: {
      NetworkMode: 'shop-net',
      RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
      AutoRemove: true,
      PortBindings: {
        '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: '18080' }],
        '9090/tcp': [
          { HostIp: '', HostPort: '9090' },
          { HostIp: '::1', HostPort: '9090' },
        ],
      },
      Binds: [
        'shop-data:/data',
        '/srv/shop/uploads:/uploads',
        '/etc/shop.conf:/etc/shop.conf:ro',
        '/srv/shop/cache:/cache:rw,z',
        '/srv/shop/media:/media',
      ],
      Mounts: [
        { Type: 'bind', Source: '/srv/shop/logs', Target: '/logs' },
        { Type: 'bind', Source: '/srv/shop/certs', Target: '/certs', ReadOnly: true },
        { Type: 'volume', Source: 'shop-other', Target: '/other' },
      ],
      VolumesFrom: ['db:ro', 'sidecar'],
      Links: ['/db:/web/database', 'cache'],
      IpcMode: 'container:db',
      PidMode: 'container:outside',
      Memory: 64 << 20,
    },
    endpoints: [
      { network: 'shop-net', aliases: ['shop', 'www'], ipv4Address: '172.30.77.10', links: ['db:database'] },
      { network: 'backend', ipv6Address: 'fd00::10' },
    ],
    mounts: [],
  };
}

function ctx(extra: Partial<DrillContext> = {}): DrillContext {
  return {
    id: ID,
    containers: new Set(['web', 'db', 'sidecar', 'cache']),
    networks: new Set(['shop-net', 'backend']),
    ...extra,
  };
}

describe('drill names', () => {
  it('are ferry-drill-<id>-<name>', () => {
    expect(drillName(ID, 'web')).toBe('ferry-drill-a1b2c3-web');
    expect(newDrillId()).toMatch(/^[0-9a-f]{6}$/);
    expect(newDrillId()).not.toBe(newDrillId());
  });

  it('give each bind a volume name the engine accepts', () => {
    expect(bindVolumeName(ID, 'web', '/srv/my data/x')).toBe('ferry-drill-a1b2c3-web-bind_srv_my_data_x');
    expect(bindVolumeName(ID, 'web', '/srv/my data/x')).toMatch(/^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/);
  });
});

describe('drillSpec', () => {
  it('does not change the spec it is given', () => {
    const spec = webSpec();
    const copy = structuredClone(spec);
    drillSpec(spec, ctx());
    expect(spec).toEqual(copy);
  });

  it('never restarts by itself and is never auto-removed', () => {
    const { value } = drillSpec(webSpec(), ctx());
    expect(value.hostConfig.RestartPolicy).toEqual({ Name: 'no', MaximumRetryCount: 0 });
    expect(value.hostConfig.AutoRemove).toBeUndefined();
  });

  it('leaves the host port to the engine, on the same host address', () => {
    const { value, notes } = drillSpec(webSpec(), ctx());
    expect(value.hostConfig.PortBindings).toEqual({
      '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }],
      '9090/tcp': [
        { HostIp: '', HostPort: '' },
        { HostIp: '::1', HostPort: '' },
      ],
    });
    expect(notes).toContain('web: host port 127.0.0.1:18080 -> 8080/tcp becomes a free port chosen by the engine');
  });

  it('labels it, and drops the Compose labels', () => {
    const { value } = drillSpec(webSpec(), ctx());
    expect(value.config.Labels).toEqual({ app: 'web', [LABEL_DRILL]: ID });
    const bare = drillSpec({ ...webSpec(), config: {} }, ctx()).value;
    expect(bare.config.Labels).toEqual({ [LABEL_DRILL]: ID });
  });

  it('keeps the rest of the configuration', () => {
    const { value } = drillSpec(webSpec(), ctx());
    expect(value.config.Env).toEqual(['A=1']);
    expect(value.config.Hostname).toBe('web1');
    expect(value.config.Healthcheck).toEqual(webSpec().config.Healthcheck);
    expect(value.hostConfig.Memory).toBe(64 << 20);
    expect(value.name).toBe('web');
  });

  it('moves it to the drill networks, without static addresses, keeping aliases', () => {
    const { value, notes } = drillSpec(webSpec(), ctx());
    expect(value.hostConfig.NetworkMode).toBe('ferry-drill-a1b2c3-shop-net');
    expect(value.endpoints).toEqual([
      { network: 'ferry-drill-a1b2c3-shop-net', aliases: ['shop', 'www'], links: ['ferry-drill-a1b2c3-db:database'] },
      { network: 'ferry-drill-a1b2c3-backend' },
    ]);
    expect(notes).toContain('web: static address 172.30.77.10 on shop-net dropped (it belongs to the original)');
    expect(notes).toContain('web: static address fd00::10 on backend dropped (it belongs to the original)');
  });

  it('leaves the built-in networks alone', () => {
    for (const mode of ['default', 'bridge', 'none']) {
      const spec = {
        ...webSpec(),
        hostConfig: { NetworkMode: mode },
        endpoints: mode === 'none' ? [] : [{ network: 'bridge' }],
      };
      const { value } = drillSpec(spec, ctx());
      expect(value.hostConfig.NetworkMode).toBe(mode);
      expect(value.endpoints.map((e) => e.network)).toEqual(mode === 'none' ? [] : ['bridge']);
    }
  });

  it('points container references at the drill copies of the bundle, and says when it cannot', () => {
    const { value, notes } = drillSpec(webSpec(), ctx());
    expect(value.hostConfig.VolumesFrom).toEqual(['ferry-drill-a1b2c3-db:ro', 'ferry-drill-a1b2c3-sidecar']);
    expect(value.hostConfig.Links).toEqual(['ferry-drill-a1b2c3-db:database', 'ferry-drill-a1b2c3-cache:cache']);
    expect(value.hostConfig.IpcMode).toBe('container:ferry-drill-a1b2c3-db');
    expect(value.hostConfig.PidMode).toBe('container:outside');
    expect(notes).toContain(
      'web: refers to container outside, which is not in the bundle: the drill copy uses the real one',
    );

    const side = drillSpec(
      { ...webSpec(), name: 'sidecar', hostConfig: { NetworkMode: 'container:web' }, endpoints: [] },
      ctx(),
    ).value;
    expect(side.hostConfig.NetworkMode).toBe('container:ferry-drill-a1b2c3-web');
  });

  it('never writes to host paths: writable binds become read-only', () => {
    const { value, notes } = drillSpec(webSpec(), ctx());
    expect(value.hostConfig.Binds).toEqual([
      'shop-data:/data', // a volume: renamed through the restore's volume names
      '/srv/shop/uploads:/uploads:ro',
      '/etc/shop.conf:/etc/shop.conf:ro',
      '/srv/shop/cache:/cache:z,ro',
      '/srv/shop/media:/media:ro',
    ]);
    expect(value.hostConfig.Mounts).toEqual([
      { Type: 'bind', Source: '/srv/shop/logs', Target: '/logs', ReadOnly: true },
      { Type: 'bind', Source: '/srv/shop/certs', Target: '/certs', ReadOnly: true },
      { Type: 'volume', Source: 'shop-other', Target: '/other' },
    ]);
    expect(notes).toContain("web: bind /srv/shop/uploads -> /uploads is the original's host path: mounted read-only");
  });

  it('mounts bind data that is in the bundle from a drill volume', () => {
    const c = ctx({
      bindData: [
        { container: 'web', destination: '/uploads' },
        { container: 'web', destination: '/logs' },
        { container: 'db', destination: '/media' },
      ],
    });
    const { value } = drillSpec(webSpec(), c);
    const binds = value.hostConfig.Binds as string[];
    expect(binds[1]).toBe(`${bindVolumeName(ID, 'web', '/uploads')}:/uploads`);
    expect(binds[4]).toBe('/srv/shop/media:/media:ro'); // that data belongs to db's bind
    expect((value.hostConfig.Mounts as unknown[])[0]).toEqual({
      Type: 'volume',
      Source: bindVolumeName(ID, 'web', '/logs'),
      Target: '/logs',
      ReadOnly: false,
    });
  });

  it('turns into a create body with the drill networks and volumes', () => {
    const spec: ContainerSpec = {
      ...webSpec(),
      hostConfig: {
        NetworkMode: 'shop-net',
        Binds: ['shop-data:/data'],
        PortBindings: { '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: '18080' }] },
      },
      mounts: [
        {
          type: 'volume',
          source: 'a'.repeat(64),
          destination: '/anon',
          readOnly: false,
          anonymous: true,
          origin: 'implicit',
        },
      ],
    };
    const drilled = drillSpec(spec, ctx()).value;
    const plan = createPlan(drilled, 'img:1', {
      volumeNames: { 'shop-data': drillName(ID, 'shop-data'), ['a'.repeat(64)]: 'new-anon' },
      multiEndpoint: false,
    });
    const hc = plan.body.HostConfig as Record<string, unknown>;
    expect(hc.Binds).toEqual(['ferry-drill-a1b2c3-shop-data:/data']);
    // the anonymous volume stays anonymous: declared, the engine makes it (its data is moved in after)
    expect(hc.Mounts).toBeUndefined();
    expect(plan.body.Volumes).toEqual({ '/anon': {} });
    expect(hc.PortBindings).toEqual({ '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }] });
    expect(plan.body.NetworkingConfig).toEqual({
      EndpointsConfig: {
        'ferry-drill-a1b2c3-shop-net': { Aliases: ['shop', 'www'], Links: ['ferry-drill-a1b2c3-db:database'] },
      },
    });
    expect(plan.laterEndpoints).toEqual([{ network: 'ferry-drill-a1b2c3-backend' }]);
  });
});

describe('drillNetwork', () => {
  const net: NetworkSpec = {
    name: 'shop-net',
    driver: 'bridge',
    internal: true,
    attachable: false,
    enableIPv6: false,
    ipam: {
      Driver: 'default',
      Config: [{ Subnet: '172.30.77.0/24', Gateway: '172.30.77.1', IPRange: '172.30.77.0/25' }],
      Options: { foo: 'bar' },
    },
    options: { 'com.docker.network.bridge.name': 'br-shop', 'com.docker.network.driver.mtu': '1400' },
    labels: { team: 'a', 'com.docker.compose.network': 'default' },
  };

  it('gets its own name and label, no subnet and no fixed bridge name', () => {
    const { value, notes } = drillNetwork(net, ID);
    expect(value).toEqual({
      name: 'ferry-drill-a1b2c3-shop-net',
      driver: 'bridge',
      internal: true,
      attachable: false,
      enableIPv6: false,
      ipam: { Driver: 'default', Config: [], Options: { foo: 'bar' } },
      options: { 'com.docker.network.driver.mtu': '1400' },
      labels: { team: 'a', [LABEL_DRILL]: ID },
    });
    expect(notes).toEqual([
      'network shop-net: created without its subnet 172.30.77.0/24 (the engine picks a free one)',
      'network shop-net: bridge interface name br-shop not reused',
    ]);
    expect(net.ipam!.Config).toHaveLength(1); // not changed
  });

  it('turns IPv6 off when its subnet was fixed', () => {
    const v6 = {
      ...net,
      enableIPv6: true,
      ipam: { Config: [{ Subnet: '172.30.77.0/24' }, { Subnet: 'fd00:1::/64' }] },
    };
    const { value, notes } = drillNetwork(v6, ID);
    expect(value.enableIPv6).toBe(false);
    expect(value.ipam).toEqual({ Driver: 'default', Config: [] });
    expect(notes.join('\n')).toMatch(/IPv6 off/);
    expect(drillNetwork({ ...net, enableIPv6: true, ipam: undefined }, ID).value.enableIPv6).toBe(true);
  });
});

describe('drillVolume', () => {
  const vol: VolumeEntry = {
    name: 'shop-data',
    anonymous: false,
    driver: 'local',
    labels: { keep: '1', 'com.docker.compose.volume': 'data' },
    member: 'volumes/shop-data.tar.zst',
  };

  it('gets its own name and label', () => {
    expect(drillVolume(vol, ID)).toEqual({
      value: { ...vol, name: 'ferry-drill-a1b2c3-shop-data', labels: { keep: '1', [LABEL_DRILL]: ID } },
      notes: [],
    });
  });

  it('stays anonymous when it was', () => {
    const anon = { ...vol, name: 'b'.repeat(64), anonymous: true, labels: undefined };
    expect(drillVolume(anon, ID).value).toEqual({ ...anon, labels: { [LABEL_DRILL]: ID } });
  });

  it('is never the view of a host device the original uses', () => {
    const dev = { ...vol, driverOpts: { type: 'none', o: 'bind', device: '/srv/shop' } };
    const { value, notes } = drillVolume(dev, ID);
    expect(value.driverOpts).toBeUndefined();
    expect(notes).toEqual([
      'volume shop-data: backed by /srv/shop on the original; the drill copy is a plain local volume',
    ]);
    const plugin = { ...vol, driver: 'rexray', driverOpts: { size: '10' } };
    expect(drillVolume(plugin, ID).value.driverOpts).toEqual({ size: '10' });
  });

  it('for bind data is a labelled local volume named after container and destination', () => {
    expect(
      drillBindVolume(
        { container: 'web', hostPath: '/srv/x', destination: '/uploads', member: 'binds/web_uploads.tar.zst' },
        ID,
      ),
    ).toEqual({
      name: 'ferry-drill-a1b2c3-web-bind_uploads',
      anonymous: false,
      driver: 'local',
      labels: { [LABEL_DRILL]: ID },
      member: 'binds/web_uploads.tar.zst',
    });
  });
});

describe('drillRewrite', () => {
  const manifest = {
    containers: [
      {
        spec: webSpec(),
        image: { ref: 'ferry/web:1' },
        volumes: [],
        binds: [
          { container: 'web', hostPath: '/srv/shop/uploads', destination: '/uploads', member: 'binds/web_uploads' },
        ],
        consistency: 'pause',
      },
      {
        spec: { ...webSpec(), name: 'db', hostConfig: {}, endpoints: [{ network: 'shop-net' }] },
        image: { ref: 'ferry/db:1' },
        volumes: [],
        binds: [],
        consistency: 'pause',
      },
    ],
    volumes: [],
    networks: [{ name: 'shop-net', driver: 'bridge', internal: false, attachable: false, enableIPv6: false }],
  } as unknown as Manifest;

  it('renames everything the restore creates and gathers each note once', () => {
    const rw = drillRewrite(manifest, ID);
    expect(rw.containerName('db')).toBe('ferry-drill-a1b2c3-db');
    const web = rw.spec(manifest.containers[0]!.spec);
    rw.spec(manifest.containers[0]!.spec);
    expect(web.hostConfig.IpcMode).toBe('container:ferry-drill-a1b2c3-db');
    // backend is not among the bundle's networks here: left as it is
    expect(web.endpoints.map((e) => e.network)).toEqual(['ferry-drill-a1b2c3-shop-net', 'backend']);
    expect((web.hostConfig.Binds as string[])[1]).toBe('ferry-drill-a1b2c3-web-bind_uploads:/uploads');
    expect(rw.network(manifest.networks[0]!).name).toBe('ferry-drill-a1b2c3-shop-net');
    expect(rw.bindVolume(manifest.containers[0]!.binds[0]!)?.name).toBe('ferry-drill-a1b2c3-web-bind_uploads');
    const notes = rw.notes();
    expect(new Set(notes).size).toBe(notes.length);
    expect(notes.filter((n) => n.startsWith('web: host port 127.0.0.1:18080'))).toHaveLength(1);
  });
});
