/**
 * Preflight for what a container takes from the target when it starts (restore, migrate), before
 * anything changes: the engine's runtimes and drivers, the host's published ports and devices.
 * Without it, a missing driver, a port already taken or a device the new host lacks fails the
 * create or start after all of the data was written, and the rollback removes it all again. The
 * target is asked first: GET /info for runtimes and drivers; which of its running containers
 * publish those ports (named in the refusal); and, on Docker, through a helper started with the
 * same ports or devices (probeStart), whether the host can give the rest; and, the same way,
 * whether it can give the CPUs, memory, cgroup, sysctls, limits and security profiles the
 * container is created with (checkHostResources).
 */
import type { Engine } from '../../engine/engine.js';
import type { EngineQuirks } from '../../engine/quirks.js';
import { asString, type ContainerSpec } from '../../model/spec.js';
import { ConflictError, NotFoundError } from '../../errors.js';
import type { Progress } from '../../context.js';
import { probeHost, probeStart } from '../../data/volumes.js';

/** One fixed host port a container publishes. `ip` '' is every address. */
export interface PortClaim {
  ip: string;
  port: number;
  proto: string;
  /** The container's side, as the engine spells it (`80/tcp`). */
  containerPort: string;
}

/** What a running container on the target publishes (GET /containers/json `Ports`). */
export interface PortHeld {
  container: string;
  ip: string;
  port: number;
  proto: string;
}

/**
 * The fixed host ports a spec publishes (an empty or 0 host port, or a range, is the engine's
 * choice among free ones and cannot clash). None for a container on the host's network or on
 * another container's, where the engine ignores port bindings. Pure.
 */
export function portClaims(spec: Pick<ContainerSpec, 'hostConfig'>): PortClaim[] {
  const mode = asString(spec.hostConfig.NetworkMode);
  if (mode === 'host' || mode === 'none' || mode.startsWith('container:')) return [];
  const out: PortClaim[] = [];
  for (const [containerPort, bindings] of Object.entries(spec.hostConfig.PortBindings ?? {})) {
    const proto = containerPort.split('/')[1] ?? 'tcp';
    for (const b of bindings ?? []) {
      // One port; not an empty or 0 host port, nor a range: the engine picks one of those itself.
      const m = /^(\d+)(?:-(\d+))?$/.exec(b.HostPort ?? '');
      if (!m || Number(m[1]) === 0 || (m[2] !== undefined && m[2] !== m[1])) continue;
      const from = Number(m[1]);
      out.push({ ip: b.HostIp ?? '', port: from, proto, containerPort });
    }
  }
  return out;
}

const wildcard = (ip: string) => ip === '' || ip === '0.0.0.0' || ip === '::';

/** Whether two bindings of the same port and protocol exclude each other. Pure. */
export function portsOverlap(
  a: { ip: string; port: number; proto: string },
  b: { ip: string; port: number; proto: string },
): boolean {
  return a.port === b.port && a.proto === b.proto && (wildcard(a.ip) || wildcard(b.ip) || a.ip === b.ip);
}

export function describeClaim(c: { ip: string; port: number; proto: string }): string {
  return `${c.ip ? (c.ip.includes(':') ? `[${c.ip}]:` : `${c.ip}:`) : ''}${c.port}/${c.proto}`;
}

/** What the target's running containers publish, from the engine's container list. */
export function heldPorts(
  list: { Names?: string[]; Ports?: { IP?: string; PublicPort?: number; Type?: string }[] }[],
): PortHeld[] {
  return list.flatMap((c) => {
    const name = (c.Names?.[0] ?? '').replace(/^\//, '');
    return (c.Ports ?? [])
      .filter((p) => p.PublicPort)
      .map((p) => ({ container: name, ip: p.IP ?? '', port: p.PublicPort!, proto: p.Type ?? 'tcp' }));
  });
}

const IN_USE = /address already in use|port is already allocated/i;

/** A probe's answer when it is about a host port (Docker 20.10 and later), else undefined. */
function portRefusal(r: true | string | undefined): string | undefined {
  return typeof r === 'string' && (IN_USE.test(r) || /failed programming external connectivity/i.test(r))
    ? r
    : undefined;
}

function probePorts(engine: Engine, image: string, claims: PortClaim[]) {
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const c of claims) (bindings[c.containerPort] ??= []).push({ HostIp: c.ip, HostPort: String(c.port) });
  return probeStart(engine, image, { NetworkMode: 'bridge', PortBindings: bindings }, Object.keys(bindings));
}

/** The gist of an engine's refusal to publish a port: `listen tcp4 10.0.0.5:80: bind: cannot assign requested address`. Pure. */
export function bindReason(message: string): string {
  return /userland proxy: (.*)$/s.exec(message)?.[1]?.trim() ?? message.replace(/^.*\): /s, '').trim();
}

export interface StartCheckItem {
  spec: ContainerSpec;
  /** Whether this run starts it (else a clash is only a warning: it would fail at its first start). */
  start: boolean;
  /** Ports: a clash on one of these claims found only by probing the host is a warning (migrate --stop-source: the source may hold it on a shared host until it stops). */
  soft?: (c: PortClaim) => boolean;
}

/**
 * Refuse (ConflictError) when a container this run starts publishes a host port that a running
 * container on the target publishes too (not one this run replaces: `replacing`), or that the
 * host cannot bind (probed from `image()`, the holder image, asked for only when there is
 * something to probe; without one only containers are looked at).
 */
export async function checkHostPorts(
  engine: Engine,
  items: StartCheckItem[],
  opts: { replacing?: ReadonlySet<string>; image?: () => Promise<string | undefined>; progress: Progress },
): Promise<void> {
  const claimed = items.map((it) => ({ ...it, claims: portClaims(it.spec) })).filter((it) => it.claims.length);
  if (!claimed.length) return;
  const held = heldPorts(await engine.listContainers(false));
  // 1. What the target's running containers publish (not one this run replaces: it is gone by the start).
  const rows = claimed.map((it) => ({ it, problems: [] as string[], soft: [] as string[], probe: [] as PortClaim[] }));
  for (const row of rows)
    for (const c of row.it.claims) {
      const by = held.filter((h) => portsOverlap(c, h));
      const others = by.filter((h) => !opts.replacing?.has(h.container));
      if (others.length)
        row.problems.push(
          `${describeClaim(c)} (published by running container ${[...new Set(others.map((h) => h.container))].join(', ')})`,
        );
      else if (!by.length) row.probe.push(c);
    }
  // 2. The host, for the rest: all of them in one helper, then one at a time when that is
  //    refused (the engine names only the first port it cannot bind).
  const all = rows.flatMap((r) => r.probe);
  const image = all.length ? await opts.image?.() : undefined;
  if (image && portRefusal(await probePorts(engine, image, all)))
    for (const row of rows)
      for (const c of row.probe) {
        const r = portRefusal(await probePorts(engine, image, [c]));
        if (!r) continue;
        if (!IN_USE.test(r))
          row.problems.push(`${describeClaim(c)} (cannot be bound on the engine's host: ${bindReason(r)})`);
        else if (row.it.soft?.(c)) row.soft.push(describeClaim(c));
        else row.problems.push(`${describeClaim(c)} (in use on the engine's host, outside any container of it)`);
      }
  const refused: string[] = [];
  for (const { it, problems, soft } of rows) {
    if (soft.length)
      opts.progress.warn(
        `${it.spec.name}: host port ${soft.join(', ')} is in use on the host of ${engine.facts.endpoint}; if the source holds it (both engines on one host), --stop-source frees it before the start, else the start fails and the migration is rolled back`,
      );
    if (!problems.length) continue;
    if (it.start) refused.push(`${it.spec.name}: ${problems.join(', ')}`);
    else
      opts.progress.warn(
        `${it.spec.name}: host port taken on ${engine.facts.endpoint}: ${problems.join(', ')}; it cannot start until the port is free (or publish elsewhere with --map-port)`,
      );
  }
  if (refused.length)
    throw new ConflictError(
      `host ports already taken on ${engine.facts.endpoint}: ${refused.join('; ')}`,
      'nothing was changed; stop what holds them, publish elsewhere with --map-port [ip:]OLD=[ip:]NEW, or create the containers without starting them (--no-start)',
    );
}

/** The host devices a spec maps into the container (`--device`), as the engine records them. Pure. */
export function deviceClaims(
  spec: Pick<ContainerSpec, 'hostConfig'>,
): { PathOnHost: string; PathInContainer: string; CgroupPermissions: string }[] {
  return (spec.hostConfig.Devices ?? [])
    .filter((d) => d.PathOnHost)
    .map((d) => ({
      PathOnHost: d.PathOnHost!,
      PathInContainer: d.PathInContainer || d.PathOnHost!,
      CgroupPermissions: d.CgroupPermissions || 'rwm',
    }));
}

/** A probe's answer when it is about a device or a device request (`--gpus`), else undefined. */
function deviceRefusal(r: true | string | undefined): string | undefined {
  return typeof r === 'string' && /error gathering device information|could not select device driver/i.test(r)
    ? r
    : undefined;
}

/**
 * Refuse (NotFoundError) when a container this run starts maps a host device that the target's
 * host lacks, or asks for devices (`--gpus`) that no driver there gives; a warning for one it
 * only creates. Docker only: probed from `image()`, asked for only when there is something to
 * probe.
 */
export async function checkDevices(
  engine: Engine,
  items: StartCheckItem[],
  opts: { image?: () => Promise<string | undefined>; progress: Progress },
): Promise<void> {
  const wanted = items
    .map((it) => ({
      ...it,
      devices: deviceClaims(it.spec),
      requests: (it.spec.hostConfig.DeviceRequests ?? []) as unknown[],
    }))
    .filter((it) => it.devices.length || it.requests.length);
  if (!wanted.length || !engine.quirks.helperProbesHost) return;
  const image = await opts.image?.();
  if (!image) return;
  const refused: string[] = [];
  for (const it of wanted) {
    const problems: string[] = [];
    if (
      it.devices.length &&
      deviceRefusal(await probeStart(engine, image, { NetworkMode: 'none', Devices: it.devices }))
    ) {
      // Which of them: one at a time (the engine names only the first).
      for (const d of it.devices)
        if (deviceRefusal(await probeStart(engine, image, { NetworkMode: 'none', Devices: [d] })))
          problems.push(`${d.PathOnHost} (mapped to ${d.PathInContainer})`);
    }
    if (it.requests.length) {
      const r = deviceRefusal(await probeStart(engine, image, { NetworkMode: 'none', DeviceRequests: it.requests }));
      if (r)
        problems.push(`the devices it requests (--gpus): ${r.replace(/^.*?(could not select device driver)/is, '$1')}`);
    }
    if (!problems.length) continue;
    if (it.start) refused.push(`${it.spec.name}: ${problems.join(', ')}`);
    else
      opts.progress.warn(
        `${it.spec.name}: missing on the host of ${engine.facts.endpoint}: ${problems.join(', ')}; it cannot start until they are there`,
      );
  }
  if (refused.length)
    throw new NotFoundError(
      `devices missing on the host of ${engine.facts.endpoint}: ${refused.join('; ')}`,
      'nothing was changed; attach the devices (or their drivers) to that host, or create the containers without starting them (--no-start)',
    );
}

export type Capabilities = NonNullable<Awaited<ReturnType<Engine['capabilities']>>>;

/** Whether a driver list names `driver`: as it is, or a plugin under its name with a tag (`loki:latest`). */
function hasDriver(list: string[], driver: string): boolean {
  return list.some((d) => d === driver || d.replace(/:[^:/]+$/, '') === driver);
}

/**
 * What the containers, volumes and networks to be created use that the engine lacks: a runtime
 * (`--runtime`), a log driver (`--log-driver`; not asked of Podman, whose names differ), a volume
 * driver, a network driver. `networks`: those this run creates. Pure.
 */
export function missingSupport(
  caps: Capabilities,
  what: {
    specs: Pick<ContainerSpec, 'name' | 'hostConfig'>[];
    volumes: { name: string; driver: string }[];
    networks: { name: string; driver: string }[];
  },
  opts: Partial<Pick<EngineQuirks, 'ownLogDriverNames'>> = {},
): string[] {
  const out: string[] = [];
  for (const s of what.specs) {
    const rt = s.hostConfig.Runtime;
    if (typeof rt === 'string' && rt && !caps.runtimes.includes(rt))
      out.push(`${s.name}: runtime ${rt} (here: ${caps.runtimes.join(', ') || 'none listed'})`);
    const log = s.hostConfig.LogConfig?.Type;
    if (!opts.ownLogDriverNames && log && log !== 'none' && !hasDriver(caps.logDrivers, log))
      out.push(`${s.name}: log driver ${log} (here: ${caps.logDrivers.join(', ')})`);
  }
  for (const v of what.volumes)
    if (v.driver && !hasDriver(caps.volumeDrivers, v.driver))
      out.push(`volume ${v.name}: volume driver ${v.driver} (here: ${caps.volumeDrivers.join(', ')})`);
  for (const n of what.networks)
    if (n.driver && !hasDriver(caps.networkDrivers, n.driver))
      out.push(`network ${n.name}: network driver ${n.driver} (here: ${caps.networkDrivers.join(', ')})`);
  return out;
}

/**
 * Refuse (NotFoundError) what the target engine cannot create or start for want of a runtime or
 * a driver (missingSupport), before anything changes. Networks that exist there already are
 * joined, not created, so their drivers are not asked about.
 */
export async function checkEngineSupport(
  engine: Engine,
  what: {
    specs: ContainerSpec[];
    volumes: { name: string; driver: string }[];
    networks: { name: string; driver: string }[];
  },
): Promise<void> {
  const caps = await engine.capabilities();
  if (!caps) return;
  const created = [];
  for (const n of what.networks) if (!(await engine.inspectNetwork(n.name))) created.push(n);
  const missing = missingSupport(caps, { ...what, networks: created }, engine.quirks);
  if (missing.length)
    throw new NotFoundError(
      `${engine.facts.endpoint} lacks what this needs: ${missing.join('; ')}`,
      'nothing was changed; set it up on that engine first (a runtime in daemon.json, `docker plugin install` for a log or volume driver), then run again',
    );
}

/**
 * The HostConfig settings that depend on the host a container runs on (its CPUs and memory, its
 * cgroups and kernel, its security profiles, the engine's runtimes), where the container sets
 * them; and the namespace modes those are judged against (sysctls of a shared namespace are
 * refused), unless they name another container. What the daemon sets on every container by
 * default (ShmSize, the namespace modes themselves) is no reason to ask. Empty: nothing to ask. Pure.
 */
export function hostSettings(spec: Pick<ContainerSpec, 'hostConfig'>): Record<string, unknown> {
  const hc = spec.hostConfig;
  const out: Record<string, unknown> = {};
  const set = (v: unknown) =>
    v !== undefined &&
    v !== null &&
    v !== '' &&
    v !== 0 &&
    v !== false &&
    !(Array.isArray(v) && !v.length) &&
    !(typeof v === 'object' && !Array.isArray(v) && !Object.keys(v).length);
  for (const k of HOST_KEYS) if (set(hc[k])) out[k] = hc[k];
  if (typeof hc.MemorySwappiness === 'number' && hc.MemorySwappiness >= 0) out.MemorySwappiness = hc.MemorySwappiness;
  if (typeof hc.Runtime === 'string' && hc.Runtime && hc.Runtime !== 'runc') out.Runtime = hc.Runtime;
  if (!Object.keys(out).length) return out;
  for (const k of ['IpcMode', 'PidMode', 'UTSMode', 'CgroupnsMode', 'UsernsMode'])
    if (typeof hc[k] === 'string' && hc[k] && !/^(container|service):/.test(hc[k])) out[k] = hc[k];
  out.NetworkMode = hc.NetworkMode === 'host' ? 'host' : 'none';
  return out;
}

const HOST_KEYS = [
  'CpusetCpus',
  'CpusetMems',
  'NanoCpus',
  'CpuShares',
  'CpuQuota',
  'CpuPeriod',
  'CpuRealtimePeriod',
  'CpuRealtimeRuntime',
  'Memory',
  'MemoryReservation',
  'MemorySwap',
  'OomKillDisable',
  'OomScoreAdj',
  'PidsLimit',
  'BlkioWeight',
  'BlkioWeightDevice',
  'BlkioDeviceReadBps',
  'BlkioDeviceWriteBps',
  'BlkioDeviceReadIOps',
  'BlkioDeviceWriteIOps',
  'CgroupParent',
  'Sysctls',
  'Ulimits',
  'StorageOpt',
  'SecurityOpt',
  'Isolation',
  'Init',
] as const;

/**
 * Refuse (NotFoundError) a container the target cannot create, or cannot start when this run
 * starts it, for what its host settings ask (hostSettings): CPUs it lacks (`--cpuset-cpus 4-7`
 * on a 4-CPU host, `--cpus 8`), a cgroup parent or kernel setting it does not have, a security
 * profile it has not loaded. Asked on Docker through a helper made and started with the same
 * settings (probeHost), so the engine itself judges them, with its own words in the refusal.
 * A start refusal of a container that is only created (--no-start) is a warning.
 */
export async function checkHostResources(
  engine: Engine,
  items: StartCheckItem[],
  opts: { image?: () => Promise<string | undefined>; progress: Progress },
): Promise<void> {
  const wanted = items
    .map((it) => ({ ...it, settings: hostSettings(it.spec) }))
    .filter((it) => Object.keys(it.settings).length);
  if (!wanted.length || !engine.quirks.helperProbesHost) return;
  const image = await opts.image?.();
  if (!image) return;
  const refused: string[] = [];
  for (const it of wanted) {
    const a = await probeHost(engine, image, it.settings);
    if (!a || a.ok) continue;
    const why = a.message.replace(/^\(HTTP code \d+\)\s*/, '');
    if (a.at === 'create' || it.start)
      refused.push(`${it.spec.name}: ${a.at === 'create' ? 'cannot be created' : 'cannot start'}: ${why}`);
    else
      opts.progress.warn(
        `${it.spec.name} cannot start on ${engine.facts.endpoint} as it is set up (${why}); it is created, not started`,
      );
  }
  if (refused.length)
    throw new NotFoundError(
      `the host of ${engine.facts.endpoint} cannot give what the containers are set up with: ${refused.join('; ')}`,
      'nothing was changed; give that host what they ask (the CPUs, memory, cgroup parent, kernel settings or security profiles named), or restore onto a host that has it',
    );
}
