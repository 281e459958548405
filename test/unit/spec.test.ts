import { describe, expect, it } from 'vitest';
import { quirksFor } from '../../src/engine/quirks.js';
import {
  captureNetwork,
  captureSpec,
  composeProject,
  containerRefs,
  detachedFromCompose,
  withoutComposeLabels,
  createPlan,
  dependencyOrder,
  inspectRefs,
  ipv4InSubnet,
  ipv4SubnetsOverlap,
  isFerrySnapshot,
  isUserNetwork,
  lineageAuthor,
  originImage,
  parseLineage,
  referenceGroups,
  networkCreateOptions,
  parseBind,
  renameContainerRefs,
  secretLikeEnvNames,
  type CaptureInput,
  type ContainerSpec,
} from '../../src/model/spec.js';

// ---------------------------------------------------------------------------------------------
// Fixtures: `docker inspect` output as Docker 20.10 prints it.
// ---------------------------------------------------------------------------------------------

const ID = '4f9d2c1b8a7e6d5c4b3a29181716151413121110f0e0d0c0b0a0908070605040';
const SHORT = ID.slice(0, 12);
const OTHER_ID = '9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b';
const ANON = '3c5e7a9b1d2f4e6a8c0b2d4f6e8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a';
const IMAGE_ID = 'sha256:7d3e5f1a9c2b4d6e8f0a1b3c5d7e9f2a4b6c8d0e1f3a5b7c9d2e4f6a8b0c1d3e';

const IMAGE_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
];
const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** `docker image inspect example/web:1.4` .Config */
function imageConfig(): Record<string, unknown> {
  return {
    Hostname: '',
    Domainname: '',
    User: '',
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    ExposedPorts: { '80/tcp': {} },
    Tty: false,
    OpenStdin: false,
    StdinOnce: false,
    Env: [IMAGE_PATH, 'WEB_VERSION=1.4.2', 'WEB_MODE=development'],
    Cmd: ['web', '-g', 'daemon off;'],
    Image: 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
    Volumes: { '/var/cache/web': {} },
    WorkingDir: '/srv',
    Entrypoint: ['/docker-entrypoint.sh'],
    OnBuild: null,
    Labels: { maintainer: 'Web Team <web@example.com>', 'org.opencontainers.image.version': '1.4' },
    StopSignal: 'SIGQUIT',
  };
}

/**
 * `docker run -d --name web --network frontnet --network-alias web-alias --ip 172.20.0.10
 *   -p 8080:80 -p 9000 -e API_TOKEN=abc123 -e WEB_MODE=production -l com.example.tier=front
 *   -l org.opencontainers.image.version=1.4-custom -m 512m
 *   -v webdata:/srv/data:ro -v /etc/web/conf.d:/etc/web/conf.d
 *   --mount type=volume,source=weblogs,target=/var/log/web example/web:1.4`
 * then `docker network connect --alias db-client backnet web`.
 */
function webInspect(): CaptureInput['inspect'] {
  return {
    Id: ID,
    Created: '2024-03-01T10:00:00.000000000Z',
    Path: '/docker-entrypoint.sh',
    Args: ['web', '-g', 'daemon off;'],
    State: {
      Status: 'running',
      Running: true,
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: 4242,
      ExitCode: 0,
      Error: '',
      StartedAt: '2024-03-01T10:00:01Z',
      FinishedAt: '0001-01-01T00:00:00Z',
    },
    Image: IMAGE_ID,
    ResolvConfPath: `/var/lib/docker/containers/${ID}/resolv.conf`,
    HostnamePath: `/var/lib/docker/containers/${ID}/hostname`,
    HostsPath: `/var/lib/docker/containers/${ID}/hosts`,
    LogPath: `/var/lib/docker/containers/${ID}/${ID}-json.log`,
    Name: '/web',
    RestartCount: 0,
    Driver: 'overlay2',
    Platform: 'linux',
    MountLabel: '',
    ProcessLabel: '',
    AppArmorProfile: 'docker-default',
    ExecIDs: null,
    HostConfig: {
      Binds: ['webdata:/srv/data:ro', '/etc/web/conf.d:/etc/web/conf.d'],
      ContainerIDFile: '',
      LogConfig: { Type: 'json-file', Config: {} },
      NetworkMode: 'frontnet',
      PortBindings: {
        '80/tcp': [{ HostIp: '', HostPort: '8080' }],
        '9000/tcp': [{ HostIp: '', HostPort: '' }],
      },
      RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
      AutoRemove: false,
      VolumeDriver: '',
      VolumesFrom: null,
      CapAdd: null,
      CapDrop: null,
      CgroupnsMode: 'host',
      Dns: [],
      DnsOptions: [],
      DnsSearch: [],
      ExtraHosts: null,
      GroupAdd: null,
      IpcMode: 'private',
      Cgroup: '',
      Links: null,
      OomScoreAdj: 0,
      PidMode: '',
      Privileged: false,
      PublishAllPorts: false,
      ReadonlyRootfs: false,
      SecurityOpt: null,
      UTSMode: '',
      UsernsMode: '',
      ShmSize: 67108864,
      Runtime: 'runc',
      ConsoleSize: [0, 0],
      Isolation: '',
      CpuShares: 0,
      Memory: 536870912,
      NanoCpus: 0,
      CgroupParent: '',
      BlkioWeight: 0,
      BlkioWeightDevice: [],
      BlkioDeviceReadBps: null,
      BlkioDeviceWriteBps: null,
      BlkioDeviceReadIOps: null,
      BlkioDeviceWriteIOps: null,
      CpuPeriod: 0,
      CpuQuota: 0,
      CpuRealtimePeriod: 0,
      CpuRealtimeRuntime: 0,
      CpusetCpus: '',
      CpusetMems: '',
      Devices: [],
      DeviceCgroupRules: null,
      DeviceRequests: null,
      KernelMemory: 0,
      KernelMemoryTCP: 0,
      MemoryReservation: 0,
      MemorySwap: 1073741824,
      MemorySwappiness: null,
      OomKillDisable: false,
      PidsLimit: null,
      Ulimits: null,
      CpuCount: 0,
      CpuPercent: 0,
      IOMaximumIOps: 0,
      IOMaximumBandwidth: 0,
      Mounts: [{ Type: 'volume', Source: 'weblogs', Target: '/var/log/web' }],
      MaskedPaths: [...MASKED_PATHS],
      ReadonlyPaths: [...READONLY_PATHS],
    },
    GraphDriver: { Data: null, Name: 'overlay2' },
    Mounts: [
      {
        Type: 'volume',
        Name: 'webdata',
        Source: '/var/lib/docker/volumes/webdata/_data',
        Destination: '/srv/data',
        Driver: 'local',
        Mode: 'ro',
        RW: false,
        Propagation: '',
      },
      {
        Type: 'bind',
        Source: '/etc/web/conf.d',
        Destination: '/etc/web/conf.d',
        Mode: '',
        RW: true,
        Propagation: 'rprivate',
      },
      {
        Type: 'volume',
        Name: 'weblogs',
        Source: '/var/lib/docker/volumes/weblogs/_data',
        Destination: '/var/log/web',
        Driver: 'local',
        Mode: 'z',
        RW: true,
        Propagation: '',
      },
      {
        Type: 'volume',
        Name: ANON,
        Source: `/var/lib/docker/volumes/${ANON}/_data`,
        Destination: '/var/cache/web',
        Driver: 'local',
        Mode: '',
        RW: true,
        Propagation: '',
      },
    ],
    Config: {
      Hostname: SHORT,
      Domainname: '',
      User: '',
      AttachStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      ExposedPorts: { '80/tcp': {}, '9000/tcp': {} },
      Tty: false,
      OpenStdin: false,
      StdinOnce: false,
      Env: ['API_TOKEN=abc123', 'WEB_MODE=production', IMAGE_PATH, 'WEB_VERSION=1.4.2'],
      Cmd: ['web', '-g', 'daemon off;'],
      Image: 'example/web:1.4',
      Volumes: { '/var/cache/web': {} },
      WorkingDir: '/srv',
      Entrypoint: ['/docker-entrypoint.sh'],
      OnBuild: null,
      Labels: {
        'com.example.tier': 'front',
        maintainer: 'Web Team <web@example.com>',
        'org.opencontainers.image.version': '1.4-custom',
      },
      StopSignal: 'SIGQUIT',
    },
    NetworkSettings: {
      Bridge: '',
      SandboxID: 'f00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeed',
      HairpinMode: false,
      LinkLocalIPv6Address: '',
      LinkLocalIPv6PrefixLen: 0,
      Ports: {
        '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }],
        '9000/tcp': [{ HostIp: '0.0.0.0', HostPort: '49153' }],
      },
      SandboxKey: '/var/run/docker/netns/f00dfeedf00d',
      SecondaryIPAddresses: null,
      SecondaryIPv6Addresses: null,
      EndpointID: '',
      Gateway: '',
      GlobalIPv6Address: '',
      GlobalIPv6PrefixLen: 0,
      IPAddress: '',
      IPPrefixLen: 0,
      IPv6Gateway: '',
      MacAddress: '',
      // Go marshals maps with sorted keys: backnet comes before the primary network frontnet.
      Networks: {
        backnet: {
          IPAMConfig: null,
          Links: null,
          Aliases: [SHORT, 'db-client'],
          NetworkID: '1111111111111111111111111111111111111111111111111111111111111111',
          EndpointID: '2222222222222222222222222222222222222222222222222222222222222222',
          Gateway: '172.21.0.1',
          IPAddress: '172.21.0.3',
          IPPrefixLen: 16,
          IPv6Gateway: '',
          GlobalIPv6Address: '',
          GlobalIPv6PrefixLen: 0,
          MacAddress: '02:42:ac:15:00:03',
          DriverOpts: null,
        },
        frontnet: {
          IPAMConfig: { IPv4Address: '172.20.0.10' },
          Links: null,
          Aliases: ['web-alias', SHORT],
          NetworkID: '3333333333333333333333333333333333333333333333333333333333333333',
          EndpointID: '4444444444444444444444444444444444444444444444444444444444444444',
          Gateway: '172.20.0.1',
          IPAddress: '172.20.0.10',
          IPPrefixLen: 16,
          IPv6Gateway: '',
          GlobalIPv6Address: '',
          GlobalIPv6PrefixLen: 0,
          MacAddress: '02:42:ac:14:00:0a',
          DriverOpts: null,
        },
      },
    },
  };
}

type Json = Record<string, unknown>;
const hc = (i: CaptureInput['inspect']) => i.HostConfig as Json;
const cfgOf = (i: CaptureInput['inspect']) => i.Config as Json;

function capture(
  mutate?: (i: CaptureInput['inspect'], img: Json) => void,
  containerNames?: Record<string, string>,
): ContainerSpec {
  const inspect = webInspect();
  const img = imageConfig();
  mutate?.(inspect, img);
  return captureSpec({ inspect, imageConfig: img, containerNames });
}

// ---------------------------------------------------------------------------------------------

describe('captureSpec', () => {
  it('records identity, state and base image', () => {
    const s = capture();
    expect(s.name).toBe('web');
    expect(s.sourceId).toBe(ID);
    expect(s.state).toEqual({ running: true, paused: false });
    expect(s.baseImage).toEqual({ ref: 'example/web:1.4', id: IMAGE_ID });
  });

  it('reports a paused container', () => {
    const s = capture((i) => {
      i.State = { ...i.State, Status: 'paused', Paused: true };
    });
    expect(s.state).toEqual({ running: true, paused: true });
  });

  it('keeps only what the user set in Config (image env, labels, ports, volumes, cmd dropped)', () => {
    const s = capture();
    expect(s.config).toEqual({
      Env: ['API_TOKEN=abc123', 'WEB_MODE=production'],
      Labels: { 'com.example.tier': 'front', 'org.opencontainers.image.version': '1.4-custom' },
      ExposedPorts: { '9000/tcp': {} },
    });
  });

  it('keeps a user-overridden image env var but drops one equal to the image value', () => {
    const s = capture((i) => {
      cfgOf(i).Env = ['WEB_MODE=development', IMAGE_PATH, 'WEB_VERSION=2.0'];
    });
    expect(s.config.Env).toEqual(['WEB_VERSION=2.0']);
  });

  it('keeps user Volumes, User, WorkingDir and StopSignal that differ from the image', () => {
    const s = capture((i) => {
      const c = cfgOf(i);
      c.Volumes = { '/var/cache/web': {}, '/scratch': {} };
      c.User = '1000:1000';
      c.WorkingDir = '/srv/app';
      c.StopSignal = 'SIGTERM';
      c.StopTimeout = 30;
      c.Tty = true;
      c.OpenStdin = true;
    });
    expect(s.config).toMatchObject({
      Volumes: { '/scratch': {} },
      User: '1000:1000',
      WorkingDir: '/srv/app',
      StopSignal: 'SIGTERM',
      StopTimeout: 30,
      Tty: true,
      OpenStdin: true,
    });
    expect(s.config).not.toHaveProperty('StdinOnce');
  });

  it("keeps StopTimeout even when the image has the same: no engine applies an image's", () => {
    const s = capture((i, img) => {
      cfgOf(i).StopTimeout = 45;
      img.StopTimeout = 45; // the committed image of a restored container carries it
    });
    expect(s.config.StopTimeout).toBe(45);
  });

  it('drops the hostname the engine generated from the id', () => {
    const s = capture();
    expect(s.config).not.toHaveProperty('Hostname');
  });

  it('keeps a hostname the user chose, and a domain name', () => {
    const s = capture((i) => {
      cfgOf(i).Hostname = 'web-1';
      cfgOf(i).Domainname = 'example.internal';
    });
    expect(s.config.Hostname).toBe('web-1');
    expect(s.config.Domainname).toBe('example.internal');
  });

  it('drops the hostname in container:<id> network mode and maps the id to the container name', () => {
    const s = capture(
      (i) => {
        hc(i).NetworkMode = `container:${OTHER_ID}`;
        cfgOf(i).Hostname = 'vpn-gateway'; // inherited from the other container
        (i.NetworkSettings as Json).Networks = {};
      },
      { [OTHER_ID]: 'vpn' },
    );
    expect(s.config).not.toHaveProperty('Hostname');
    expect(s.hostConfig.NetworkMode).toBe('container:vpn');
    expect(s.endpoints).toEqual([]);
  });

  it('maps container:<short id> by prefix, IpcMode and PidMode too; leaves unknown ids alone', () => {
    const s = capture(
      (i) => {
        hc(i).NetworkMode = `container:${OTHER_ID.slice(0, 12)}`;
        hc(i).IpcMode = `container:${OTHER_ID}`;
        hc(i).PidMode = `container:${'e'.repeat(64)}`;
      },
      { [OTHER_ID]: 'vpn' },
    );
    expect(s.hostConfig.NetworkMode).toBe('container:vpn');
    expect(s.hostConfig.IpcMode).toBe('container:vpn');
    expect(s.hostConfig.PidMode).toBe(`container:${'e'.repeat(64)}`);
  });

  it('maps VolumesFrom ids to names and keeps the mode', () => {
    const s = capture(
      (i) => {
        hc(i).VolumesFrom = [`${OTHER_ID}:ro`, 'datastore'];
      },
      { [OTHER_ID]: 'vpn' },
    );
    expect(s.hostConfig.VolumesFrom).toEqual(['vpn:ro', 'datastore']);
  });

  it('an Entrypoint override keeps Cmd, even when it is null', () => {
    const s = capture((i) => {
      cfgOf(i).Entrypoint = ['/bin/sh', '-c'];
      cfgOf(i).Cmd = null;
    });
    expect(s.config.Entrypoint).toEqual(['/bin/sh', '-c']);
    expect(s.config).toHaveProperty('Cmd', null);
  });

  it('an Entrypoint override keeps Cmd even when it equals the image Cmd', () => {
    const s = capture((i) => {
      cfgOf(i).Entrypoint = ['/usr/bin/tini', '--'];
    });
    expect(s.config.Entrypoint).toEqual(['/usr/bin/tini', '--']);
    expect(s.config.Cmd).toEqual(['web', '-g', 'daemon off;']);
  });

  it('a Cmd override alone does not record the Entrypoint', () => {
    const s = capture((i) => {
      cfgOf(i).Cmd = ['web', '--debug'];
    });
    expect(s.config.Cmd).toEqual(['web', '--debug']);
    expect(s.config).not.toHaveProperty('Entrypoint');
  });

  it('keeps a user Healthcheck but not the image one', () => {
    const hcheck = { Test: ['CMD', 'curl', '-f', 'http://localhost/'], Interval: 30_000_000_000 };
    const same = capture((i, img) => {
      img.Healthcheck = hcheck;
      cfgOf(i).Healthcheck = hcheck;
    });
    expect(same.config).not.toHaveProperty('Healthcheck');
    const changed = capture((i, img) => {
      img.Healthcheck = hcheck;
      cfgOf(i).Healthcheck = { ...hcheck, Interval: 5_000_000_000 };
    });
    expect(changed.config.Healthcheck).toEqual({ ...hcheck, Interval: 5_000_000_000 });
  });

  it('works without an image config (image gone): everything counts as user-set', () => {
    const inspect = webInspect();
    const s = captureSpec({ inspect, imageConfig: null });
    expect(s.config.Env).toEqual(['API_TOKEN=abc123', 'WEB_MODE=production', IMAGE_PATH, 'WEB_VERSION=1.4.2']);
    expect(s.config.Entrypoint).toEqual(['/docker-entrypoint.sh']);
    expect(s.config.Cmd).toEqual(['web', '-g', 'daemon off;']);
    expect(s.config.ExposedPorts).toEqual({ '80/tcp': {}, '9000/tcp': {} });
  });

  it('keeps user HostConfig and drops empty values and engine defaults', () => {
    const s = capture();
    expect(s.hostConfig).toEqual({
      Binds: ['webdata:/srv/data:ro', '/etc/web/conf.d:/etc/web/conf.d'],
      NetworkMode: 'frontnet',
      PortBindings: {
        '80/tcp': [{ HostIp: '', HostPort: '8080' }],
        '9000/tcp': [{ HostIp: '', HostPort: '' }],
      },
      Memory: 536870912,
      Mounts: [{ Type: 'volume', Source: 'weblogs', Target: '/var/log/web' }],
    });
    for (const k of [
      'Runtime',
      'IpcMode',
      'CgroupnsMode',
      'MaskedPaths',
      'ReadonlyPaths',
      'MemorySwap',
      'RestartPolicy',
      'Isolation',
      'ShmSize',
      'LogConfig',
    ])
      expect(s.hostConfig).not.toHaveProperty(k);
  });

  it('keeps a log config or shm size the user chose, drops the engine defaults', () => {
    const s = capture((i) => {
      hc(i).LogConfig = { Type: 'json-file', Config: { 'max-size': '1m' } };
      hc(i).ShmSize = 32 * 1024 * 1024;
    });
    expect(s.hostConfig.LogConfig).toEqual({ Type: 'json-file', Config: { 'max-size': '1m' } });
    expect(s.hostConfig.ShmSize).toBe(32 * 1024 * 1024);
    const j = captureSpec({
      inspect: (() => {
        const i = webInspect();
        hc(i).LogConfig = { Type: 'json-file', Config: {} };
        return i;
      })(),
      imageConfig: null,
      defaultLogDriver: 'journald',
    });
    expect(j.hostConfig.LogConfig).toEqual({ Type: 'json-file', Config: {} }); // not the source's default: kept
  });

  it('keeps a random host port binding (HostPort "") exactly as given', () => {
    const s = capture();
    expect((s.hostConfig.PortBindings as Json)['9000/tcp']).toEqual([{ HostIp: '', HostPort: '' }]);
  });

  it('keeps non-default runtime, ipc mode, cgroupns mode, swap and restart policy', () => {
    const s = capture((i) => {
      const h = hc(i);
      h.Runtime = 'runsc';
      h.IpcMode = 'host';
      h.CgroupnsMode = 'custom';
      h.MemorySwap = -1;
      h.RestartPolicy = { Name: 'on-failure', MaximumRetryCount: 5 };
      h.Isolation = 'hyperv';
    });
    expect(s.hostConfig).toMatchObject({
      Runtime: 'runsc',
      IpcMode: 'host',
      CgroupnsMode: 'custom',
      MemorySwap: -1,
      RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 5 },
      Isolation: 'hyperv',
    });
  });

  it('drops the private/shareable ipc and the default isolation, keeps unless-stopped', () => {
    const s = capture((i) => {
      hc(i).IpcMode = 'shareable';
      hc(i).Isolation = 'default';
      hc(i).CgroupnsMode = 'private';
      hc(i).RestartPolicy = { Name: 'unless-stopped', MaximumRetryCount: 0 };
    });
    expect(s.hostConfig).not.toHaveProperty('IpcMode');
    expect(s.hostConfig).not.toHaveProperty('Isolation');
    expect(s.hostConfig).not.toHaveProperty('CgroupnsMode');
    expect(s.hostConfig.RestartPolicy).toEqual({ Name: 'unless-stopped', MaximumRetryCount: 0 });
  });

  it('drops an empty restart policy name', () => {
    const s = capture((i) => {
      hc(i).RestartPolicy = { Name: '', MaximumRetryCount: 0 };
    });
    expect(s.hostConfig).not.toHaveProperty('RestartPolicy');
  });

  it('keeps explicitly empty MaskedPaths/ReadonlyPaths (systempaths=unconfined), unless privileged', () => {
    const unconfined = capture((i) => {
      hc(i).MaskedPaths = [];
      hc(i).ReadonlyPaths = [];
    });
    expect(unconfined.hostConfig.MaskedPaths).toEqual([]);
    expect(unconfined.hostConfig.ReadonlyPaths).toEqual([]);
    const privileged = capture((i) => {
      hc(i).Privileged = true;
      hc(i).MaskedPaths = [];
      hc(i).ReadonlyPaths = [];
    });
    expect(privileged.hostConfig.Privileged).toBe(true);
    expect(privileged.hostConfig).not.toHaveProperty('MaskedPaths');
    expect(privileged.hostConfig).not.toHaveProperty('ReadonlyPaths');
  });

  it('records Env and Labels whole when the image is a ferry snapshot (a container ferry restored)', () => {
    const img = imageConfig();
    const inspect = webInspect();
    const plain = captureSpec({ inspect, imageConfig: img });
    expect(plain.config.Env).toEqual(['API_TOKEN=abc123', 'WEB_MODE=production']);
    const snap = captureSpec({ inspect: webInspect(), imageConfig: { ...inspect.Config }, fromSnapshot: true });
    expect(snap.config.Env).toEqual(inspect.Config.Env);
    expect(snap.config.Labels).toEqual(inspect.Config.Labels);
    // without the flag, a snapshot's config would hide them all
    const hidden = captureSpec({ inspect: webInspect(), imageConfig: { ...inspect.Config } });
    expect(hidden.config.Env).toBeUndefined();
    expect(hidden.config.Labels).toBeUndefined();
    expect(isFerrySnapshot({ Comment: 'ferry snapshot of web' })).toBe(true);
    expect(isFerrySnapshot({ Comment: 'built by ci' })).toBe(false);
    expect(isFerrySnapshot(undefined)).toBe(false);
  });

  it('records the image it diffed against as the origin (the lineage a snapshot carries)', () => {
    const img = imageConfig();
    const spec = captureSpec({ inspect: webInspect(), imageConfig: img });
    expect(spec.origin?.ref).toBe(spec.baseImage.ref);
    expect(spec.origin?.id).toBe(IMAGE_ID);
    expect(spec.origin?.config.Env).toEqual(img.Env);
    expect(spec.origin?.config.Cmd).toEqual(img.Cmd);
    // only the fields captureSpec compares, and none that is empty
    expect(Object.keys(spec.origin!.config).sort()).toEqual(
      [
        'Cmd',
        'Entrypoint',
        'Env',
        'ExposedPorts',
        'Labels',
        'Volumes',
        'WorkingDir',
        'User',
        'StopSignal',
        'Shell',
        'Healthcheck',
      ]
        .filter((k) => {
          const v = img[k];
          return (
            v !== null &&
            v !== undefined &&
            v !== '' &&
            !(Array.isArray(v) && !v.length) &&
            !(typeof v === 'object' && !Array.isArray(v) && !Object.keys(v as object).length)
          );
        })
        .sort(),
    );
    // no image config (the image is gone): no origin
    expect(captureSpec({ inspect: webInspect(), imageConfig: undefined }).origin).toBeUndefined();
  });

  it('diffs a container on a snapshot with lineage against its origin image: every generation records the same', () => {
    const img = imageConfig();
    const gen1 = captureSpec({ inspect: webInspect(), imageConfig: img });
    // The snapshot's config is the container's whole config, as a commit makes it; the restored
    // container runs on it with the same settings.
    const restored = webInspect();
    const snapshotConfig = { ...restored.Config, Labels: { ...restored.Config.Labels } };
    const author = lineageAuthor(gen1.origin!);
    const gen2 = captureSpec({
      inspect: restored,
      imageConfig: snapshotConfig,
      fromSnapshot: true,
      origin: parseLineage(author),
    });
    expect(gen2.config).toEqual(gen1.config);
    expect(gen2.origin).toEqual(gen1.origin);
    expect(gen2.config.Env).toEqual(['API_TOKEN=abc123', 'WEB_MODE=production']);
    // a snapshot of an older ferry (no lineage): Env and Labels whole, as before
    const old = captureSpec({ inspect: webInspect(), imageConfig: snapshotConfig, fromSnapshot: true });
    expect(old.config.Env).toEqual(restored.Config.Env);
    expect(old.origin).toBeUndefined();
  });

  it('reads a lineage only from an Author ferry wrote', () => {
    const o = originImage('example/web:1.4', IMAGE_ID, { Env: ['A=1'], Labels: { a: 'b' }, Hostname: 'x' });
    expect(o.config).toEqual({ Env: ['A=1'], Labels: { a: 'b' } });
    expect(parseLineage(lineageAuthor(o))).toEqual(o);
    for (const bad of [
      undefined,
      '',
      'Jane <jane@example.com>',
      '{',
      '{}',
      '{"ferry.origin-image":"x"}',
      '{"ferry.origin-image":{"ref":1,"id":"a","config":{}}}',
      '{"ferry.origin-image":{"ref":"a","id":"b","config":[]}}',
    ])
      expect(parseLineage(bad), String(bad)).toBeUndefined();
  });

  it('captures mounts with their origin and flags the anonymous volume', () => {
    const s = capture();
    expect(s.mounts).toEqual([
      { type: 'volume', source: 'webdata', destination: '/srv/data', readOnly: true, origin: 'binds' },
      { type: 'bind', source: '/etc/web/conf.d', destination: '/etc/web/conf.d', readOnly: false, origin: 'binds' },
      { type: 'volume', source: 'weblogs', destination: '/var/log/web', readOnly: false, origin: 'mounts' },
      {
        type: 'volume',
        source: ANON,
        destination: '/var/cache/web',
        readOnly: false,
        anonymous: true,
        origin: 'implicit',
      },
    ]);
    expect(s.mounts.filter((m) => m.anonymous).map((m) => m.source)).toEqual([ANON]);
  });

  it('does not flag a 64-hex volume the user named explicitly in Binds as anonymous', () => {
    const s = capture((i) => {
      hc(i).Binds = [`${ANON}:/var/cache/web`];
    });
    const m = s.mounts.find((x) => x.destination === '/var/cache/web')!;
    expect(m.anonymous).toBeUndefined();
    expect(m.origin).toBe('binds');
  });

  it('captures endpoints primary first, without the short-id alias', () => {
    const s = capture();
    expect(s.endpoints).toEqual([
      { network: 'frontnet', aliases: ['web-alias'], ipv4Address: '172.20.0.10' },
      { network: 'backnet', aliases: ['db-client'] },
    ]);
  });

  it('treats network mode "default" as bridge for the primary endpoint and keeps links and driver opts', () => {
    const s = capture((i) => {
      hc(i).NetworkMode = 'default';
      (i.NetworkSettings as Json).Networks = {
        appnet: {
          IPAMConfig: { IPv6Address: 'fd00::10' },
          Links: ['db:database'],
          Aliases: [ID],
          DriverOpts: { 'com.example.opt': '1' },
        },
        bridge: { IPAMConfig: null, Links: null, Aliases: null, DriverOpts: null },
      };
    });
    expect(s.endpoints).toEqual([
      { network: 'bridge' },
      { network: 'appnet', ipv6Address: 'fd00::10', links: ['db:database'], driverOpts: { 'com.example.opt': '1' } },
    ]);
  });
});

describe('parseBind', () => {
  it('parses a named volume with options', () => {
    expect(parseBind('vol:/data:ro')).toEqual({ source: 'vol', destination: '/data', options: 'ro' });
  });
  it('parses a host path without options', () => {
    expect(parseBind('/etc/web:/etc/web')).toEqual({ source: '/etc/web', destination: '/etc/web', options: undefined });
  });
  it('keeps every option after the destination', () => {
    expect(parseBind('/srv:/srv:ro,z:nocopy')).toEqual({ source: '/srv', destination: '/srv', options: 'ro,z:nocopy' });
  });
  it('parses a bare container path (anonymous)', () => {
    expect(parseBind('/data')).toEqual({ source: '', destination: '/data' });
  });
});

describe('networks', () => {
  const inspectNet = (): Json => ({
    Name: 'frontnet',
    Id: '3333333333333333333333333333333333333333333333333333333333333333',
    Created: '2024-03-01T09:59:00.000000000Z',
    Scope: 'local',
    Driver: 'bridge',
    EnableIPv6: true,
    IPAM: { Driver: 'default', Options: {}, Config: [{ Subnet: '172.20.0.0/16', Gateway: '172.20.0.1' }] },
    Internal: true,
    Attachable: true,
    Ingress: false,
    ConfigFrom: { Network: '' },
    ConfigOnly: false,
    Containers: { [ID]: { Name: 'web', IPv4Address: '172.20.0.10/16' } },
    Options: { 'com.docker.network.bridge.name': 'br-front' },
    Labels: { 'com.example.env': 'prod' },
  });

  it('captureNetwork keeps what network create needs', () => {
    expect(captureNetwork(inspectNet())).toEqual({
      name: 'frontnet',
      driver: 'bridge',
      internal: true,
      attachable: true,
      enableIPv6: true,
      ipam: { Driver: 'default', Config: [{ Subnet: '172.20.0.0/16', Gateway: '172.20.0.1' }], Options: {} },
      options: { 'com.docker.network.bridge.name': 'br-front' },
      labels: { 'com.example.env': 'prod' },
    });
  });

  it('captureNetwork copies IPAM config entries and tolerates nulls', () => {
    const n = inspectNet();
    const spec = captureNetwork(n);
    ((n.IPAM as Json).Config as Json[])[0]!.Subnet = '10.0.0.0/8';
    expect(spec.ipam!.Config![0]!.Subnet).toBe('172.20.0.0/16');

    const bare = captureNetwork({
      Name: 'plain',
      IPAM: { Driver: null, Config: null, Options: null },
      Options: null,
      Labels: null,
    });
    expect(bare).toEqual({
      name: 'plain',
      driver: 'bridge',
      internal: false,
      attachable: false,
      enableIPv6: false,
      ipam: { Driver: 'default', Config: [], Options: undefined },
      options: undefined,
      labels: undefined,
    });
  });

  it('networkCreateOptions merges extra labels and asks for duplicate checks', () => {
    const spec = captureNetwork(inspectNet());
    expect(networkCreateOptions(spec, { 'io.ferry.restored': 'true' })).toEqual({
      Name: 'frontnet',
      Driver: 'bridge',
      Internal: true,
      Attachable: true,
      EnableIPv6: true,
      IPAM: { Driver: 'default', Config: [{ Subnet: '172.20.0.0/16', Gateway: '172.20.0.1' }], Options: {} },
      Options: { 'com.docker.network.bridge.name': 'br-front' },
      Labels: { 'com.example.env': 'prod', 'io.ferry.restored': 'true' },
      CheckDuplicate: true,
    });
    const bare = networkCreateOptions({
      name: 'n',
      driver: 'overlay',
      internal: false,
      attachable: false,
      enableIPv6: false,
    });
    expect(bare.Options).toEqual({});
    expect(bare.Labels).toEqual({});
  });

  it('isUserNetwork', () => {
    for (const n of ['bridge', 'host', 'none', 'default', `container:${ID}`]) expect(isUserNetwork(n), n).toBe(false);
    for (const n of ['frontnet', 'my_bridge', 'hostnet']) expect(isUserNetwork(n), n).toBe(true);
  });
});

describe('createPlan', () => {
  const volumeNames = {
    webdata: 'webdata-restored',
    weblogs: 'weblogs-restored',
    [ANON]: 'web-cache-1',
    '/etc/web/conf.d': 'nope',
  };

  it('renames volumes in Binds (keeping options) and in Mounts', () => {
    const spec = capture();
    const { body } = createPlan(spec, 'ferry/web:restored', { volumeNames });
    const h = body.HostConfig as Json;
    expect(h.Binds).toEqual(['webdata-restored:/srv/data:ro', '/etc/web/conf.d:/etc/web/conf.d']);
    expect(h.Mounts).toEqual([{ Type: 'volume', Source: 'weblogs-restored', Target: '/var/log/web' }]);
    // the spec itself is untouched
    expect(spec.hostConfig.Binds).toEqual(['webdata:/srv/data:ro', '/etc/web/conf.d:/etc/web/conf.d']);
    expect(spec.hostConfig.Mounts).toEqual([{ Type: 'volume', Source: 'weblogs', Target: '/var/log/web' }]);
  });

  it('declares an anonymous volume instead of mounting it by name, so that it stays anonymous', () => {
    const spec = capture();
    const { body } = createPlan(spec, 'ferry/web:restored', { volumeNames });
    // the engine makes a fresh anonymous volume at create; never a mount of a 64-hex volume by name
    expect(body.Volumes).toEqual({ '/var/cache/web': {} });
    const h = body.HostConfig as Json;
    expect(JSON.stringify(h)).not.toContain('web-cache-1');
    expect(JSON.stringify(h)).not.toContain(ANON);
    // and the next generation (the restored container, inspected) records it as anonymous again
    const again = capture((i) => {
      hc(i).Mounts = h.Mounts as Json[];
      i.Mounts = [
        ...(i.Mounts ?? []).filter((m) => m.Destination !== '/var/cache/web'),
        { ...(i.Mounts ?? []).find((m) => m.Destination === '/var/cache/web')!, Name: 'e'.repeat(64) },
      ];
    });
    expect(again.mounts.find((m) => m.destination === '/var/cache/web')).toMatchObject({
      source: 'e'.repeat(64),
      anonymous: true,
      origin: 'implicit',
    });
  });

  it('renames a bind without options', () => {
    const spec = capture((i) => {
      hc(i).Binds = ['webdata:/srv/data'];
    });
    const h = createPlan(spec, 'img', { volumeNames }).body.HostConfig as Json;
    expect(h.Binds).toEqual(['webdata-restored:/srv/data']);
  });

  it('leaves volumes alone without a rename map and adds no implicit mount', () => {
    const spec = capture();
    const h = createPlan(spec, 'img').body.HostConfig as Json;
    expect(h.Binds).toEqual(['webdata:/srv/data:ro', '/etc/web/conf.d:/etc/web/conf.d']);
    expect(h.Mounts).toEqual([{ Type: 'volume', Source: 'weblogs', Target: '/var/log/web' }]);
  });

  it('has no Mounts key when there is nothing to mount', () => {
    const spec = capture((i) => {
      hc(i).Mounts = null;
      i.Mounts = [];
    });
    expect(createPlan(spec, 'img', { volumeNames }).body.HostConfig).not.toHaveProperty('Mounts');
  });

  it('builds the body from config, image and host config', () => {
    const spec = capture();
    const { body } = createPlan(spec, 'ferry/web:restored');
    expect(body.Image).toBe('ferry/web:restored');
    expect(body.Env).toEqual(['API_TOKEN=abc123', 'WEB_MODE=production']);
    expect(body.Labels).toEqual({ 'com.example.tier': 'front', 'org.opencontainers.image.version': '1.4-custom' });
    expect((body.HostConfig as Json).NetworkMode).toBe('frontnet');
    expect((body.HostConfig as Json).Memory).toBe(536870912);
  });

  it('puts only the first endpoint in NetworkingConfig when the engine takes one', () => {
    const spec = capture();
    const plan = createPlan(spec, 'img', { multiEndpoint: false });
    expect(plan.body.NetworkingConfig).toEqual({
      EndpointsConfig: { frontnet: { Aliases: ['web-alias'], IPAMConfig: { IPv4Address: '172.20.0.10' } } },
    });
    expect(plan.laterEndpoints).toEqual([{ network: 'backnet', aliases: ['db-client'] }]);
  });

  it('puts every endpoint in NetworkingConfig when the engine takes several', () => {
    const spec = capture();
    const plan = createPlan(spec, 'img', { multiEndpoint: true });
    expect(plan.body.NetworkingConfig).toEqual({
      EndpointsConfig: {
        frontnet: { Aliases: ['web-alias'], IPAMConfig: { IPv4Address: '172.20.0.10' } },
        backnet: { Aliases: ['db-client'] },
      },
    });
    expect(plan.laterEndpoints).toEqual([]);
  });

  it('passes links, driver options and IPv6 addresses through', () => {
    const spec: ContainerSpec = {
      ...capture(),
      endpoints: [
        {
          network: 'n1',
          ipv4Address: '10.0.0.2',
          ipv6Address: 'fd00::2',
          links: ['db:database'],
          driverOpts: { a: 'b' },
        },
      ],
    };
    expect(createPlan(spec, 'img').body.NetworkingConfig).toEqual({
      EndpointsConfig: {
        n1: {
          IPAMConfig: { IPv4Address: '10.0.0.2', IPv6Address: 'fd00::2' },
          Links: ['db:database'],
          DriverOpts: { a: 'b' },
        },
      },
    });
  });

  it.each(['host', 'none', `container:vpn`])('has no NetworkingConfig in %s mode', (mode) => {
    const spec = capture();
    spec.hostConfig.NetworkMode = mode;
    for (const multiEndpoint of [false, true]) {
      const plan = createPlan(spec, 'img', { multiEndpoint });
      expect(plan.body).not.toHaveProperty('NetworkingConfig');
      expect(plan.laterEndpoints).toEqual([]);
    }
  });

  it('has no NetworkingConfig when there are no endpoints', () => {
    const spec = { ...capture(), endpoints: [] };
    const plan = createPlan(spec, 'img');
    expect(plan.body).not.toHaveProperty('NetworkingConfig');
    expect(plan.laterEndpoints).toEqual([]);
  });
});

describe('secretLikeEnvNames', () => {
  it('names variables that look like secrets, never values', () => {
    expect(
      secretLikeEnvNames([
        'API_TOKEN=abc123',
        'PATH=/usr/bin',
        'DB_PASSWORD=hunter2',
        'AWS_SECRET_ACCESS_KEY=x',
        'LANG=C.UTF-8',
        'GITHUB_AUTH=y',
        'SMTP_CREDENTIALS=z',
        'passphrase=w',
        'EMPTY',
      ]),
    ).toEqual(['API_TOKEN', 'DB_PASSWORD', 'AWS_SECRET_ACCESS_KEY', 'GITHUB_AUTH', 'SMTP_CREDENTIALS', 'passphrase']);
  });
  it('handles no env', () => {
    expect(secretLikeEnvNames(undefined)).toEqual([]);
    expect(secretLikeEnvNames([])).toEqual([]);
  });
});

describe('a container captured from Podman', () => {
  // What Podman's Docker-compatible API reports for `podman run -v data:/data --ulimit ...` on its default network.
  function podmanInspect(): CaptureInput['inspect'] {
    const i = webInspect();
    const h = hc(i);
    h.NetworkMode = 'bridge';
    h.Runtime = 'oci';
    h.Binds = ['data:/data:rw,rprivate,nosuid,nodev,rbind', 'conf:/etc/conf:ro,rprivate,rbind'];
    h.Ulimits = [{ Name: 'RLIMIT_NOFILE', Soft: 1024, Hard: 2048 }];
    (i.Config as Record<string, unknown>).Env = [...((i.Config as { Env: string[] }).Env ?? []), `HOSTNAME=${SHORT}`];
    (i as Record<string, unknown>).NetworkSettings = { Networks: { podman: { Aliases: [SHORT] } } };
    return i;
  }

  it('records Podman\'s defaults in Docker\'s terms: network bridge, no "oci" runtime, portable bind options, ulimit names, no HOSTNAME', () => {
    const s = captureSpec({ inspect: podmanInspect(), imageConfig: null, quirks: quirksFor({ podman: true }) });
    expect(s.endpoints.map((e) => e.network)).toEqual(['bridge']);
    expect(s.hostConfig.NetworkMode).toBe('bridge');
    expect(s.hostConfig.Runtime).toBeUndefined();
    expect(s.hostConfig.Binds).toEqual(['data:/data', 'conf:/etc/conf:ro']);
    expect(s.hostConfig.Ulimits).toEqual([{ Name: 'nofile', Soft: 1024, Hard: 2048 }]);
    expect((s.config.Env as string[]).some((e) => e.startsWith('HOSTNAME='))).toBe(false);
  });

  it("leaves a Docker container's spellings alone", () => {
    const s = captureSpec({ inspect: podmanInspect(), imageConfig: null });
    expect(s.endpoints.map((e) => e.network)).toEqual(['podman']);
    expect(s.hostConfig.Runtime).toBe('oci');
    expect(s.hostConfig.Binds).toEqual([
      'data:/data:rw,rprivate,nosuid,nodev,rbind',
      'conf:/etc/conf:ro,rprivate,rbind',
    ]);
  });

  it('drops Podman\'s "private" PID, UTS and user namespaces (Docker 26 refuses "invalid PID mode: private")', () => {
    const i = podmanInspect();
    Object.assign(hc(i), { PidMode: 'private', UTSMode: 'private', UsernsMode: 'private' });
    const s = captureSpec({ inspect: i, imageConfig: null, quirks: quirksFor({ podman: true }) });
    for (const k of ['PidMode', 'UTSMode', 'UsernsMode']) expect(s.hostConfig).not.toHaveProperty(k);
    // a bundle made before the capture dropped them is created without them too
    const old = { ...s, hostConfig: { ...s.hostConfig, PidMode: 'private', UTSMode: 'private' } };
    const h = createPlan(old, 'img').body.HostConfig as Record<string, unknown>;
    expect(h).not.toHaveProperty('PidMode');
    expect(h).not.toHaveProperty('UTSMode');
    // a real setting stays
    const host = { ...s, hostConfig: { ...s.hostConfig, PidMode: 'host' } };
    expect((createPlan(host, 'img').body.HostConfig as Record<string, unknown>).PidMode).toBe('host');
  });

  it('is created on Podman on its default network, whose name is not "bridge"', () => {
    const s = captureSpec({ inspect: podmanInspect(), imageConfig: null, quirks: quirksFor({ podman: true }) });
    const p = createPlan(s, 'img', { multiEndpoint: true, bridge: 'podman' });
    expect((p.body.HostConfig as Record<string, unknown>).NetworkMode).toBe('podman');
    expect(Object.keys((p.body.NetworkingConfig as { EndpointsConfig: object }).EndpointsConfig)).toEqual(['podman']);
  });
});

describe('references between containers', () => {
  const bare = (
    name: string,
    hostConfig: Record<string, unknown> = {},
    endpoints: ContainerSpec['endpoints'] = [],
  ): ContainerSpec => ({
    name,
    sourceId: name,
    state: { running: true, paused: false },
    baseImage: { ref: 'x', id: 'x' },
    config: {},
    hostConfig,
    endpoints,
    mounts: [],
  });
  const vpn = bare('vpn');
  const app = bare('app', { NetworkMode: 'container:vpn', IpcMode: 'container:db', VolumesFrom: ['data:ro'] });
  const web = bare('web', { Links: ['/app:/web/backend', 'cache'] }, [{ network: 'front', links: ['db:database'] }]);
  const db = bare('db', { PidMode: 'container:outside' });
  const data = bare('data');

  it('finds network/IPC/PID container modes, volumes-from and links', () => {
    expect(containerRefs(app).sort()).toEqual(['data', 'db', 'vpn']);
    expect(containerRefs(web).sort()).toEqual(['app', 'cache', 'db']);
    expect(containerRefs(vpn)).toEqual([]);
  });

  it('orders each container after the ones of the set it refers to, otherwise as given', () => {
    const specs = [web, app, db, vpn, data];
    expect(dependencyOrder(specs).map((i) => specs[i]!.name)).toEqual(['vpn', 'db', 'data', 'app', 'web']);
    expect(dependencyOrder([vpn, data]).map((i) => [vpn, data][i]!.name)).toEqual(['vpn', 'data']);
  });

  it('orders Compose services after those they depend on (v2 label), within their project only', () => {
    const svc = (name: string, project: string, service: string, dependsOn?: string): ContainerSpec => ({
      ...bare(name),
      config: {
        Labels: {
          'com.docker.compose.project': project,
          'com.docker.compose.service': service,
          ...(dependsOn ? { 'com.docker.compose.depends_on': dependsOn } : {}),
        },
      },
    });
    const specs = [
      svc('shop-web-1', 'shop', 'web', 'api:service_started:false,db:service_healthy:true'),
      svc('shop-api-1', 'shop', 'api', 'db:service_healthy:false'),
      svc('blog-db-1', 'blog', 'db'), // another project's db: not a dependency of shop's services
      svc('shop-db-1', 'shop', 'db'),
    ];
    expect(dependencyOrder(specs).map((i) => specs[i]!.name)).toEqual([
      'shop-db-1',
      'shop-api-1',
      'shop-web-1',
      'blog-db-1',
    ]);
  });

  it('keeps the given order inside a cycle and still lists everything once', () => {
    const a = bare('a', { VolumesFrom: ['b'] });
    const b = bare('b', { VolumesFrom: ['a'] });
    expect(dependencyOrder([a, b, vpn])).toEqual([1, 0, 2]);
  });

  it('renames references to the containers that got new names, in every form', () => {
    const out = renameContainerRefs(app, { vpn: 'vpn-restored', db: 'db', data: 'data-2' });
    expect(out.hostConfig).toMatchObject({
      NetworkMode: 'container:vpn-restored',
      IpcMode: 'container:db',
      VolumesFrom: ['data-2:ro'],
    });
    const w = renameContainerRefs(web, { app: 'app-2', db: 'db-2' });
    expect(w.hostConfig.Links).toEqual(['app-2:backend', 'cache']);
    expect(w.endpoints[0]!.links).toEqual(['db-2:database']);
    expect(renameContainerRefs(web, { app: 'app', other: 'x' })).toBe(web);
    expect(web.hostConfig.Links).toEqual(['/app:/web/backend', 'cache']);
  });
});

describe('referenceGroups (backup --all)', () => {
  const id = (c: string) => c.repeat(64);
  it('puts containers that refer to each other, by name or by id, into one group; the rest alone', () => {
    const list = [
      { id: id('a'), name: 'web', refs: ['cache'] },
      { id: id('b'), name: 'vpn', refs: [] },
      { id: id('c'), name: 'torrent', refs: [id('b')] }, // --network container:<id>, as inspect shows it
      { id: id('d'), name: 'cache', refs: [] },
      { id: id('e'), name: 'solo', refs: ['gone'] }, // a container that is not running: ignored
      { id: id('f'), name: 'backup-agent', refs: ['bbbbbbbbbbbb'] }, // a unique id prefix
    ];
    expect(referenceGroups(list)).toEqual([['web', 'cache'], ['vpn', 'torrent', 'backup-agent'], ['solo']]);
  });

  it('keeps the containers of one Compose project together, with or without references', () => {
    const list = [
      { id: id('a'), name: 'shop_web_1', refs: [], project: 'shop' },
      { id: id('b'), name: 'solo', refs: [] },
      { id: id('c'), name: 'blog_db_1', refs: [], project: 'blog' },
      { id: id('d'), name: 'shop_db_1', refs: [], project: 'shop' },
      { id: id('e'), name: 'sidecar', refs: ['blog_db_1'] },
      { id: id('f'), name: 'shop_worker_1', refs: [], project: 'shop' },
    ];
    expect(referenceGroups(list)).toEqual([
      ['shop_web_1', 'shop_db_1', 'shop_worker_1'],
      ['solo'],
      ['blog_db_1', 'sidecar'],
    ]);
  });

  it('reads the Compose project from labels; one-off `compose run` containers belong to none', () => {
    expect(composeProject({ 'com.docker.compose.project': 'shop', 'com.docker.compose.oneoff': 'False' })).toBe('shop');
    expect(
      composeProject({ 'com.docker.compose.project': 'shop', 'com.docker.compose.oneoff': 'True' }),
    ).toBeUndefined();
    expect(
      composeProject({ 'com.docker.compose.project': 'shop', 'com.docker.compose.oneoff': 'true' }),
    ).toBeUndefined();
    expect(composeProject({ other: 'x' })).toBeUndefined();
    expect(composeProject(null)).toBeUndefined();
    expect(
      withoutComposeLabels({
        'com.docker.compose.project': 'shop',
        'com.docker.compose.service': 'web',
        'ferry.pre-exec': 'sync',
        'com.docker.composer': 'x',
      }),
    ).toEqual({
      'ferry.pre-exec': 'sync',
      'com.docker.composer': 'x',
    });
    expect(withoutComposeLabels(undefined)).toEqual({});
  });

  it('empties the Compose labels of a copy, its own and those its image brings', () => {
    const image = { 'com.docker.compose.project': 'shop', 'com.docker.compose.service': 'web', maintainer: 'x' };
    expect(detachedFromCompose({ 'com.docker.compose.project': 'shop', app: 'web' }, image)).toEqual({
      app: 'web',
      'com.docker.compose.project': '',
      'com.docker.compose.service': '',
    });
    expect(detachedFromCompose({ 'io.ferry.drill': 'abc' }, image)).toEqual({
      'io.ferry.drill': 'abc',
      'com.docker.compose.project': '',
      'com.docker.compose.service': '',
    });
    expect(detachedFromCompose({ app: 'web' }, { maintainer: 'x' })).toBeUndefined();
    expect(detachedFromCompose(undefined, null)).toBeUndefined();
  });

  it('reads the references from docker inspect', () => {
    expect(
      inspectRefs({
        HostConfig: { NetworkMode: 'container:' + id('b'), VolumesFrom: ['data:ro'], Links: null },
        NetworkSettings: { Networks: { shop: { Links: ['db:database'] }, other: { Links: null } } },
      }).sort(),
    ).toEqual([id('b'), 'data', 'db'].sort());
    expect(inspectRefs({ HostConfig: { NetworkMode: 'default' } })).toEqual([]);
  });
});

describe('ipv4SubnetsOverlap', () => {
  it.each([
    ['172.21.0.0/16', '172.21.0.0/16', true],
    ['172.21.0.0/16', '172.21.5.0/24', true],
    ['172.21.5.0/24', '172.21.0.0/16', true],
    ['172.21.0.0/24', '172.21.1.0/24', false],
    ['10.0.0.0/8', '172.16.0.0/12', false],
    ['fd00::/64', '172.21.0.0/16', undefined],
  ])('%s and %s: %s', (a, b, want) => {
    expect(ipv4SubnetsOverlap(a, b)).toBe(want);
  });
});

describe('ipv4InSubnet', () => {
  it.each([
    ['172.30.77.10', '172.30.0.0/16', true],
    ['172.31.0.1', '172.30.0.0/16', false],
    ['10.0.0.255', '10.0.0.0/24', true],
    ['10.0.1.0', '10.0.0.0/24', false],
    ['192.168.1.7', '192.168.1.7/32', true],
    ['1.2.3.4', '0.0.0.0/0', true],
    ['fd00::10', '172.30.0.0/16', undefined],
    ['10.0.0.1', 'fd00::/64', undefined],
    ['10.0.0.300', '10.0.0.0/8', undefined],
    ['10.0.0.1', '10.0.0.0/33', undefined],
  ])('%s in %s: %s', (a, cidr, want) => expect(ipv4InSubnet(a, cidr)).toBe(want));
});
