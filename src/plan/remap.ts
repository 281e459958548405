/**
 * Remapping, the pure part: restore or migrate onto a host that is laid out differently. The
 * operator names what changes (`--map-volume data=data-2026`, `--map-bind /srv/app=/mnt/app`,
 * `--map-port 8080=18080`, `--map-network backend=prod-net`) and everything that refers to it
 * follows: mounts, bind data written back, port bindings, endpoints and network modes. A mapping
 * that matches nothing in the bundle is refused (a typo at 3 a.m. must not restore onto the old
 * paths silently). No I/O here; unit-tested in test/unit/remap.test.ts.
 */
import type { Manifest } from '../bundle/manifest.js';
import { isUserNetwork, parseBind, type ContainerSpec, type HostConfig, type NetworkSpec } from '../model/spec.js';
import { UsageError } from '../errors.js';
import type { RestoreRewrite } from './rewrite.js';

export interface Remap {
  /** Named volume -> new name. */
  volumes: Map<string, string>;
  /** Host path prefix -> new prefix (whole path components; the longest prefix wins). */
  binds: [string, string][];
  /** Host port ([ip:]port) -> new host port ([ip:]port). */
  ports: { from: HostPort; to: HostPort }[];
  /** User-defined network -> new name. */
  networks: Map<string, string>;
}

interface HostPort {
  ip?: string;
  port: string;
}

export interface RemapFlags {
  mapVolume?: string[];
  mapBind?: string[];
  mapPort?: string[];
  mapNetwork?: string[];
}

// Docker's rule for volume and network names.
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function pair(flag: string, v: string): [string, string] {
  const i = v.indexOf('=');
  if (i <= 0 || i === v.length - 1)
    throw new UsageError(`${flag} ${v}: expected OLD=NEW`, `e.g. ${flag} ${EXAMPLE[flag]}`);
  return [v.slice(0, i), v.slice(i + 1)];
}

const EXAMPLE: Record<string, string> = {
  '--map-volume': 'pgdata=pgdata-restored',
  '--map-bind': '/srv/app=/mnt/disk2/app',
  '--map-port': '8080=18080',
  '--map-network': 'backend=prod-backend',
};

function hostPort(flag: string, whole: string, s: string): HostPort {
  // [ip:]port, the ip possibly in brackets (IPv6).
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]:|([0-9.]+):)?(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535)
    throw new UsageError(
      `${flag} ${whole}: ${s} is not a host port ([ip:]port, 1-65535)`,
      `e.g. ${flag} ${EXAMPLE[flag]}`,
    );
  const ip = m[1] ?? m[2];
  return { ...(ip ? { ip } : {}), port: String(port) };
}

function normPath(flag: string, whole: string, p: string): string {
  if (!p.startsWith('/'))
    throw new UsageError(`${flag} ${whole}: ${p} is not an absolute path`, `e.g. ${flag} ${EXAMPLE[flag]}`);
  const n = p.replace(/\/+/g, '/').replace(/(.)\/$/, '$1');
  if (n.split('/').some((c) => c === '..' || c === '.'))
    throw new UsageError(`${flag} ${whole}: ${p} has . or .. in it`);
  return n;
}

function twice(flag: string, what: string): never {
  throw new UsageError(`${flag}: ${what} is mapped twice`);
}

/** The command line's --map-* options -> a Remap (undefined when none was given). Throws UsageError. */
export function parseRemap(f: RemapFlags): Remap | undefined {
  const r: Remap = { volumes: new Map(), binds: [], ports: [], networks: new Map() };
  for (const v of f.mapVolume ?? []) {
    const [a, b] = pair('--map-volume', v);
    for (const n of [a, b])
      if (!NAME.test(n))
        throw new UsageError(
          `--map-volume ${v}: ${n} is not a volume name`,
          'volume names are letters, digits, _ . - (starting with a letter or digit)',
        );
    if (r.volumes.has(a)) twice('--map-volume', a);
    r.volumes.set(a, b);
  }
  for (const v of f.mapBind ?? []) {
    const [a, b] = pair('--map-bind', v);
    const from = normPath('--map-bind', v, a);
    if (r.binds.some(([x]) => x === from)) twice('--map-bind', from);
    r.binds.push([from, normPath('--map-bind', v, b)]);
  }
  for (const v of f.mapPort ?? []) {
    const [a, b] = pair('--map-port', v);
    const from = hostPort('--map-port', v, a);
    if (r.ports.some((p) => p.from.port === from.port && p.from.ip === from.ip)) twice('--map-port', a);
    r.ports.push({ from, to: hostPort('--map-port', v, b) });
  }
  for (const v of f.mapNetwork ?? []) {
    const [a, b] = pair('--map-network', v);
    for (const n of [a, b]) {
      if (!NAME.test(n)) throw new UsageError(`--map-network ${v}: ${n} is not a network name`);
      if (!isUserNetwork(n))
        throw new UsageError(
          `--map-network ${v}: ${n} is one of the engine's own networks (bridge, host, none)`,
          'only user-defined networks can be mapped',
        );
    }
    if (r.networks.has(a)) twice('--map-network', a);
    r.networks.set(a, b);
  }
  r.binds.sort((x, y) => y[0].length - x[0].length); // the longest prefix first
  r.ports.sort((x, y) => Number(y.from.ip !== undefined) - Number(x.from.ip !== undefined)); // a rule for one address before one for any
  const any = r.volumes.size + r.binds.length + r.ports.length + r.networks.size;
  return any ? r : undefined;
}

/** `p` is `prefix` or below it (whole path components). */
function isUnder(p: string, prefix: string): boolean {
  return p === prefix || p.startsWith(prefix === '/' ? '/' : `${prefix}/`);
}

/** A host path under a mapped prefix, moved to the new prefix; any other path unchanged. */
export function mapPath(r: Remap, p: string): string {
  for (const [from, to] of r.binds) {
    if (!isUnder(p, from)) continue;
    const rest = p.slice(from === '/' ? 1 : from.length + 1);
    return rest ? `${to === '/' ? '' : to}/${rest}` : to;
  }
  return p;
}

type PortBinding = { HostIp?: string; HostPort?: string };

function mapBinding(r: Remap, b: PortBinding): PortBinding {
  const ip = b.HostIp ?? '';
  const rule = r.ports.find((p) => p.from.port === b.HostPort && (p.from.ip === undefined || p.from.ip === ip));
  if (!rule) return b;
  return { ...b, HostIp: rule.to.ip ?? ip, HostPort: rule.to.port };
}

/** What the bundle (or the captured containers) has that a mapping could refer to. */
export interface RemapSubject {
  specs: ContainerSpec[];
  volumes: { name: string; anonymous: boolean }[];
  networks: { name: string }[];
}

/**
 * Every mapping must match something: a named volume, a bind mount's host path, a published host
 * port, a user-defined network. Throws a UsageError naming what is there instead.
 */
export function checkRemap(r: Remap, s: RemapSubject): void {
  const problems: string[] = [];
  const named = s.volumes.filter((v) => !v.anonymous).map((v) => v.name);
  for (const v of r.volumes.keys())
    if (!named.includes(v))
      problems.push(
        `--map-volume: there is no named volume ${v} (${named.length ? `there are: ${named.join(', ')}` : 'no named volumes'})`,
      );
  const bindPaths = s.specs.flatMap((c) => c.mounts.filter((m) => m.type === 'bind' && m.source).map((m) => m.source!));
  for (const [from] of r.binds)
    if (!bindPaths.some((p) => isUnder(p, from)))
      problems.push(
        `--map-bind: no bind mount is at or under ${from} (${bindPaths.length ? `the bind mounts are: ${bindPaths.join(', ')}` : 'no bind mounts'})`,
      );
  const published = s.specs.flatMap((c) =>
    Object.values(c.hostConfig.PortBindings ?? {}).flatMap((bs) => (bs ?? []).filter((b) => b.HostPort)),
  );
  for (const p of r.ports)
    if (
      !published.some((b) => b.HostPort === p.from.port && (p.from.ip === undefined || p.from.ip === (b.HostIp ?? '')))
    )
      problems.push(
        `--map-port: no container publishes host port ${p.from.ip ? `${p.from.ip}:` : ''}${p.from.port} (${published.length ? `published: ${published.map((b) => `${b.HostIp ? `${b.HostIp}:` : ''}${b.HostPort}`).join(', ')}` : 'no published ports'})`,
      );
  const nets = s.networks.map((n) => n.name);
  for (const n of r.networks.keys())
    if (!nets.includes(n))
      problems.push(
        `--map-network: there is no user-defined network ${n} (${nets.length ? `there are: ${nets.join(', ')}` : 'none'})`,
      );
  if (problems.length)
    throw new UsageError(
      problems.join('; '),
      'check the names with ferry inspect <bundle> (or docker inspect on the source); nothing was changed',
    );
}

export function remapVolume<V extends { name: string; anonymous: boolean }>(r: Remap, v: V): V {
  const to = v.anonymous ? undefined : r.volumes.get(v.name);
  return to ? { ...v, name: to } : v;
}

export function remapNetwork(r: Remap, n: NetworkSpec): NetworkSpec {
  const to = r.networks.get(n.name);
  return to ? { ...n, name: to } : n;
}

/**
 * A container's spec on the new layout: bind sources (Binds and Mounts), host ports, networks
 * (endpoints and the network mode). Named volumes are renamed by the caller's volume-name table,
 * as for any restore (createPlan).
 */
export function remapSpec(r: Remap, spec: ContainerSpec): ContainerSpec {
  const hc: HostConfig = { ...spec.hostConfig };
  if (Array.isArray(hc.Binds)) {
    hc.Binds = hc.Binds.map((b) => {
      const p = parseBind(b);
      if (!p.source.startsWith('/')) return b; // a volume
      return [mapPath(r, p.source), p.destination, p.options].filter(Boolean).join(':');
    });
  }
  if (Array.isArray(hc.Mounts))
    hc.Mounts = hc.Mounts.map((m) =>
      m.Type === 'bind' && typeof m.Source === 'string' ? { ...m, Source: mapPath(r, m.Source) } : m,
    );
  if (hc.PortBindings && typeof hc.PortBindings === 'object') {
    hc.PortBindings = Object.fromEntries(
      Object.entries(hc.PortBindings).map(([port, bs]) => [port, bs ? bs.map((b) => mapBinding(r, b)) : bs]),
    );
  }
  if (typeof hc.NetworkMode === 'string' && r.networks.has(hc.NetworkMode))
    hc.NetworkMode = r.networks.get(hc.NetworkMode);
  const mounts = spec.mounts.map((m) => (m.type === 'bind' && m.source ? { ...m, source: mapPath(r, m.source) } : m));
  const endpoints = spec.endpoints.map((e) =>
    r.networks.has(e.network) ? { ...e, network: r.networks.get(e.network)! } : e,
  );
  return { ...spec, hostConfig: hc, mounts, endpoints };
}

/** What a remap changes, one line each, for the operator (dry run and progress). */
export function describeRemap(r: Remap): string[] {
  const hp = (h: HostPort) => `${h.ip ? (h.ip.includes(':') ? `[${h.ip}]:` : `${h.ip}:`) : ''}${h.port}`;
  return [
    ...[...r.volumes].map(([a, b]) => `volume ${a} -> ${b}`),
    ...r.binds.map(([a, b]) => `host paths under ${a} -> ${b}`),
    ...r.ports.map((p) => `host port ${hp(p.from)} -> ${hp(p.to)}`),
    ...[...r.networks].map(([a, b]) => `network ${a} -> ${b}`),
  ];
}

/**
 * The restore rewrite for `r`, once checked against the bundle's manifest: same container names,
 * volumes, networks and host paths renamed, ports moved.
 */
export function remapRewrite(r: Remap, m: Manifest): RestoreRewrite {
  checkRemap(r, { specs: m.containers.map((c) => c.spec), volumes: m.volumes, networks: m.networks });
  return {
    containerName: (name) => name,
    spec: (spec) => remapSpec(r, spec),
    volume: (v) => remapVolume(r, v),
    network: (n) => remapNetwork(r, n),
    bindVolume: () => undefined,
    bindPath: (b) => mapPath(r, b.hostPath),
  };
}
