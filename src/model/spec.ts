/**
 * Pure mapping between what `docker inspect` says and what ferry keeps: a ContainerSpec records
 * what the user set (not the image's defaults, not what the engine generated), and turns back
 * into create options on any engine. No I/O here; unit-tested in test/unit/spec.test.ts.
 */
import type { EngineQuirks } from '../engine/quirks.js';

/** A string field of an inspect answer, or `fallback` where it is missing or not a string. */
export function asString(v: unknown, fallback = ''): string {
  return typeof v === 'string' ? v : fallback;
}

export interface MountSpec {
  type: 'volume' | 'bind' | 'tmpfs' | 'npipe' | 'image' | (string & {});
  /** Volume name (type volume) or host path (type bind). */
  source?: string;
  destination: string;
  readOnly: boolean;
  /** An anonymous volume (a 64-hex name the engine made up): recreated under a fresh name. */
  anonymous?: boolean;
  /** How the user asked for it: in HostConfig.Binds, HostConfig.Mounts, or implicitly (image VOLUME / -v /path). */
  origin: 'binds' | 'mounts' | 'implicit';
}

export interface EndpointSpec {
  network: string;
  aliases?: string[];
  ipv4Address?: string;
  ipv6Address?: string;
  links?: string[];
  driverOpts?: Record<string, string>;
}

export interface NetworkSpec {
  name: string;
  driver: string;
  internal: boolean;
  attachable: boolean;
  enableIPv6: boolean;
  ipam?: { Driver?: string; Config?: Record<string, unknown>[]; Options?: Record<string, string> | null };
  options?: Record<string, string>;
  labels?: Record<string, string>;
}

/**
 * The container Config fields ferry reads or writes, as the Engine API has them. Every other
 * field passes through as the engine reported it (the index signature). Read from a bundle, none
 * of this is checked: code that iterates a field still tests that it is an array.
 */
export interface ContainerConfig {
  Env?: string[] | null;
  Labels?: Record<string, string> | null;
  ExposedPorts?: Record<string, unknown> | null;
  Volumes?: Record<string, unknown> | null;
  [field: string]: unknown;
}

/** One host port a container port is published on (HostConfig.PortBindings). */
export interface PortBinding {
  HostIp?: string;
  HostPort?: string;
}

/** A HostConfig.Mounts entry: the fields ferry reads (Type, Source, Target), the rest passed through. */
export interface MountEntry {
  Type?: string;
  Source?: string;
  Target?: string;
  [field: string]: unknown;
}

/** The HostConfig fields ferry reads or writes (see ContainerConfig); the rest pass through. */
export interface HostConfig {
  Binds?: string[] | null;
  Mounts?: MountEntry[] | null;
  VolumesFrom?: string[] | null;
  Links?: string[] | null;
  PortBindings?: Record<string, PortBinding[] | null> | null;
  NetworkMode?: string;
  Runtime?: string;
  Memory?: number;
  MemorySwap?: number;
  LogConfig?: { Type?: string; Config?: Record<string, string> };
  RestartPolicy?: { Name?: string; MaximumRetryCount?: number };
  Devices?: { PathOnHost?: string; PathInContainer?: string; CgroupPermissions?: string }[] | null;
  DeviceCgroupRules?: string[] | null;
  CapAdd?: string[] | null;
  SecurityOpt?: string[] | null;
  Tmpfs?: Record<string, string> | null;
  [field: string]: unknown;
}

export interface ContainerSpec {
  name: string;
  sourceId: string;
  state: { running: boolean; paused: boolean };
  /** The image the container was created from, as the user typed it, and its id. */
  baseImage: { ref: string; id: string };
  /**
   * The image the container was first created from, before any ferry restore (its lineage): the
   * config ferry diffed against. Absent in bundles of older ferry versions, and when the image
   * could not be inspected.
   */
  origin?: OriginImage;
  /** Container Config fields the user set (differences from the image's config). */
  config: ContainerConfig;
  /** HostConfig fields worth recreating (engine-generated values dropped). */
  hostConfig: HostConfig;
  /** Endpoints, primary network first. */
  endpoints: EndpointSpec[];
  mounts: MountSpec[];
}

type Json = Record<string, unknown>;

/**
 * The image a container was first created from (not a ferry snapshot): its reference as the user
 * typed it, its id on the engine it was on, and the Config fields ferry diffs a container's
 * against (ORIGIN_CONFIG_KEYS).
 */
export interface OriginImage {
  ref: string;
  id: string;
  config: ContainerConfig;
}

/** The image Config fields captureSpec compares a container's with. */
const ORIGIN_CONFIG_KEYS = [
  'Env',
  'Labels',
  'Cmd',
  'Entrypoint',
  'ExposedPorts',
  'Volumes',
  'Healthcheck',
  'User',
  'WorkingDir',
  'StopSignal',
  'Shell',
] as const;

/** An image's identity and the Config fields captureSpec compares with, as an OriginImage. Pure. */
export function originImage(ref: string, id: string, config: ContainerConfig | null | undefined): OriginImage {
  const kept: ContainerConfig = {};
  const from: Json = config ?? {};
  for (const k of ORIGIN_CONFIG_KEYS) if (!isEmpty(from[k])) (kept as Json)[k] = from[k];
  return { ref, id, config: kept };
}

/** The key of the JSON object a snapshot's Author holds (docs/format.md, Lineage). */
const LINEAGE_KEY = 'ferry.origin-image';

/**
 * The Author a snapshot image is committed with: its container's origin image, as one line of
 * JSON, so that the next backup of a container restored from it diffs against that image. Pure.
 */
export function lineageAuthor(origin: OriginImage): string {
  return JSON.stringify({ [LINEAGE_KEY]: origin });
}

/**
 * The origin image a snapshot's Author records (lineageAuthor); undefined for anything else (no
 * Author, one a person wrote, a snapshot of an older ferry, a malformed one). Pure.
 */
export function parseLineage(author: unknown): OriginImage | undefined {
  if (typeof author !== 'string' || !author.startsWith('{')) return undefined;
  let o: unknown;
  try {
    o = (JSON.parse(author) as Json)[LINEAGE_KEY];
  } catch {
    return undefined;
  }
  if (!o || typeof o !== 'object') return undefined;
  const { ref, id, config } = o as Json;
  if (
    typeof ref !== 'string' ||
    typeof id !== 'string' ||
    !config ||
    typeof config !== 'object' ||
    Array.isArray(config)
  )
    return undefined;
  return originImage(ref, id, config as ContainerConfig);
}

const HOSTCONFIG_KEYS = [
  'Binds',
  'Mounts',
  'PortBindings',
  'PublishAllPorts',
  'RestartPolicy',
  'AutoRemove',
  'NetworkMode',
  'Memory',
  'MemoryReservation',
  'MemorySwap',
  'MemorySwappiness',
  'NanoCpus',
  'CpuShares',
  'CpuQuota',
  'CpuPeriod',
  'CpuRealtimePeriod',
  'CpuRealtimeRuntime',
  'CpusetCpus',
  'CpusetMems',
  'PidsLimit',
  'OomKillDisable',
  'OomScoreAdj',
  'BlkioWeight',
  'BlkioWeightDevice',
  'BlkioDeviceReadBps',
  'BlkioDeviceWriteBps',
  'BlkioDeviceReadIOps',
  'BlkioDeviceWriteIOps',
  'CapAdd',
  'CapDrop',
  'Devices',
  'DeviceRequests',
  'DeviceCgroupRules',
  'ExtraHosts',
  'LogConfig',
  'Privileged',
  'SecurityOpt',
  'Tmpfs',
  'ShmSize',
  'Ulimits',
  'Init',
  'Dns',
  'DnsOptions',
  'DnsSearch',
  'GroupAdd',
  'Sysctls',
  'ReadonlyRootfs',
  'Links',
  'VolumeDriver',
  'VolumesFrom',
  'CgroupParent',
  'UsernsMode',
  'UTSMode',
  'PidMode',
  'IpcMode',
  'StorageOpt',
  'Annotations',
  'Runtime',
  'MaskedPaths',
  'ReadonlyPaths',
  'CgroupnsMode',
  'Isolation',
] as const;

function isEmpty(v: unknown): boolean {
  if (v === null || v === undefined || v === '' || v === 0 || v === false) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.keys(v).length === 0;
  return false;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

const ANON = /^[0-9a-f]{64}$/;

export interface CaptureInput {
  inspect: Json & {
    Id: string;
    Name: string;
    Config: ContainerConfig;
    HostConfig: Json;
    State: Json;
    Mounts?: Json[];
    NetworkSettings?: Json;
    Image: string;
  };
  /** Config of the image the container was created from. */
  imageConfig: ContainerConfig | null | undefined;
  /**
   * That image is a ferry snapshot (the container was restored by ferry): its config holds the
   * container's own Env and Labels. With `origin` (the image the first generation ran on, from
   * the snapshot's lineage) the container is diffed against that image instead, so every
   * generation records what the first did; without it (a snapshot of an older ferry) Env and
   * Labels are recorded whole, not as a difference from the snapshot.
   */
  fromSnapshot?: boolean;
  /** The snapshot's lineage (parseLineage of its Author); only read with fromSnapshot. */
  origin?: OriginImage;
  /** container id -> name, for `container:<id>` references. */
  containerNames?: Record<string, string>;
  /** The source engine's default log driver (docker info LoggingDriver). */
  defaultLogDriver?: string;
  /**
   * How the source engine differs from Docker (default: it is Docker): its default network is
   * recorded as "bridge", its default runtime and the HOSTNAME it puts in every container's
   * environment are dropped, its bind options and ulimit names are spelt as Docker's.
   */
  quirks?: Pick<
    EngineQuirks,
    'defaultBridge' | 'defaultRuntime' | 'hostnameInEnv' | 'bindsWithDefaultOptions' | 'ulimitsAsRlimit'
  >;
}

/** Whether an image is a snapshot ferry committed (its comment, as ferry writes it). Pure. */
export function isFerrySnapshot(image: { Comment?: unknown } | null | undefined): boolean {
  return typeof image?.Comment === 'string' && image.Comment.startsWith('ferry snapshot of ');
}

/** inspect (+ the image's config) -> ContainerSpec. */
export function captureSpec({
  inspect,
  imageConfig,
  containerNames = {},
  defaultLogDriver,
  quirks,
  fromSnapshot,
  origin,
}: CaptureInput): ContainerSpec {
  const cfg = inspect.Config;
  // What the container is compared with: the image it was first created from. A container on a
  // snapshot with lineage is diffed against its origin image; one on its own image records it as
  // its origin (the lineage the next generation's snapshot carries).
  const lineage = fromSnapshot
    ? origin
    : imageConfig
      ? originImage(asString(cfg.Image, inspect.Image), inspect.Image, imageConfig)
      : undefined;
  const whole = fromSnapshot && !origin;
  const img: ContainerConfig = (fromSnapshot && origin ? origin.config : imageConfig) ?? {};
  const shortId = inspect.Id.slice(0, 12);
  const name = inspect.Name.replace(/^\//, '');
  const config: ContainerConfig = {};

  const networkMode = String((inspect.HostConfig.NetworkMode as string | undefined) ?? 'default');
  if (cfg.Hostname && cfg.Hostname !== shortId && !networkMode.startsWith('container:')) config.Hostname = cfg.Hostname;
  if (cfg.Domainname) config.Domainname = cfg.Domainname;
  for (const k of ['User', 'WorkingDir', 'StopSignal', 'Shell'] as const) {
    if (!isEmpty(cfg[k]) && !same(cfg[k], img[k])) config[k] = cfg[k];
  }
  // Kept even when the image has the same: an engine applies an image's StopSignal to a new
  // container, never its StopTimeout (a restored container's committed image carries it, so a
  // second generation would otherwise fall back to the engine's 10 s).
  if (cfg.StopTimeout !== undefined && cfg.StopTimeout !== null) config.StopTimeout = cfg.StopTimeout;
  // A snapshot's Env and Labels are the restored container's own, not defaults of an image
  // someone built: without lineage they are recorded whole, so they stay in view (ferry inspect).
  const imgEnv = new Set(whole ? [] : (img.Env ?? []));
  const env = (cfg.Env ?? []).filter(
    (e) => !imgEnv.has(e) && !(quirks?.hostnameInEnv && e === `HOSTNAME=${asString(cfg.Hostname, shortId)}`),
  );
  if (env.length) config.Env = env;
  const entrypointChanged = !same(cfg.Entrypoint, img.Entrypoint);
  if (entrypointChanged) {
    config.Entrypoint = cfg.Entrypoint ?? [];
    config.Cmd = cfg.Cmd ?? null; // Docker drops the image's Cmd when Entrypoint is set at create
  } else if (!same(cfg.Cmd, img.Cmd)) {
    config.Cmd = cfg.Cmd;
  }
  const labels = diffRecord(cfg.Labels, whole ? null : img.Labels);
  if (labels) config.Labels = labels;
  const ports = diffKeys(cfg.ExposedPorts, img.ExposedPorts);
  if (ports) config.ExposedPorts = ports;
  const vols = diffKeys(cfg.Volumes, img.Volumes);
  if (vols) config.Volumes = vols;
  if (cfg.Healthcheck && !same(cfg.Healthcheck, img.Healthcheck)) config.Healthcheck = cfg.Healthcheck;
  for (const k of ['Tty', 'OpenStdin', 'StdinOnce'] as const) if (cfg[k]) config[k] = true;

  const hostConfig: HostConfig = {};
  // Copied as the engine reported them: each field has the Engine API's type.
  const copied: Record<string, unknown> = hostConfig;
  for (const k of HOSTCONFIG_KEYS) {
    const v = inspect.HostConfig[k];
    if (isEmpty(v)) continue;
    copied[k] = v;
  }
  // Engine defaults that would pin the source host's settings.
  const bridge = quirks?.defaultBridge ?? 'bridge';
  if (hostConfig.Runtime === 'runc' || (quirks && hostConfig.Runtime === quirks.defaultRuntime))
    delete hostConfig.Runtime;
  if (hostConfig.NetworkMode === bridge) hostConfig.NetworkMode = 'bridge';
  if (quirks?.bindsWithDefaultOptions && Array.isArray(hostConfig.Binds))
    hostConfig.Binds = hostConfig.Binds.map(portableBind);
  // Podman names ulimits RLIMIT_NOFILE; Docker wants nofile.
  if (quirks?.ulimitsAsRlimit && Array.isArray(hostConfig.Ulimits))
    hostConfig.Ulimits = (hostConfig.Ulimits as Json[]).map((u) => ({
      ...u,
      Name: String(u.Name)
        .replace(/^RLIMIT_/i, '')
        .toLowerCase(),
    }));
  if (hostConfig.IpcMode === 'private' || hostConfig.IpcMode === 'shareable') delete hostConfig.IpcMode;
  if (hostConfig.CgroupnsMode === 'host' || hostConfig.CgroupnsMode === 'private') delete hostConfig.CgroupnsMode;
  withoutPrivateNamespaces(hostConfig);
  if (hostConfig.Isolation === 'default') delete hostConfig.Isolation;
  // Default masked/readonly path lists are the engine's; only an explicit [] (systempaths=unconfined) matters.
  delete hostConfig.MaskedPaths;
  delete hostConfig.ReadonlyPaths;
  if (
    Array.isArray(inspect.HostConfig.MaskedPaths) &&
    inspect.HostConfig.MaskedPaths.length === 0 &&
    inspect.HostConfig.Privileged !== true
  )
    hostConfig.MaskedPaths = [];
  if (
    Array.isArray(inspect.HostConfig.ReadonlyPaths) &&
    inspect.HostConfig.ReadonlyPaths.length === 0 &&
    inspect.HostConfig.Privileged !== true
  )
    hostConfig.ReadonlyPaths = [];
  // Engine defaults, so the target's own defaults apply: a 64 MiB /dev/shm, the default log driver.
  if (hostConfig.ShmSize === 64 * 1024 * 1024) delete hostConfig.ShmSize;
  const log = hostConfig.LogConfig;
  if (log && log.Type === (defaultLogDriver ?? 'json-file') && isEmpty(log.Config)) delete hostConfig.LogConfig;
  // Docker fills MemorySwap with 2x Memory when only Memory was given.
  if (hostConfig.Memory && hostConfig.MemorySwap === hostConfig.Memory * 2) delete hostConfig.MemorySwap;
  if (
    same(hostConfig.RestartPolicy, { Name: 'no', MaximumRetryCount: 0 }) ||
    same(hostConfig.RestartPolicy, { Name: '', MaximumRetryCount: 0 })
  )
    delete hostConfig.RestartPolicy;
  // container:<id> references -> container:<name>
  for (const k of ['NetworkMode', 'IpcMode', 'PidMode'] as const) {
    const v = hostConfig[k];
    if (typeof v === 'string' && v.startsWith('container:')) {
      const ref = v.slice('container:'.length);
      const n = containerNames[ref] ?? Object.entries(containerNames).find(([id]) => id.startsWith(ref))?.[1];
      if (n) hostConfig[k] = `container:${n}`;
    }
  }
  if (Array.isArray(hostConfig.VolumesFrom)) {
    hostConfig.VolumesFrom = hostConfig.VolumesFrom.map((v) => {
      const [ref, mode] = v.split(':') as [string, string | undefined];
      const n = containerNames[ref] ?? ref;
      return mode ? `${n}:${mode}` : n;
    });
  }

  const mounts = captureMounts(inspect);
  const endpoints = captureEndpoints(inspect, networkMode, shortId).map((e) =>
    e.network === bridge ? { ...e, network: 'bridge' } : e,
  );
  const state = inspect.State;
  return {
    name,
    sourceId: inspect.Id,
    state: { running: !!state.Running, paused: !!state.Paused },
    baseImage: { ref: asString(cfg.Image, inspect.Image), id: inspect.Image },
    ...(lineage ? { origin: lineage } : {}),
    config,
    hostConfig,
    endpoints,
    mounts,
  };
}

function diffRecord(a: Record<string, string> | null | undefined, b: Record<string, string> | null | undefined) {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(a ?? {})) if ((b ?? {})[k] !== v) out[k] = v;
  return Object.keys(out).length ? out : undefined;
}

function diffKeys(a: Json | null | undefined, b: Json | null | undefined) {
  const out: Json = {};
  for (const k of Object.keys(a ?? {})) if (!(k in (b ?? {}))) out[k] = {};
  return Object.keys(out).length ? out : undefined;
}

function captureMounts(inspect: CaptureInput['inspect']): MountSpec[] {
  const binds = ((inspect.HostConfig.Binds as string[] | null) ?? []).map(parseBind);
  const hcMounts = (inspect.HostConfig.Mounts as Json[] | null) ?? [];
  const out: MountSpec[] = [];
  for (const m of inspect.Mounts ?? []) {
    const type = String(m.Type);
    const destination = String(m.Destination);
    const source = type === 'volume' ? String(m.Name) : asString(m.Source);
    const readOnly = m.RW === false;
    const inBinds = binds.some((b) => b.destination === destination);
    const inMounts = hcMounts.some((x) => x.Target === destination);
    out.push({
      type,
      source,
      destination,
      readOnly,
      anonymous: type === 'volume' && ANON.test(source) && !inBinds && !inMounts ? true : undefined,
      origin: inBinds ? 'binds' : inMounts ? 'mounts' : 'implicit',
    });
  }
  return out;
}

/**
 * A bind as Podman reports it (`v:/data:rw,rprivate,nosuid,nodev,rbind`: its defaults spelt out,
 * some of which Docker refuses) reduced to the options that are not defaults and that Docker
 * also accepts. Pure; unit-tested.
 */
export function portableBind(b: string): string {
  const p = parseBind(b);
  if (!p.options) return b;
  const keep = p.options
    .split(',')
    .filter((o) => ['ro', 'z', 'Z', 'nocopy', 'shared', 'rshared', 'slave', 'rslave', 'private'].includes(o));
  return [p.source, p.destination, keep.join(',')].filter(Boolean).join(':');
}

export function parseBind(b: string): { source: string; destination: string; options?: string } {
  const parts = b.split(':');
  if (parts.length === 1) return { source: '', destination: parts[0]! };
  return { source: parts[0]!, destination: parts[1]!, options: parts.slice(2).join(':') || undefined };
}

function captureEndpoints(inspect: CaptureInput['inspect'], networkMode: string, shortId: string): EndpointSpec[] {
  const nets = ((inspect.NetworkSettings ?? {}).Networks ?? {}) as Record<string, Json>;
  const eps: EndpointSpec[] = [];
  for (const [net, ep] of Object.entries(nets)) {
    const aliases = ((ep.Aliases as string[] | null) ?? []).filter((a) => a !== shortId && a !== inspect.Id);
    const ipam = (ep.IPAMConfig ?? {}) as { IPv4Address?: string; IPv6Address?: string };
    const e: EndpointSpec = { network: net };
    if (aliases.length) e.aliases = aliases;
    if (ipam.IPv4Address) e.ipv4Address = ipam.IPv4Address;
    if (ipam.IPv6Address) e.ipv6Address = ipam.IPv6Address;
    const links = ep.Links as string[] | null;
    if (links?.length) e.links = links;
    const dopts = ep.DriverOpts as Record<string, string> | null;
    if (dopts && Object.keys(dopts).length) e.driverOpts = dopts;
    eps.push(e);
  }
  const primary = networkMode === 'default' ? 'bridge' : networkMode;
  eps.sort((a, b) => (a.network === primary ? -1 : b.network === primary ? 1 : 0));
  return eps;
}

/** Networks a restore must create (user-defined ones). */
export function isUserNetwork(name: string): boolean {
  return !['bridge', 'host', 'none', 'default'].includes(name) && !name.startsWith('container:');
}

export function captureNetwork(n: Json): NetworkSpec {
  const ipam = (n.IPAM ?? {}) as {
    Driver?: string;
    Config?: Record<string, unknown>[];
    Options?: Record<string, string> | null;
  };
  return {
    name: String(n.Name),
    driver: asString(n.Driver, 'bridge'),
    internal: !!n.Internal,
    attachable: !!n.Attachable,
    enableIPv6: !!n.EnableIPv6,
    ipam: {
      Driver: ipam.Driver ?? 'default',
      Config: (ipam.Config ?? []).map((c) => ({ ...c })),
      Options: ipam.Options ?? undefined,
    },
    options: (n.Options as Record<string, string> | null) ?? undefined,
    labels: (n.Labels as Record<string, string> | null) ?? undefined,
  };
}

export function networkCreateOptions(n: NetworkSpec, extraLabels: Record<string, string> = {}): Json {
  return {
    Name: n.name,
    Driver: n.driver,
    Internal: n.internal,
    Attachable: n.attachable,
    EnableIPv6: n.enableIPv6,
    IPAM: n.ipam,
    Options: n.options ?? {},
    Labels: { ...(n.labels ?? {}), ...extraLabels },
    CheckDuplicate: true,
  };
}

export interface CreatePlan {
  body: Json;
  /** Endpoints to connect after create (engines before API 1.44 take only one at create). */
  laterEndpoints: EndpointSpec[];
}

function endpointConfig(e: EndpointSpec): Json {
  const c: Json = {};
  if (e.aliases) c.Aliases = e.aliases;
  if (e.ipv4Address || e.ipv6Address)
    c.IPAMConfig = {
      ...(e.ipv4Address ? { IPv4Address: e.ipv4Address } : {}),
      ...(e.ipv6Address ? { IPv6Address: e.ipv6Address } : {}),
    };
  if (e.links) c.Links = e.links;
  if (e.driverOpts) c.DriverOpts = e.driverOpts;
  return c;
}

/**
 * Podman reports a container's own PID, UTS and user namespaces as "private"; Docker's default is
 * the same, spelt "" (Docker 26 refuses "invalid PID mode: private"; 20.10 let it through).
 */
function withoutPrivateNamespaces(hostConfig: Json): void {
  for (const k of ['PidMode', 'UTSMode', 'UsernsMode'] as const) if (hostConfig[k] === 'private') delete hostConfig[k];
}

/**
 * ContainerSpec -> create body for `image`. `volumeNames` maps each named volume source to the
 * name to use on the target; anonymous volumes are declared in `Volumes` (the engine makes them).
 */
export function createPlan(
  spec: ContainerSpec,
  image: string,
  opts: { volumeNames?: Record<string, string>; multiEndpoint?: boolean; bridge?: string } = {},
): CreatePlan {
  const vn = opts.volumeNames ?? {};
  const hostConfig: HostConfig = { ...spec.hostConfig };
  withoutPrivateNamespaces(hostConfig); // bundles made before capture dropped them
  // The target's default bridge network may have another name (Podman's is "podman").
  const bridge = opts.bridge ?? 'bridge';
  if (hostConfig.NetworkMode === 'bridge') hostConfig.NetworkMode = bridge;
  if (Array.isArray(hostConfig.Binds)) {
    hostConfig.Binds = hostConfig.Binds.map((b) => {
      const p = parseBind(b);
      if (p.source && !p.source.startsWith('/') && vn[p.source])
        return [vn[p.source], p.destination, p.options].filter(Boolean).join(':');
      return b;
    });
  }
  const mounts: Json[] = Array.isArray(hostConfig.Mounts)
    ? hostConfig.Mounts.map((m) =>
        m.Type === 'volume' && typeof m.Source === 'string' && vn[m.Source] ? { ...m, Source: vn[m.Source] } : { ...m },
      )
    : [];
  // An anonymous volume stays anonymous: declared (as `-v /path` does), never mounted by name, so
  // that the engine makes a fresh one at create (the data goes into it afterwards:
  // adoptAnonymousVolumes). Mounted by name it would become an explicit mount of a 64-hex volume
  // in every later generation.
  const anonymous: Json = {};
  for (const m of spec.mounts) {
    if (m.type !== 'volume' || m.origin !== 'implicit' || !m.source) continue;
    if (m.anonymous) anonymous[m.destination] = {};
    else if (vn[m.source])
      mounts.push({ Type: 'volume', Source: vn[m.source], Target: m.destination, ReadOnly: m.readOnly });
  }
  if (mounts.length) hostConfig.Mounts = mounts;
  else delete hostConfig.Mounts;

  const body: Json = { ...spec.config, Image: image, HostConfig: hostConfig };
  if (Object.keys(anonymous).length) body.Volumes = { ...(spec.config.Volumes ?? {}), ...anonymous };
  const networkMode = asString(hostConfig.NetworkMode, 'default');
  let laterEndpoints: EndpointSpec[] = [];
  if (!networkMode.startsWith('container:') && networkMode !== 'host' && networkMode !== 'none') {
    const eps = spec.endpoints.map((e) => (e.network === 'bridge' ? { ...e, network: bridge } : e));
    const first = eps[0];
    if (first) {
      const rest = eps.slice(1);
      if (opts.multiEndpoint) {
        body.NetworkingConfig = { EndpointsConfig: Object.fromEntries(eps.map((e) => [e.network, endpointConfig(e)])) };
      } else {
        body.NetworkingConfig = { EndpointsConfig: { [first.network]: endpointConfig(first) } };
        laterEndpoints = rest;
      }
    }
  }
  return { body, laterEndpoints };
}

export function endpointCreateConfig(e: EndpointSpec): Json {
  return endpointConfig(e);
}

/** Names that look like they hold secrets (for warnings; values are never printed). */
export function secretLikeEnvNames(env: string[] | undefined): string[] {
  return (env ?? []).map((e) => e.split('=')[0]!).filter((n) => /pass|secret|token|key|credential|auth/i.test(n));
}

/** A legacy link as inspect shows it (`/db:/web/database`) or as given (`db:database`, `db`): [name, alias]. */
export function splitLink(link: string): [string, string] {
  const [a, b] = link.split(':') as [string, string | undefined];
  const name = a.replace(/^\//, '');
  return [name, b ? b.split('/').pop()! : name];
}

/**
 * The other containers a spec refers to by name: network, IPC and PID mode `container:<name>`,
 * volumes-from, and legacy links (host-wide and per network). Pure.
 */
export function containerRefs(spec: ContainerSpec): string[] {
  const hc = spec.hostConfig;
  const out = new Set<string>();
  for (const k of ['NetworkMode', 'IpcMode', 'PidMode'] as const) {
    const v = hc[k];
    if (typeof v === 'string' && v.startsWith('container:')) out.add(v.slice('container:'.length));
  }
  for (const v of hc.VolumesFrom ?? []) out.add(v.split(':')[0]!);
  for (const l of hc.Links ?? []) out.add(splitLink(l)[0]);
  for (const e of spec.endpoints) for (const l of e.links ?? []) out.add(splitLink(l)[0]);
  return [...out];
}

/** The spec with its references to the containers in `to` (old name -> new name) renamed. Pure. */
export function renameContainerRefs(spec: ContainerSpec, to: Record<string, string>): ContainerSpec {
  const renamed = (n: string) => (Object.hasOwn(to, n) && to[n] !== n ? to[n] : undefined);
  if (!containerRefs(spec).some((n) => renamed(n))) return spec;
  const hc: HostConfig = { ...spec.hostConfig };
  for (const k of ['NetworkMode', 'IpcMode', 'PidMode'] as const) {
    const v = hc[k];
    if (typeof v === 'string' && v.startsWith('container:')) {
      const n = renamed(v.slice('container:'.length));
      if (n) hc[k] = `container:${n}`;
    }
  }
  if (Array.isArray(hc.VolumesFrom))
    hc.VolumesFrom = hc.VolumesFrom.map((v) => {
      const [ref, mode] = v.split(':') as [string, string | undefined];
      const n = renamed(ref);
      return n ? (mode ? `${n}:${mode}` : n) : v;
    });
  const link = (l: string) => {
    const [name, alias] = splitLink(l);
    const n = renamed(name);
    return n ? `${n}:${alias}` : l;
  };
  if (Array.isArray(hc.Links)) hc.Links = hc.Links.map(link);
  const endpoints = spec.endpoints.map((e) => (e.links ? { ...e, links: e.links.map(link) } : e));
  return { ...spec, hostConfig: hc, endpoints };
}

/**
 * The order to create and start containers in: each after the ones of the same set it refers to
 * (a `container:<name>` network needs that container, running) and after the Compose services it
 * depends on (Compose v2 records `depends_on` in a label; v1 does not). Indices into `specs`;
 * otherwise the given order. A cycle (the engine cannot create one) keeps the given order for its
 * members.
 */
export function dependencyOrder(specs: ContainerSpec[]): number[] {
  const index = new Map(specs.map((s, i) => [s.name, i]));
  const labels = specs.map((s) => s.config.Labels ?? {});
  const composeDeps = (i: number): number[] => {
    const project = composeProject(labels[i]);
    const services = (labels[i]!['com.docker.compose.depends_on'] ?? '')
      .split(',')
      .map((d) => d.split(':')[0]!.trim())
      .filter(Boolean);
    if (!project || !services.length) return [];
    return specs.flatMap((_, j) =>
      composeProject(labels[j]) === project && services.includes(labels[j]!['com.docker.compose.service'] ?? '')
        ? [j]
        : [],
    );
  };
  const done = new Set<number>();
  const visiting = new Set<number>();
  const out: number[] = [];
  const visit = (i: number) => {
    if (done.has(i) || visiting.has(i)) return;
    visiting.add(i);
    for (const j of [...containerRefs(specs[i]!).map((ref) => index.get(ref)), ...composeDeps(i)]) {
      if (j !== undefined && j !== i) visit(j);
    }
    visiting.delete(i);
    done.add(i);
    out.push(i);
  };
  specs.forEach((_, i) => visit(i));
  return out;
}

/** The label Compose (v1 and v2) puts on every container, network and volume of a project. */
export const COMPOSE_PROJECT = 'com.docker.compose.project';
const COMPOSE_LABEL = /^com\.docker\.compose\./;

/** The labels without Compose's (`com.docker.compose.*`). Pure. */
export function withoutComposeLabels(labels: Record<string, string> | null | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(labels ?? {}).filter(([k]) => !COMPOSE_LABEL.test(k)));
}

/**
 * The labels to create a copy of a Compose service's container with, so that Compose does not
 * take the copy for the service: every Compose label of `own` or of the image set to the empty
 * string. An engine cannot drop a label the image has (a container gets every image label it does
 * not set itself), and a snapshot image carries the labels its container had when committed;
 * Compose finds its containers by label value, which an empty one does not match. Undefined when
 * neither has a Compose label. Pure.
 */
export function detachedFromCompose(
  own: Record<string, string> | null | undefined,
  fromImage: Record<string, string> | null | undefined,
): Record<string, string> | undefined {
  const keys = [...Object.keys(own ?? {}), ...Object.keys(fromImage ?? {})].filter((k) => COMPOSE_LABEL.test(k));
  if (!keys.length) return undefined;
  return { ...withoutComposeLabels(own), ...Object.fromEntries(keys.map((k) => [k, ''])) };
}

/**
 * The Compose project a container belongs to, from its labels; undefined for a container outside
 * any project and for a one-off (`docker compose run`) container, which is not part of the stack. Pure.
 */
export function composeProject(labels: Record<string, string> | null | undefined): string | undefined {
  const project = labels?.[COMPOSE_PROJECT];
  if (!project) return undefined;
  return /^true$/i.test(labels?.['com.docker.compose.oneoff'] ?? '') ? undefined : project;
}

/**
 * Containers that must travel together, from what each refers to (containerRefs, by name or id,
 * full or a unique prefix) and from the Compose project each belongs to (a stack restores as a
 * unit: its services find each other by name on the project's network): the connected groups,
 * each in the given order, groups in the order of their first member. References to containers
 * not in `list` are ignored. Pure.
 */
export function referenceGroups(list: { id: string; name: string; refs: string[]; project?: string }[]): string[][] {
  const parent = list.map((_, i) => i);
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i]!)));
  const resolve = (ref: string) => {
    const byName = list.findIndex((c) => c.name === ref);
    if (byName >= 0) return byName;
    const byId = list.filter((c) => c.id.startsWith(ref));
    return byId.length === 1 ? list.indexOf(byId[0]!) : -1;
  };
  list.forEach((c, i) => {
    for (const ref of c.refs) {
      const j = resolve(ref);
      if (j >= 0) parent[find(i)] = find(j);
    }
    const j = c.project === undefined ? -1 : list.findIndex((o) => o.project === c.project);
    if (j >= 0) parent[find(i)] = find(j);
  });
  const groups = new Map<number, string[]>();
  list.forEach((c, i) => {
    const root = find(i);
    if (!groups.has(root)) groups.set(root, []);
    groups.get(root)!.push(c.name);
  });
  return [...groups.values()].sort(
    (a, b) => list.findIndex((c) => c.name === a[0]) - list.findIndex((c) => c.name === b[0]),
  );
}

/** containerRefs of a container as `docker inspect` shows it (HostConfig, and per-network links). */
export function inspectRefs(inspect: {
  HostConfig?: Json;
  NetworkSettings?: { Networks?: Record<string, { Links?: string[] | null }> };
}): string[] {
  const endpoints = Object.values(inspect.NetworkSettings?.Networks ?? {}).map((n) => ({
    network: '',
    ...(n.Links?.length ? { links: n.Links } : {}),
  }));
  return containerRefs({ hostConfig: inspect.HostConfig ?? {}, endpoints } as ContainerSpec);
}

/** Whether two IPv4 CIDRs share an address; undefined when either is not IPv4. Pure. */
export function ipv4SubnetsOverlap(a: string, b: string): boolean | undefined {
  const [netA] = a.split('/') as [string];
  const [netB] = b.split('/') as [string];
  const aInB = ipv4InSubnet(netA, b);
  const bInA = ipv4InSubnet(netB, a);
  if (aInB === undefined || bInA === undefined) return undefined;
  return aInB || bInA; // CIDRs nest or are apart: one holds the other's network address
}

/** Whether an IPv4 address lies in an IPv4 CIDR (`10.1.0.0/16`); undefined when either is not IPv4. Pure. */
export function ipv4InSubnet(address: string, cidr: string): boolean | undefined {
  const num = (a: string) => {
    const parts = a.split('.');
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return undefined;
    return parts.reduce((n, p) => n * 256 + Number(p), 0);
  };
  const [net, bits] = cidr.split('/') as [string, string | undefined];
  const a = num(address);
  const n = num(net);
  const b = bits === undefined ? 32 : Number(bits);
  if (a === undefined || n === undefined || !Number.isInteger(b) || b < 0 || b > 32) return undefined;
  const size = 2 ** (32 - b);
  return Math.floor(a / size) === Math.floor(n / size);
}
