/**
 * Stage 5, run: recreate networks, volumes and containers with their captured settings, then
 * start them. Everything created is recorded in an Undo list so a failure removes it again;
 * nothing that existed before is touched unless --on-conflict replace asked for it.
 */
import { type Engine, LABEL_MANAGED } from '../../engine/engine.js';
import {
  COMPOSE_PROJECT,
  createPlan,
  asString,
  endpointCreateConfig,
  ipv4InSubnet,
  ipv4SubnetsOverlap,
  networkCreateOptions,
  parseBind,
  detachedFromCompose,
  type ContainerSpec,
  type NetworkSpec,
} from '../../model/spec.js';
import type { VolumeEntry } from '../../bundle/manifest.js';
import { ConflictError, NotFoundError } from '../../errors.js';
import type { Progress } from '../../context.js';
import { adoptAnonymousVolumes, hostPathExists, removeWithAnonymousVolumes } from '../../data/volumes.js';
import type { Routing } from '../../data/paths.js';

export type OnConflict = 'fail' | 'replace' | 'rename';

/** Undo actions, run in reverse order on failure. */
export class Undo {
  private readonly actions: { what: string; fn: () => Promise<void> }[] = [];
  add(what: string, fn: () => Promise<void>) {
    this.actions.push({ what, fn });
  }
  /** `verb` names the run in messages: `rollback` after a failure, `cleanup` when removal was the plan. */
  async run(progress: Progress, verb = 'rollback'): Promise<void> {
    for (const a of this.actions.reverse()) {
      try {
        progress.info(`${verb}: ${a.what}`);
        await a.fn();
      } catch (err) {
        progress.warn(`${verb} of "${a.what}" failed: ${(err as Error).message}`);
      }
    }
    this.actions.length = 0;
  }
  clear() {
    this.actions.length = 0;
  }
}

/** Pick free names under --on-conflict rename. */
export async function freeName(base: string, exists: (n: string) => Promise<boolean>): Promise<string> {
  if (!(await exists(base))) return base;
  for (let i = 1; i < 1000; i++) {
    const n = `${base}-restored${i === 1 ? '' : `-${i}`}`;
    if (!(await exists(n))) return n;
  }
  throw new ConflictError(`no free name near ${base}`);
}

export async function ensureNetwork(engine: Engine, n: NetworkSpec, undo: Undo, progress: Progress): Promise<void> {
  const existing = await engine.inspectNetwork(n.name);
  if (existing) {
    const want = (n.ipam?.Config ?? [])
      .map((c) => c.Subnet)
      .filter(Boolean)
      .sort()
      .join(',');
    const have = ((existing.IPAM?.Config ?? []) as { Subnet?: string }[])
      .map((c) => c.Subnet)
      .filter(Boolean)
      .sort()
      .join(',');
    if (want && have !== want)
      progress.warn(`network ${n.name} exists with subnet ${have || 'none'}, the bundle had ${want}; reusing it`);
    else progress.info(`network ${n.name} exists; reusing it`);
    return;
  }
  // The bundle's subnet is taken here (the original's network, when a copy goes beside it under
  // --map-network; another network on a new host): the engine would refuse it. No container has a
  // fixed address on it (checkStaticAddresses refused that up front), so any subnet will do.
  const taken = await subnetsTaken(engine, n);
  if (taken.length) {
    progress.warn(
      `network ${n.name}: its subnet ${ipv4Subnets(n).join(', ')} is taken here (${taken.join('; ')}); created with a subnet the engine picks`,
    );
    const ipv6 = (n.ipam?.Config ?? []).filter((c) => asString(c.Subnet).includes(':')); // kept: only IPv4 was checked
    n = { ...n, ipam: { ...(n.ipam ?? { Driver: 'default' }), Config: ipv6 } };
  }
  progress.step(`create network ${n.name}`);
  await engine.createNetwork(networkCreateOptions(n));
  undo.add(`remove network ${n.name}`, () => engine.removeNetwork(n.name));
}

/** The IPv4 subnets a network was created with. */
function ipv4Subnets(n: NetworkSpec): string[] {
  return (n.ipam?.Config ?? [])
    .map((c) => c.Subnet as string | undefined)
    .filter((x): x is string => !!x && !x.includes(':'));
}

/** Networks on the engine (other than `n` itself) whose IPv4 subnets overlap `n`'s: `name (subnet)`. */
async function subnetsTaken(
  engine: Engine,
  n: NetworkSpec,
  all?: Awaited<ReturnType<Engine['listNetworks']>>,
): Promise<string[]> {
  const mine = ipv4Subnets(n);
  if (!mine.length) return [];
  const out: string[] = [];
  for (const other of all ?? (await engine.listNetworks())) {
    if (other.Name === n.name) continue;
    for (const c of (other.IPAM?.Config ?? []) as { Subnet?: string }[])
      if (c.Subnet && mine.some((s) => ipv4SubnetsOverlap(s, c.Subnet!))) out.push(`${other.Name} (${c.Subnet})`);
  }
  return out;
}

/** Create (or, when asked, replace) a volume; returns its name on the target. */
export async function createVolume(
  engine: Engine,
  v: VolumeEntry,
  onConflict: OnConflict,
  undo: Undo,
  progress: Progress,
): Promise<string> {
  const labels = { ...(v.labels ?? {}) };
  if (v.anonymous) {
    const name = await engine.createVolume({ Driver: v.driver, DriverOpts: v.driverOpts, Labels: labels });
    undo.add(`remove volume ${name}`, () => engine.removeVolume(name));
    progress.step(`create volume ${name} (for anonymous volume ${v.name.slice(0, 12)})`);
    return name;
  }
  let name = v.name;
  if (await engine.inspectVolume(name)) {
    if (onConflict === 'fail')
      throw new ConflictError(
        `volume ${name} already exists`,
        'use --on-conflict replace to overwrite it, or rename to restore beside it',
      );
    if (onConflict === 'replace') {
      progress.step(`remove existing volume ${name} (--on-conflict replace)`);
      await engine.removeVolume(name);
    } else {
      name = await freeName(name, async (n) => !!(await engine.inspectVolume(n)));
    }
  }
  progress.step(`create volume ${name}`);
  await engine.createVolume({ Name: name, Driver: v.driver, DriverOpts: v.driverOpts, Labels: labels });
  undo.add(`remove volume ${name}`, () => engine.removeVolume(name));
  return name;
}

export async function createContainer(
  engine: Engine,
  spec: ContainerSpec,
  name: string,
  image: string,
  volumeNames: Record<string, string>,
  undo: Undo,
  progress: Progress,
  via?: Routing,
): Promise<string> {
  // A container under another name than it had is a copy (beside the original, a drill's, or a
  // restore under --name): with the original's Compose labels, `docker compose` would take it for
  // the project's service, and scaling back to one may remove the original.
  if (name !== spec.name) {
    const own = spec.config.Labels as Record<string, string> | undefined;
    const fromImage =
      ((await engine.inspectImage(image)).Config?.Labels as Record<string, string> | null | undefined) ?? undefined;
    const labels = detachedFromCompose(own, fromImage);
    if (labels) {
      const was = { ...fromImage, ...own };
      progress.info(
        `${name} is created with the Compose labels of ${spec.name} (service ${was['com.docker.compose.service'] || '?'} of project ${was[COMPOSE_PROJECT] || '?'}) emptied, so that docker compose does not take the copy for that service`,
      );
      spec = { ...spec, config: { ...spec.config, Labels: labels } };
    }
  }
  const plan = createPlan(spec, image, {
    volumeNames,
    multiEndpoint: engine.apiAtLeast('1.44'),
    bridge: engine.quirks.defaultBridge,
  });
  progress.step(`create container ${name}`);
  const id = await engine.createContainer(name, plan.body);
  // With the anonymous volumes its image's VOLUME lines made for it; never one it mounts by name.
  undo.add(`remove container ${name}`, () => removeWithAnonymousVolumes(engine, id));
  for (const e of plan.laterEndpoints) {
    await engine.connectNetwork(e.network, id, endpointCreateConfig(e));
  }
  // The data of its anonymous volumes, staged before it existed, into the ones the engine made.
  await adoptAnonymousVolumes(engine, id, spec, volumeNames, image, progress, via);
  return id;
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
  for (const b of (spec.hostConfig.Binds as string[] | undefined) ?? []) {
    const p = parseBind(b);
    if (p.source.startsWith('/')) out.push({ source: p.source, destination: p.destination, origin: 'binds' });
  }
  for (const m of (spec.hostConfig.Mounts as Record<string, unknown>[] | undefined) ?? [])
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
            subnets: ((n.IPAM?.Config ?? []) as { Subnet?: string }[])
              .map((c) => c.Subnet)
              .filter((x): x is string => !!x),
            holders: Object.values((n.Containers ?? {}) as Record<string, { Name?: string; IPv4Address?: string }>).map(
              (c) => ({ name: c.Name ?? '?', ip: (c.IPv4Address ?? '').split('/')[0]! }),
            ),
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

/** How long restore and migrate watch the containers they started before reporting. */
export const START_WATCH_MS = 2000;

/**
 * A service that exits right after its start (a missing config file, a port already taken by a
 * process, ...) was restored but does not run again. Watch the started containers for `ms`, and
 * warn with the exit code and the last lines of the log of each that stopped. Returns their exit
 * codes by container id. Call it once the run is complete (nothing to roll back any more).
 */
export async function watchStarted(
  engine: Engine,
  started: { name: string; id: string }[],
  progress: Progress,
  signal: AbortSignal,
  ms = START_WATCH_MS,
): Promise<Map<string, number>> {
  const exited = new Map<string, number>();
  if (!started.length) return exited;
  progress.step(`check that ${started.map((c) => c.name).join(', ')} keep${started.length === 1 ? 's' : ''} running`);
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
  if (signal.aborted) return exited; // the work is done: an interrupt only cuts the watch short
  for (const c of started) {
    const st = (await engine.inspectContainer(c.id).catch(() => undefined))?.State as
      { Running?: boolean; Restarting?: boolean; ExitCode?: number } | undefined;
    if (!st || (st.Running && !st.Restarting)) continue;
    const code = st.ExitCode ?? -1;
    exited.set(c.id, code);
    const log = (await engine.containerLogs(c.id, 5).catch(() => '')).trim();
    progress.warn(
      `${c.name} ${st.Restarting ? 'keeps restarting' : 'stopped'} right after its start (exit code ${code}); its data and settings are restored, but it does not run` +
        (log ? `. Its last log lines:\n  ${log.split('\n').join('\n  ')}` : '') +
        `\n  look with: docker logs ${c.name}`,
    );
  }
  return exited;
}

export { LABEL_MANAGED };
