/**
 * ferry drill, the pure part: how a bundle's containers, volumes and networks become a copy that
 * can run next to the real service on the same engine. No I/O here (the run is in drill-run.ts);
 * unit-tested in test/unit/drill.test.ts.
 *
 * A drill copy gets its own names (`ferry-drill-<id>-<name>`) and the label io.ferry.drill=<id>
 * on every object; references between the bundle's containers (container:<name>, links,
 * volumes-from) and to its networks follow the new names; host ports become free ones the engine
 * picks; static addresses and fixed subnets are dropped (they belong to the original); it never
 * restarts by itself; and it never writes to the original's host paths.
 */
import { randomBytes } from 'node:crypto';
import type { BindEntry, Manifest, VolumeEntry } from '../bundle/manifest.js';
import {
  isUserNetwork,
  parseBind,
  splitLink,
  withoutComposeLabels,
  type ContainerSpec,
  type EndpointSpec,
  type HostConfig,
  type NetworkSpec,
} from '../model/spec.js';
import type { RestoreRewrite } from './rewrite.js';

export const LABEL_DRILL = 'io.ferry.drill';
const BRIDGE_NAME = 'com.docker.network.bridge.name';

/** A short random id for one drill: 6 hex digits. */
export function newDrillId(): string {
  return randomBytes(3).toString('hex');
}

export function drillName(id: string, name: string): string {
  return `ferry-drill-${id}-${name}`;
}

/** The volume a bind's data (from a bundle made with --include-binds) is restored into. */
export function bindVolumeName(id: string, container: string, destination: string): string {
  return `${drillName(id, container)}-bind${destination.replace(/[^A-Za-z0-9_.-]+/g, '_')}`;
}

export interface DrillContext {
  id: string;
  /** The bundle's containers (original names): references to them go to their drill copies. */
  containers: ReadonlySet<string>;
  /** The bundle's user-defined networks (original names). */
  networks: ReadonlySet<string>;
  /** Bind mounts whose data is in the bundle. */
  bindData?: readonly { container: string; destination: string }[];
}

export interface Drilled<T> {
  value: T;
  /** What the drill copy does differently from the original, for the operator. */
  notes: string[];
}

/**
 * Labels of the original minus Compose's (so `docker compose` never adopts a drill copy; those the
 * snapshot image brings, createContainer empties), plus the drill label.
 */
function drillLabels(labels: Record<string, string> | null | undefined, id: string): Record<string, string> {
  return { ...withoutComposeLabels(labels), [LABEL_DRILL]: id };
}

/** A legacy link (`name`, `name:alias`, or `/name:/container/alias` as inspect shows it) -> `newname:alias`. */
function drillLink(link: string, map: (n: string) => string): string {
  const [name, alias] = splitLink(link);
  return `${map(name)}:${alias}`;
}

/** The drill variant of a container's spec. */
export function drillSpec(spec: ContainerSpec, ctx: DrillContext): Drilled<ContainerSpec> {
  const { id } = ctx;
  const notes: string[] = [];
  const who = spec.name;
  const mapContainer = (n: string) => {
    if (ctx.containers.has(n)) return drillName(id, n);
    notes.push(`${who}: refers to container ${n}, which is not in the bundle: the drill copy uses the real one`);
    return n;
  };
  const mapNetwork = (n: string) => (ctx.networks.has(n) ? drillName(id, n) : n);

  const config: Record<string, unknown> = {
    ...spec.config,
    Labels: drillLabels(spec.config.Labels, id),
  };
  const hc: HostConfig = { ...spec.hostConfig };

  // Never restarts by itself, and is never removed by the engine before ferry has looked at it.
  hc.RestartPolicy = { Name: 'no', MaximumRetryCount: 0 };
  delete hc.AutoRemove;

  // Host ports: the original holds them; the engine picks free ones (reported after start).
  if (hc.PortBindings && typeof hc.PortBindings === 'object') {
    const pb: Record<string, { HostIp: string; HostPort: string }[] | null> = {};
    for (const [port, bindings] of Object.entries(hc.PortBindings)) {
      pb[port] = (bindings ?? []).map((b) => {
        if (b.HostPort)
          notes.push(
            `${who}: host port ${b.HostIp ? `${b.HostIp}:` : ''}${b.HostPort} -> ${port} becomes a free port chosen by the engine`,
          );
        return { HostIp: b.HostIp ?? '', HostPort: '' };
      });
    }
    hc.PortBindings = pb;
  }

  // References to other containers and to networks.
  for (const k of ['NetworkMode', 'IpcMode', 'PidMode'] as const) {
    const v = hc[k];
    if (typeof v === 'string' && v.startsWith('container:'))
      hc[k] = `container:${mapContainer(v.slice('container:'.length))}`;
  }
  const mode = typeof hc.NetworkMode === 'string' ? hc.NetworkMode : undefined;
  if (mode && !mode.startsWith('container:') && isUserNetwork(mode)) {
    if (ctx.networks.has(mode)) hc.NetworkMode = mapNetwork(mode);
    else if (spec.endpoints[0] && ctx.networks.has(spec.endpoints[0].network))
      hc.NetworkMode = mapNetwork(spec.endpoints[0].network);
  }
  if (mode === 'host') notes.push(`${who}: uses the host's network: its ports are the original's and may collide`);
  if (Array.isArray(hc.VolumesFrom)) {
    hc.VolumesFrom = hc.VolumesFrom.map((v) => {
      const [ref, m] = v.split(':') as [string, string | undefined];
      return m ? `${mapContainer(ref)}:${m}` : mapContainer(ref);
    });
  }
  if (Array.isArray(hc.Links)) hc.Links = hc.Links.map((l) => drillLink(l, mapContainer));

  const endpoints: EndpointSpec[] = spec.endpoints.map((e) => {
    const out: EndpointSpec = { ...e, network: mapNetwork(e.network) };
    if (e.ipv4Address || e.ipv6Address) {
      notes.push(
        `${who}: static address ${[e.ipv4Address, e.ipv6Address].filter(Boolean).join(', ')} on ${e.network} dropped (it belongs to the original)`,
      );
      delete out.ipv4Address;
      delete out.ipv6Address;
    }
    if (e.links) out.links = e.links.map((l) => drillLink(l, mapContainer));
    return out;
  });

  // Host paths: the drill never writes to the original's files. Bind data that is in the bundle
  // is restored into a volume; other writable binds are mounted read-only.
  const hasData = (dest: string) =>
    (ctx.bindData ?? []).some((b) => b.container === spec.name && b.destination === dest);
  if (Array.isArray(hc.Binds)) {
    hc.Binds = hc.Binds.map((b) => {
      const p = parseBind(b);
      if (!p.source.startsWith('/')) return b; // a volume: renamed through the restore's volume names
      const opts = (p.options ?? '').split(',').filter(Boolean);
      if (hasData(p.destination)) {
        const vol = bindVolumeName(id, spec.name, p.destination);
        notes.push(`${who}: bind ${p.source} -> ${p.destination} is restored from the bundle into volume ${vol}`);
        return [vol, p.destination, opts.filter((o) => o === 'ro' || o === 'rw').join(',')].filter(Boolean).join(':');
      }
      if (opts.includes('ro')) return b;
      notes.push(`${who}: bind ${p.source} -> ${p.destination} is the original's host path: mounted read-only`);
      return [p.source, p.destination, [...opts.filter((o) => o !== 'rw'), 'ro'].join(',')].join(':');
    });
  }
  if (Array.isArray(hc.Mounts)) {
    hc.Mounts = hc.Mounts.map((m) => {
      if (m.Type !== 'bind' || typeof m.Target !== 'string') return m;
      if (hasData(m.Target)) {
        const vol = bindVolumeName(id, spec.name, m.Target);
        notes.push(`${who}: bind ${String(m.Source)} -> ${m.Target} is restored from the bundle into volume ${vol}`);
        return { Type: 'volume', Source: vol, Target: m.Target, ReadOnly: m.ReadOnly === true };
      }
      if (m.ReadOnly === true) return m;
      notes.push(`${who}: bind ${String(m.Source)} -> ${m.Target} is the original's host path: mounted read-only`);
      return { ...m, ReadOnly: true };
    });
  }

  return { value: { ...spec, config, hostConfig: hc, endpoints }, notes };
}

/** The drill variant of a user-defined network: own name, no fixed subnet, no fixed bridge name. */
export function drillNetwork(n: NetworkSpec, id: string): Drilled<NetworkSpec> {
  const notes: string[] = [];
  const subnets = (n.ipam?.Config ?? []).map((c) => c.Subnet).filter(Boolean);
  if (subnets.length)
    notes.push(`network ${n.name}: created without its subnet ${subnets.join(', ')} (the engine picks a free one)`);
  const options = { ...(n.options ?? {}) };
  if (options[BRIDGE_NAME]) {
    notes.push(`network ${n.name}: bridge interface name ${options[BRIDGE_NAME]} not reused`);
    delete options[BRIDGE_NAME];
  }
  const ipv6 = n.enableIPv6 && !subnets.length;
  if (n.enableIPv6 && !ipv6)
    notes.push(`network ${n.name}: IPv6 off in the drill copy (its subnet belongs to the original)`);
  return {
    value: {
      ...n,
      name: drillName(id, n.name),
      enableIPv6: ipv6,
      ipam: {
        Driver: n.ipam?.Driver ?? 'default',
        Config: [],
        ...(n.ipam?.Options ? { Options: n.ipam.Options } : {}),
      },
      options,
      labels: drillLabels(n.labels, id),
    },
    notes,
  };
}

/** The drill variant of a volume: own name (anonymous ones stay anonymous), never a host device. */
export function drillVolume(v: VolumeEntry, id: string): Drilled<VolumeEntry> {
  const notes: string[] = [];
  const out: VolumeEntry = {
    ...v,
    name: v.anonymous ? v.name : drillName(id, v.name),
    labels: drillLabels(v.labels, id),
  };
  // The local driver with a device (o=bind, nfs, ...) is a view of storage the original uses:
  // filling it would overwrite the original's data.
  if ((v.driver === 'local' || !v.driver) && v.driverOpts?.device) {
    notes.push(
      `volume ${v.name}: backed by ${v.driverOpts.device} on the original; the drill copy is a plain local volume`,
    );
    delete out.driverOpts;
  }
  return { value: out, notes };
}

export function drillBindVolume(b: BindEntry, id: string): VolumeEntry {
  return {
    name: bindVolumeName(id, b.container, b.destination),
    anonymous: false,
    driver: 'local',
    labels: { [LABEL_DRILL]: id },
    member: b.member,
  };
}

/** The restore rewrite for a drill of `m`, and the notes it gathered (each once). */
export function drillRewrite(m: Manifest, id: string): RestoreRewrite & { notes(): string[] } {
  const notes = new Set<string>();
  const keep = <T>(d: Drilled<T>): T => {
    for (const n of d.notes) notes.add(n);
    return d.value;
  };
  const ctx: DrillContext = {
    id,
    containers: new Set(m.containers.map((c) => c.spec.name)),
    networks: new Set(m.networks.map((n) => n.name)),
    bindData: m.containers.flatMap((c) => c.binds.map((b) => ({ container: b.container, destination: b.destination }))),
  };
  return {
    containerName: (name) => drillName(id, name),
    spec: (spec) => keep(drillSpec(spec, ctx)),
    volume: (v) => keep(drillVolume(v, id)),
    network: (n) => keep(drillNetwork(n, id)),
    bindVolume: (b) => drillBindVolume(b, id),
    notes: () => [...notes],
  };
}
