import { describe, expect, it } from 'vitest';
import { quirksFor } from '../../src/engine/quirks.js';
import {
  bindReason,
  describeClaim,
  deviceClaims,
  heldPorts,
  hostSettings,
  missingSupport,
  portClaims,
  portsOverlap,
} from '../../src/ops/steps/startable.js';

const spec = (hostConfig: Record<string, unknown>) => ({ hostConfig });

describe('portClaims', () => {
  it('lists every fixed host port with its address and protocol', () => {
    expect(
      portClaims(
        spec({
          PortBindings: {
            '80/tcp': [
              { HostIp: '127.0.0.1', HostPort: '8080' },
              { HostIp: '::1', HostPort: '8080' },
            ],
            '53/udp': [{ HostIp: '', HostPort: '53' }],
          },
        }),
      ),
    ).toEqual([
      { ip: '127.0.0.1', port: 8080, proto: 'tcp', containerPort: '80/tcp' },
      { ip: '::1', port: 8080, proto: 'tcp', containerPort: '80/tcp' },
      { ip: '', port: 53, proto: 'udp', containerPort: '53/udp' },
    ]);
  });

  it('leaves out what the engine chooses itself: an empty or 0 host port, a range', () => {
    expect(
      portClaims(
        spec({
          PortBindings: {
            '80/tcp': [{ HostIp: '', HostPort: '' }, { HostPort: '0' }, { HostPort: '8000-8010' }],
            '81/tcp': null,
          },
        }),
      ),
    ).toEqual([]);
    expect(portClaims(spec({ PortBindings: { '80/tcp': [{ HostPort: '9000-9000' }] } }))).toEqual([
      { ip: '', port: 9000, proto: 'tcp', containerPort: '80/tcp' },
    ]);
    expect(portClaims(spec({}))).toEqual([]);
  });

  it('has none where the engine ignores port bindings', () => {
    const pb = { '80/tcp': [{ HostIp: '', HostPort: '80' }] };
    for (const NetworkMode of ['host', 'none', 'container:vpn'])
      expect(portClaims(spec({ NetworkMode, PortBindings: pb }))).toEqual([]);
    expect(portClaims(spec({ NetworkMode: 'bridge', PortBindings: pb }))).toHaveLength(1);
    expect(portClaims(spec({ NetworkMode: 'mynet', PortBindings: pb }))).toHaveLength(1);
  });
});

describe('portsOverlap', () => {
  const p = (ip: string, port = 80, proto = 'tcp') => ({ ip, port, proto });
  it('a wildcard address takes the port on every address', () => {
    for (const w of ['', '0.0.0.0', '::']) {
      expect(portsOverlap(p(w), p('127.0.0.1'))).toBe(true);
      expect(portsOverlap(p('10.0.0.5'), p(w))).toBe(true);
    }
  });
  it('two specific addresses clash only when they are the same', () => {
    expect(portsOverlap(p('127.0.0.1'), p('127.0.0.1'))).toBe(true);
    expect(portsOverlap(p('127.0.0.1'), p('127.0.0.2'))).toBe(false);
  });
  it('another port or protocol never clashes', () => {
    expect(portsOverlap(p('', 80), p('', 81))).toBe(false);
    expect(portsOverlap(p('', 53, 'udp'), p('', 53, 'tcp'))).toBe(false);
  });
});

describe('heldPorts', () => {
  it('reads the engine listing: published ports only, by container name', () => {
    expect(
      heldPorts([
        {
          Names: ['/web'],
          Ports: [
            { IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' },
            { PrivatePort: 443, Type: 'tcp' },
          ],
        },
        { Names: ['/dns'], Ports: [{ IP: '127.0.0.1', PrivatePort: 53, PublicPort: 53, Type: 'udp' }] },
        { Names: ['/quiet'] },
      ]),
    ).toEqual([
      { container: 'web', ip: '0.0.0.0', port: 8080, proto: 'tcp' },
      { container: 'dns', ip: '127.0.0.1', port: 53, proto: 'udp' },
    ]);
  });
});

describe('describeClaim', () => {
  it('spells addresses as the docker CLI does', () => {
    expect(describeClaim({ ip: '', port: 80, proto: 'tcp' })).toBe('80/tcp');
    expect(describeClaim({ ip: '127.0.0.1', port: 53, proto: 'udp' })).toBe('127.0.0.1:53/udp');
    expect(describeClaim({ ip: '::1', port: 80, proto: 'tcp' })).toBe('[::1]:80/tcp');
  });
});

describe('bindReason', () => {
  it("keeps the gist of the engine's refusal", () => {
    expect(
      bindReason(
        'start container 1f: the engine answered 500: driver failed programming external connectivity on endpoint ferry-holder-ab (53247b): Error starting userland proxy: listen tcp4 192.0.2.1:18999: bind: cannot assign requested address',
      ),
    ).toBe('listen tcp4 192.0.2.1:18999: bind: cannot assign requested address');
    expect(
      bindReason(
        'driver failed programming external connectivity on endpoint x (ab12): iptables failed: exit status 1',
      ),
    ).toBe('iptables failed: exit status 1');
  });
});

describe('deviceClaims', () => {
  it('lists the mapped host devices, with what the engine fills in when left out', () => {
    expect(
      deviceClaims({
        hostConfig: {
          Devices: [
            { PathOnHost: '/dev/ttyUSB0', PathInContainer: '/dev/zigbee', CgroupPermissions: 'rw' },
            { PathOnHost: '/dev/dri' },
            { PathInContainer: '/dev/x' },
          ],
        },
      }),
    ).toEqual([
      { PathOnHost: '/dev/ttyUSB0', PathInContainer: '/dev/zigbee', CgroupPermissions: 'rw' },
      { PathOnHost: '/dev/dri', PathInContainer: '/dev/dri', CgroupPermissions: 'rwm' },
    ]);
    expect(deviceClaims({ hostConfig: {} })).toEqual([]);
    expect(deviceClaims({ hostConfig: { Devices: null } })).toEqual([]);
  });
});

describe('missingSupport', () => {
  const caps = {
    runtimes: ['io.containerd.runc.v2', 'runc', 'nvidia'],
    logDrivers: ['json-file', 'journald', 'syslog', 'loki:latest'],
    volumeDrivers: ['local', 'rclone:latest'],
    networkDrivers: ['bridge', 'host', 'macvlan', 'null'],
  };
  const spec = (name: string, hostConfig: Record<string, unknown>) => ({ name, hostConfig });

  it('says nothing when the engine has all of it (plugins by name, with or without their tag)', () => {
    expect(
      missingSupport(caps, {
        specs: [
          spec('a', { Runtime: 'nvidia', LogConfig: { Type: 'loki' } }),
          spec('b', { LogConfig: { Type: 'none' } }),
          spec('c', {}),
        ],
        volumes: [
          { name: 'v', driver: 'local' },
          { name: 'w', driver: 'rclone' },
          { name: 'x', driver: 'rclone:latest' },
        ],
        networks: [{ name: 'n', driver: 'macvlan' }],
      }),
    ).toEqual([]);
  });

  it('names each runtime and driver that is missing, with what the engine has', () => {
    expect(
      missingSupport(caps, {
        specs: [spec('web', { Runtime: 'runsc', LogConfig: { Type: 'gelf' } })],
        volumes: [{ name: 'data', driver: 'local-persist' }],
        networks: [{ name: 'lan', driver: 'ipvlan' }],
      }),
    ).toEqual([
      'web: runtime runsc (here: io.containerd.runc.v2, runc, nvidia)',
      'web: log driver gelf (here: json-file, journald, syslog, loki:latest)',
      'volume data: volume driver local-persist (here: local, rclone:latest)',
      'network lan: network driver ipvlan (here: bridge, host, macvlan, null)',
    ]);
  });

  it('does not ask Podman about log drivers (it names them its own way)', () => {
    expect(
      missingSupport(
        caps,
        { specs: [spec('web', { LogConfig: { Type: 'json-file-ish' } })], volumes: [], networks: [] },
        quirksFor({ podman: true }),
      ),
    ).toEqual([]);
  });
});

describe('hostSettings', () => {
  const hc = (h: Record<string, unknown>) => ({ hostConfig: h });
  // What `docker inspect` shows for a plain `docker run`: nothing of it is a reason to ask.
  const plain = {
    NetworkMode: 'bridge',
    IpcMode: 'private',
    PidMode: '',
    UTSMode: '',
    CgroupnsMode: 'host',
    ShmSize: 67108864,
    Runtime: 'runc',
    CpuShares: 0,
    Memory: 0,
    NanoCpus: 0,
    CpusetCpus: '',
    MemorySwappiness: null,
    OomKillDisable: false,
    PidsLimit: null,
    Ulimits: null,
    Sysctls: {},
    SecurityOpt: null,
    Init: null,
    CgroupParent: '',
    BlkioWeightDevice: [],
  };

  it('is empty for a container that sets nothing host-dependent', () => {
    expect(hostSettings(hc(plain))).toEqual({});
    expect(hostSettings(hc({ ...plain, MemorySwappiness: -1 }))).toEqual({});
  });

  it('takes what the container sets, with the namespace modes it is judged against, on no network', () => {
    const got = hostSettings(
      hc({
        ...plain,
        CpusetCpus: '4-7',
        NanoCpus: 8e9,
        Memory: 1 << 30,
        MemorySwappiness: 0,
        Sysctls: { 'net.core.somaxconn': '1024' },
        Ulimits: [{ Name: 'nofile', Soft: 1024, Hard: 2048 }],
        Runtime: 'runsc',
      }),
    );
    expect(got).toEqual({
      CpusetCpus: '4-7',
      NanoCpus: 8e9,
      Memory: 1 << 30,
      MemorySwappiness: 0,
      Sysctls: { 'net.core.somaxconn': '1024' },
      Ulimits: [{ Name: 'nofile', Soft: 1024, Hard: 2048 }],
      Runtime: 'runsc',
      IpcMode: 'private',
      CgroupnsMode: 'host',
      NetworkMode: 'none',
    });
  });

  it("keeps the host network and namespaces (sysctls are judged against them), never another container's", () => {
    expect(
      hostSettings(hc({ ...plain, NetworkMode: 'host', UTSMode: 'host', Sysctls: { 'kernel.domainname': 'x' } })),
    ).toMatchObject({ NetworkMode: 'host', UTSMode: 'host' });
    const shared = hostSettings(
      hc({ ...plain, NetworkMode: 'container:db', IpcMode: 'container:db', PidMode: 'container:db', PidsLimit: 10 }),
    );
    expect(shared).toEqual({ PidsLimit: 10, CgroupnsMode: 'host', NetworkMode: 'none' });
  });
});
