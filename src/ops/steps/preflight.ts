/**
 * Preflight for recreating containers on a target engine (restore, migrate): everything that can
 * be asked before anything changes, so that a run that cannot finish is refused with nothing
 * touched. Conflicts, bind sources, static addresses here; what a container takes from the
 * engine when it starts (runtimes, ports, devices, host settings) in startable.ts.
 */
import type { Engine } from '../../engine/engine.js';
import { ipv4InSubnet, ipv4SubnetsOverlap, parseBind, type ContainerSpec, type NetworkSpec } from '../../model/spec.js';
import type { VolumeEntry } from '../../bundle/manifest.js';
import { ConflictError, NotFoundError } from '../../errors.js';
import type { Progress } from '../../context.js';
import { hostPathExists } from '../../data/volumes.js';
import {
  checkDevices,
  checkEngineSupport,
  checkHostPorts,
  checkHostResources,
  type StartCheckItem,
} from './startable.js';

/** What a recreation is checked against before anything changes. */
export interface PreflightPlan {
  /** The containers as they will be created, and whether this run starts each. */
  startable: StartCheckItem[];
  /** The volumes as they will be created (names after any rewrite). */
  volumes: { name: string; driver: string }[];
  /** The networks as they will be created. */
  networks: NetworkSpec[];
  /** Containers on the target that this run replaces (their ports and addresses are freed). */
  replacing: ReadonlySet<string>;
  /** Bind checks per container (restore: what the bundle holds and writes); default: every spec, nothing written. */
  binds?: { spec: ContainerSpec; written?: ReadonlySet<string>; inBundle?: ReadonlySet<string> }[];
  /** The holder image to probe the target with (undefined: what needs one is not probed). */
  probeImage: () => Promise<string | undefined>;
}

/**
 * Every check, in order: engine support, static addresses, bind sources, host ports, devices,
 * host resources. Throws the first refusal (a ConflictError, NotFoundError, ...).
 */
export async function preflight(engine: Engine, p: PreflightPlan, progress: Progress): Promise<void> {
  const specs = p.startable.map((s) => s.spec);
  const starts = (spec: ContainerSpec) => p.startable.find((s) => s.spec === spec)?.start !== false;
  await checkEngineSupport(engine, { specs, volumes: p.volumes, networks: p.networks });
  await checkStaticAddresses(engine, specs, p.networks, { replacing: p.replacing, starts });
  if (specs.some((spec) => bindSources(spec).length))
    await checkBindSources(engine, await p.probeImage(), p.binds ?? specs.map((spec) => ({ spec })), progress);
  await checkHostPorts(engine, p.startable, { replacing: p.replacing, image: p.probeImage, progress });
  await checkDevices(engine, p.startable, { image: p.probeImage, progress });
  await checkHostResources(engine, p.startable, { image: p.probeImage, progress });
}

/** Preflight for --on-conflict fail: refuse before touching anything. */
export async function checkConflicts(engine: Engine, containers: string[], volumes: VolumeEntry[]): Promise<void> {
  const problems: string[] = [];
  for (const c of containers) if (await engine.containerExists(c)) problems.push(`container ${c}`);
  for (const v of volumes) if (!v.anonymous && (await engine.inspectVolume(v.name))) problems.push(`volume ${v.name}`);
  if (problems.length)
    throw new ConflictError(
      `already on the engine: ${problems.join(', ')}`,
      'nothing was changed; use --on-conflict rename to restore beside them, or --on-conflict replace to remove them first',
    );
}

/**
 * The host paths a container is to be created with, from the create options themselves (what
 * a rewrite such as a drill's turned into a volume is no bind any more). Pure.
 */
export function bindSources(
  spec: ContainerSpec,
): { source: string; destination: string; origin: 'binds' | 'mounts' }[] {
  const out: { source: string; destination: string; origin: 'binds' | 'mounts' }[] = [];
  for (const b of spec.hostConfig.Binds ?? []) {
    const p = parseBind(b);
    if (p.source.startsWith('/')) out.push({ source: p.source, destination: p.destination, origin: 'binds' });
  }
  for (const m of spec.hostConfig.Mounts ?? [])
    if (m.Type === 'bind' && typeof m.Source === 'string' && typeof m.Target === 'string')
      out.push({ source: m.Source, destination: m.Target, origin: 'mounts' });
  return out;
}

/**
 * Preflight for bind mounts on the target, before anything changes. A host path that does not
 * exist there is created empty by the engine for a `-v` bind (the service would start without its
 * files: a warning), and refused at create for a `--mount` bind (a NotFoundError now, instead of
 * a rollback later). `written`: the destinations whose data this run writes (restore
 * --restore-binds). `image`: the holder image to ask with; without one nothing is checked.
 */
export async function checkBindSources(
  engine: Engine,
  image: string | undefined,
  containers: { spec: ContainerSpec; written?: ReadonlySet<string>; inBundle?: ReadonlySet<string> }[],
  progress: Progress,
): Promise<void> {
  if (!image) return;
  const refused: string[] = [];
  for (const { spec, written, inBundle } of containers) {
    for (const m of bindSources(spec)) {
      if (written?.has(m.destination)) continue;
      if ((await hostPathExists(engine, image, m.source)) !== false) continue;
      if (m.origin === 'mounts') {
        refused.push(`${spec.name}: ${m.source} (mounted at ${m.destination})`);
        continue;
      }
      progress.warn(
        `${spec.name}: bind mount source ${m.source} (at ${m.destination}) does not exist on ${engine.facts.endpoint}; the engine will create it as an empty directory. ` +
          `Put its contents in place first, or point restore or migrate elsewhere with --map-bind${inBundle?.has(m.destination) ? ', or let restore write the copy in the bundle with --restore-binds' : ''}`,
      );
    }
  }
  if (refused.length)
    throw new NotFoundError(
      `bind mount sources missing on ${engine.facts.endpoint}: ${refused.join('; ')}`,
      'the engine refuses to create these containers; create the paths (with their contents), or point restore or migrate elsewhere with --map-bind; nothing was changed',
    );
}

/**
 * Preflight for static addresses, before anything changes: a container with a fixed IPv4 address
 * on a network that already exists on the target (reused, or joined through --map-network) can
 * only be created when the address lies in that network's subnet, and started (`starts`) when no
 * container there holds it (one this run replaces, `replacing`, is gone by then); on a network created from
 * the bundle (`networks`, as they will be created), only when no other network on the target
 * holds its subnet. Otherwise the engine refuses it after everything else was restored. Throws a
 * ConflictError naming each misfit.
 */
export async function checkStaticAddresses(
  engine: Engine,
  specs: ContainerSpec[],
  networks: NetworkSpec[] = [],
  opts: { replacing?: ReadonlySet<string>; starts?: (spec: ContainerSpec) => boolean } = {},
): Promise<void> {
  const problems: string[] = [];
  const existing = new Map<string, { subnets: string[]; holders: { name: string; ip: string }[] } | undefined>();
  let all: Awaited<ReturnType<Engine['listNetworks']>> | undefined;
  for (const spec of specs) {
    for (const e of spec.endpoints) {
      if (!e.ipv4Address) continue;
      if (!existing.has(e.network)) {
        const n = await engine.inspectNetwork(e.network);
        existing.set(
          e.network,
          n && {
            subnets: (n.IPAM?.Config ?? []).map((c) => c.Subnet).filter((x): x is string => !!x),
            holders: Object.values(n.Containers ?? {}).map((c) => ({
              name: c.Name ?? '?',
              ip: (c.IPv4Address ?? '').split('/')[0]!,
            })),
          },
        );
      }
      const net = existing.get(e.network);
      if (net === undefined) {
        // Created from the bundle, with its subnet: unless another network here has that subnet.
        const fromBundle = networks.find((n) => n.name === e.network);
        const taken = fromBundle ? await subnetsTaken(engine, fromBundle, (all ??= await engine.listNetworks())) : [];
        if (taken.length)
          problems.push(
            `${spec.name}: ${e.ipv4Address} on ${e.network}, whose subnet ${ipv4Subnets(fromBundle!).join(', ')} is taken here by ${taken.join(', ')}`,
          );
        continue;
      }
      // (taken only once it starts: a container created and not started does not need it yet)
      const holder =
        opts.starts?.(spec) === false
          ? undefined
          : net.holders.find((h) => h.ip === e.ipv4Address && !opts.replacing?.has(h.name));
      if (holder) {
        problems.push(`${spec.name}: ${e.ipv4Address} on ${e.network}, which container ${holder.name} holds`);
        continue;
      }
      if (!net.subnets.length) continue; // no subnet to check against
      const fits = net.subnets.map((n) => ipv4InSubnet(e.ipv4Address!, n));
      if (fits.includes(true) || !fits.includes(false)) continue;
      problems.push(`${spec.name}: ${e.ipv4Address} on ${e.network} (its subnet here: ${net.subnets.join(', ')})`);
    }
  }
  if (problems.length)
    throw new ConflictError(
      `static addresses that cannot be had on ${engine.facts.endpoint}: ${problems.join('; ')}`,
      'nothing was changed; restore onto another network with --map-network (an existing one is joined), or remove or recreate the network here that holds the subnet, or stop the container that holds the address',
    );
}

/** The IPv4 subnets a network was created with. */
export function ipv4Subnets(n: NetworkSpec): string[] {
  return (n.ipam?.Config ?? [])
    .map((c) => c.Subnet as string | undefined)
    .filter((x): x is string => !!x && !x.includes(':'));
}

/** Networks on the engine (other than `n` itself) whose IPv4 subnets overlap `n`'s: `name (subnet)`. */
export async function subnetsTaken(
  engine: Engine,
  n: NetworkSpec,
  all?: Awaited<ReturnType<Engine['listNetworks']>>,
): Promise<string[]> {
  const mine = ipv4Subnets(n);
  if (!mine.length) return [];
  const out: string[] = [];
  for (const other of all ?? (await engine.listNetworks())) {
    if (other.Name === n.name) continue;
    for (const c of other.IPAM?.Config ?? [])
      if (c.Subnet && mine.some((s) => ipv4SubnetsOverlap(s, c.Subnet!))) out.push(`${other.Name} (${c.Subnet})`);
  }
  return out;
}
