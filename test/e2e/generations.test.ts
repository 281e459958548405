/**
 * Fidelity across generations (issue 22): a container restored by ferry and backed up again keeps
 * its settings through restore -> backup -> restore -> backup -> restore. Each generation's
 * `docker inspect` is compared field by field with the original's (the settings docs/format.md
 * says a ContainerSpec keeps), its volumes' data with the original's, and its anonymous volumes
 * stay anonymous: the engine makes them at create (no mount by name), so a copy restored beside
 * it (`--name`) gets its own and a later generation never carries a 64-hex name along.
 * Runs on engine A and, in the containerd run, on engine C.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ferry,
  freePort,
  inspect,
  removeSnapshots,
  uid,
  volumeListing,
} from '../helpers/lab.js';

const ANON = /^[0-9a-f]{64}$/;

/** Empty values (null, [], {}, '') as absent: ferry keeps a setting only when it is not empty. */
function norm(v: unknown): unknown {
  if (v === null || v === '' || (Array.isArray(v) && !v.length)) return undefined;
  if (typeof v === 'object' && v && !Array.isArray(v) && !Object.keys(v).length) return undefined;
  return v;
}

/** What ferry promises to keep of a container (docs/format.md, ContainerSpec), as `docker inspect` shows it. */
function settings(c: any, net: string) {
  const short = c.Id.slice(0, 12);
  const hc = c.HostConfig;
  const kept = {
    Hostname: c.Config.Hostname,
    Domainname: c.Config.Domainname,
    User: c.Config.User,
    WorkingDir: c.Config.WorkingDir,
    Entrypoint: c.Config.Entrypoint,
    Cmd: c.Config.Cmd,
    Env: [...(c.Config.Env as string[])].sort(),
    Labels: c.Config.Labels,
    ExposedPorts: c.Config.ExposedPorts,
    Volumes: c.Config.Volumes,
    Healthcheck: c.Config.Healthcheck,
    StopSignal: c.Config.StopSignal,
    StopTimeout: c.Config.StopTimeout,
    Tty: c.Config.Tty,
    OpenStdin: c.Config.OpenStdin,
    PortBindings: hc.PortBindings,
    RestartPolicy: hc.RestartPolicy,
    NetworkMode: hc.NetworkMode,
    CapAdd: hc.CapAdd,
    CapDrop: hc.CapDrop,
    Ulimits: hc.Ulimits,
    LogConfig: hc.LogConfig,
    Tmpfs: hc.Tmpfs,
    ExtraHosts: hc.ExtraHosts,
    Dns: hc.Dns,
    DnsSearch: hc.DnsSearch,
    Memory: hc.Memory,
    PidsLimit: hc.PidsLimit,
    Init: hc.Init,
    ShmSize: hc.ShmSize,
    SecurityOpt: hc.SecurityOpt,
    GroupAdd: hc.GroupAdd,
    Sysctls: hc.Sysctls,
    ReadonlyRootfs: hc.ReadonlyRootfs,
    Binds: hc.Binds,
    Mounts: hc.Mounts,
    mounts: (c.Mounts as any[])
      .map((m) => ({
        Type: m.Type,
        Destination: m.Destination,
        RW: m.RW,
        // a named volume keeps its name; an anonymous one gets a new 64-hex name
        Name: m.Type === 'volume' ? (ANON.test(m.Name) ? 'anonymous' : m.Name) : undefined,
      }))
      .sort((a, b) => a.Destination.localeCompare(b.Destination)),
    networks: Object.fromEntries(
      Object.entries(c.NetworkSettings.Networks as Record<string, any>).map(([n, e]) => [
        n,
        {
          Aliases: ((e.Aliases ?? []) as string[]).filter((a) => a !== short).sort(),
          IPAMConfig: e.IPAMConfig,
        },
      ]),
    ),
    net: !!c.NetworkSettings.Networks[net],
  };
  return Object.fromEntries(Object.entries(kept).map(([k, v]) => [k, norm(v)]));
}

describe('three generations of restore and backup', () => {
  const name = uid('gen');
  const vol = `${name}-data`;
  const net = `${name}-net`;
  const image = `ferry-test/gen-${name}:1`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-e2e-gen-'));
  let original: any;
  let port = 0;
  const listings: Record<string, string> = {};
  const copies: string[] = [];
  const leftVolumes: string[] = [];
  /** The first generation's spec (config with env names only, and host config), from ferry inspect --json. */
  const recorded: { config?: unknown; hostConfig?: unknown } = {};

  const anonOf = (c: any, dest: string): string => (c.Mounts as any[]).find((m) => m.Destination === dest).Name;

  beforeAll(async () => {
    // An image with a VOLUME, env and labels of its own, as a real service's has.
    docker(['create', '--name', `${name}-build`, BUSYBOX, 'true']);
    docker([
      'commit',
      '-c',
      'VOLUME /imgvol',
      '-c',
      'ENV IMG_ENV=from-image',
      '-c',
      'LABEL img.label=from-image',
      '-c',
      'CMD ["sh", "-c", "sleep 100000"]',
      `${name}-build`,
      image,
    ]);
    docker(['rm', `${name}-build`]);
    port = await freePort();
    docker(['network', 'create', '--subnet', '172.30.78.0/24', net]);
    docker(['volume', 'create', vol]);
    docker([
      'run',
      '-d',
      '--name',
      name,
      '--hostname',
      'genhost',
      '--domainname',
      'example.test',
      '--network',
      net,
      '--network-alias',
      'genalias',
      '--ip',
      '172.30.78.10',
      '-p',
      `127.0.0.1:${port}:8080`,
      '--expose',
      '9090',
      '-e',
      'PLAIN=1',
      '-e',
      'DB_PASSWORD=s3cret',
      '--label',
      'app=gen',
      '--restart',
      'on-failure:3',
      '--cap-add',
      'NET_ADMIN',
      '--cap-drop',
      'MKNOD',
      '--ulimit',
      'nofile=1024:2048',
      '--log-opt',
      'max-size=1m',
      '--tmpfs',
      '/run/t:size=1m',
      '--add-host',
      'foo.example:10.1.2.3',
      '--dns-search',
      'gen.example',
      '--memory',
      '64m',
      '--pids-limit',
      '100',
      '--init',
      '--shm-size',
      '32m',
      '--security-opt',
      'no-new-privileges',
      '--group-add',
      '123',
      '--sysctl',
      'net.ipv4.ip_unprivileged_port_start=0',
      '--user',
      '0:0',
      '--workdir',
      '/data',
      '--stop-timeout',
      '7',
      '--stop-signal',
      'SIGUSR1',
      '--health-cmd',
      'true',
      '--health-interval',
      '30s',
      '--entrypoint',
      'sh',
      '-v',
      `${vol}:/data`,
      '-v',
      '/anon',
      image,
      '-c',
      'exec sleep 100000',
    ]);
    docker(['exec', name, 'sh', '-c', 'echo named > /data/f; echo anon > /anon/f; echo img > /imgvol/f']);
    original = inspect('container', name);
    listings.data = volumeListing(vol);
    listings.anon = volumeListing(anonOf(original, '/anon'));
    listings.imgvol = volumeListing(anonOf(original, '/imgvol'));
  });

  afterAll(() => {
    cleanup(ENGINE_A, {
      containers: [name, ...copies],
      volumes: [vol, ...leftVolumes],
      networks: [net],
    });
    removeSnapshots([name, ...copies], [ENGINE_A]);
    cleanup(ENGINE_A, { images: [image] });
    rmSync(dir, { recursive: true, force: true });
  });

  /** One generation: back up, remove, restore; then compare, and restore a copy beside it. */
  async function generation(gen: number, env: Record<string, string> = {}) {
    const file = path.join(dir, `gen${gen}.tar`);
    const b = await ferry(['backup', name, '-o', file, '--json'], { env });
    expect(b.code, b.stderr).toBe(0);
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', file], { env });
    expect(r.code, `generation ${gen}: ${r.stderr}`).toBe(0);
    const now = inspect('container', name);
    expect(settings(now, net), `generation ${gen}`).toEqual(settings(original, net));
    expect(now.State.Running, `generation ${gen}`).toBe(true);
    expect(volumeListing(vol), `generation ${gen}`).toBe(listings.data);
    for (const dest of ['anon', 'imgvol']) {
      const v = anonOf(now, `/${dest}`);
      expect(v, `generation ${gen}: /${dest}`).toMatch(ANON);
      expect(volumeListing(v), `generation ${gen}: /${dest}`).toBe(listings[dest]);
    }
    // ferry inspect still names the env and labels the container has
    const shown = await ferry(['inspect', file]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/DB_PASSWORD/);
    expect(shown.stdout).toMatch(/app=gen/);
    // ... and records exactly what the first generation did: diffed against the image the
    // original ran on (the snapshot's lineage), not against the snapshot it now runs on
    const j = await ferry(['inspect', file, '--json']);
    expect(j.code, j.stderr).toBe(0);
    const spec = JSON.parse(j.stdout).manifest.containers[0].spec;
    expect(spec.origin, `generation ${gen}`).toMatchObject({ ref: image, id: original.Image });
    if (gen === 1) {
      recorded.config = spec.config;
      recorded.hostConfig = spec.hostConfig;
      expect([...spec.config.Env].sort()).toEqual(['DB_PASSWORD', 'PLAIN']);
      expect(spec.config.Labels).toEqual({ app: 'gen' });
      expect(spec.config.Cmd).toEqual(['-c', 'exec sleep 100000']);
      expect(Object.keys(spec.config.ExposedPorts).sort()).toEqual(['8080/tcp', '9090/tcp']);
    } else {
      expect(spec.baseImage.ref, `generation ${gen}`).toMatch(/^ferry\//);
      expect(spec.config, `generation ${gen}`).toEqual(recorded.config);
      expect(spec.hostConfig, `generation ${gen}`).toEqual(recorded.hostConfig);
    }
    // a copy beside it: its own anonymous volumes, no conflict on the generation's names
    const copy = `${name}-copy${gen}`;
    copies.push(copy);
    const c = await ferry(['restore', file, '--name', copy, '--on-conflict', 'rename', '--no-start'], { env });
    expect(c.code, `generation ${gen} copy: ${c.stderr}`).toBe(0);
    const ci = inspect('container', copy);
    for (const dest of ['/anon', '/imgvol']) {
      expect(anonOf(ci, dest)).toMatch(ANON);
      expect(anonOf(ci, dest)).not.toBe(anonOf(now, dest));
      expect(volumeListing(anonOf(ci, dest))).toBe(listings[dest.slice(1)]);
    }
    // the copy's named volume (beside the original's: `<vol>-restored`, `-restored-2`, ...)
    for (const m of ci.Mounts as any[]) if (m.Type === 'volume' && !ANON.test(m.Name)) leftVolumes.push(m.Name);
    cleanup(ENGINE_A, { containers: [copy] });
  }

  it('every generation has the original settings, data and anonymous volumes', async () => {
    expect(ANON.test(anonOf(original, '/anon'))).toBe(true);
    expect(original.HostConfig.Mounts ?? []).toEqual([]);
    for (let gen = 1; gen <= 3; gen++) await generation(gen);
  });

  it('and through the engine (no host access to the volumes)', async () => {
    for (let gen = 4; gen <= 5; gen++) await generation(gen, { FERRY_HOST_VOLUMES: '0' });
  });
});
