/**
 * Stage 5, run: recreate networks, volumes and containers with their captured settings on a
 * target engine, then start and watch them: the one chain restore and migrate share
 * (`Recreation`). Everything created is recorded in an Undo list so a failure removes it again;
 * nothing that existed before is touched unless --on-conflict replace asked for it. The checks
 * made before anything changes are in preflight.ts.
 */
import { type Engine, LABEL_MANAGED } from '../../engine/engine.js';
import {
  COMPOSE_PROJECT,
  createPlan,
  asString,
  dependencyOrder,
  endpointCreateConfig,
  networkCreateOptions,
  detachedFromCompose,
  renameContainerRefs,
  type ContainerSpec,
  type NetworkSpec,
} from '../../model/spec.js';
import type { VolumeEntry } from '../../bundle/manifest.js';
import { ConflictError } from '../../errors.js';
import { checkAborted, type Progress } from '../../context.js';
import { adoptAnonymousVolumes, removeWithAnonymousVolumes, sweepHolders } from '../../data/volumes.js';
import { ipv4Subnets, subnetsTaken } from './preflight.js';
import { finishCommit, Replacement, replaceUnfinished, type CommitDone } from './replace.js';
import type { Routing } from '../../data/paths.js';
import { MadeJournal, type MadeObject, type ReplaceCommit } from '../../util/state.js';
import { faultPoint } from '../../util/fault.js';

export type OnConflict = 'fail' | 'replace' | 'rename';

/**
 * Undo actions, run in reverse order on failure. Given the engine, what each action removes
 * (`made`) is also journaled on disk until the undo is run or cleared, so that after a SIGKILL
 * the next run removes it (util/state.ts, MadeJournal; ops/steps/recover.ts).
 */
export class Undo {
  private readonly actions: { what: string; fn: () => Promise<void> }[] = [];
  constructor(
    private readonly engine?: Engine,
    private readonly journal = new MadeJournal(),
  ) {}
  add(what: string, fn: () => Promise<void>, made?: MadeObject) {
    this.actions.push({ what, fn });
    if (made) this.note(made);
  }
  /** Journal an object this run made (again, with what is known now: a container's id). */
  note(made: MadeObject): void {
    if (this.engine) this.journal.add(this.engine.facts.endpoint, this.engine.run.id, made);
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
    this.clear();
  }
  /** What was made stays: it is no longer this run's to remove. */
  clear() {
    this.actions.length = 0;
    if (this.engine) this.journal.drop(this.engine.facts.endpoint, this.engine.run.id);
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
    const have = (existing.IPAM?.Config ?? [])
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
  undo.add(`remove network ${n.name}`, () => engine.removeNetwork(n.name), { kind: 'network', name: n.name });
}

/** Create a volume (under a free name for --on-conflict rename); returns its name on the target. */
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
    undo.add(`remove volume ${name}`, () => engine.removeVolume(name), { kind: 'volume', name });
    progress.step(`create volume ${name} (for anonymous volume ${v.name.slice(0, 12)})`);
    return name;
  }
  let name = v.name;
  if (await engine.inspectVolume(name)) {
    // (--on-conflict replace never gets here with a volume that exists: it stages, replace.ts)
    if (onConflict !== 'rename')
      throw new ConflictError(
        `volume ${name} already exists`,
        'use --on-conflict replace to overwrite it, or rename to restore beside it',
      );
    name = await freeName(name, async (n) => !!(await engine.inspectVolume(n)));
  }
  progress.step(`create volume ${name}`);
  undo.note({ kind: 'volume', name }); // journaled first: a SIGKILL during the create leaves it too
  await engine.createVolume({ Name: name, Driver: v.driver, DriverOpts: v.driverOpts, Labels: labels });
  undo.add(`remove volume ${name}`, () => engine.removeVolume(name), { kind: 'volume', name });
  return name;
}

/** What ferry sends to create container `name` from `spec` on `engine` (createPlan, and the Compose labels of a copy emptied). */
export async function containerCreatePlan(
  engine: Engine,
  spec: ContainerSpec,
  name: string,
  image: string,
  volumeNames: Record<string, string>,
  progress: Progress,
): Promise<ReturnType<typeof createPlan>> {
  // A container under another name than it had is a copy (beside the original, a drill's, or a
  // restore under --name): with the original's Compose labels, `docker compose` would take it for
  // the project's service, and scaling back to one may remove the original.
  if (name !== spec.name) {
    const own = spec.config.Labels;
    const fromImage = (await engine.inspectImage(image)).Config?.Labels ?? undefined;
    const labels = detachedFromCompose(own, fromImage);
    if (labels) {
      const was = { ...fromImage, ...own };
      progress.info(
        `${name} is created with the Compose labels of ${spec.name} (service ${was['com.docker.compose.service'] || '?'} of project ${was[COMPOSE_PROJECT] || '?'}) emptied, so that docker compose does not take the copy for that service`,
      );
      spec = { ...spec, config: { ...spec.config, Labels: labels } };
    }
  }
  return createPlan(spec, image, {
    volumeNames,
    multiEndpoint: engine.apiAtLeast('1.44'),
    bridge: engine.quirks.defaultBridge,
  });
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
  const plan = await containerCreatePlan(engine, spec, name, image, volumeNames, progress);
  progress.step(`create container ${name}`);
  // Recorded before the create: where the engine made the container but its answer was lost,
  // the rollback finds it by its name (free before, so what holds it now is this run's).
  const made: { id?: string } = {};
  const wasFree = !(await engine.containerExists(name));
  // With the anonymous volumes its image's VOLUME lines made for it; never one it mounts by name.
  undo.add(
    `remove container ${name}`,
    async () => {
      const id = made.id ?? (wasFree ? (await engine.inspectContainer(name).catch(() => undefined))?.Id : undefined);
      if (id) await removeWithAnonymousVolumes(engine, id);
    },
    wasFree ? { kind: 'container', name } : undefined,
  );
  const id = await engine.createContainer(name, plan.body);
  made.id = id;
  if (wasFree) undo.note({ kind: 'container', name, id });
  await faultPoint('create');
  for (const e of plan.laterEndpoints) {
    await engine.connectNetwork(e.network, id, endpointCreateConfig(e));
  }
  // The data of its anonymous volumes, staged before it existed, into the ones the engine made.
  await adoptAnonymousVolumes(engine, id, spec, volumeNames, image, progress, via);
  return id;
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
    const st = (await engine.inspectContainer(c.id).catch(() => undefined))?.State;
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

/** One container to recreate on the target. */
export interface ToCreate {
  /** Its spec where it came from (bundle or source): the order of creation follows its references. */
  original: ContainerSpec;
  /** What it is created from (after --map-*, a drill's rewrite...), references not yet renamed. */
  spec: ContainerSpec;
  /** Its name on the target. */
  name: string;
  /** The image it is created from, on the target. */
  image: string;
  start: boolean;
  /** Paused again after its start (it was paused when captured). */
  pause?: boolean;
}

/** A container as recreated; exitCode: it stopped right after its start (see watchStarted). */
export interface Recreated {
  name: string;
  id: string;
  started: boolean;
  exitCode?: number;
}

/**
 * The chain restore and migrate share, on one target engine: networks -> volumes -> create ->
 * start -> watch, and the rollback of all of it. The op fills the volumes between `volume()` and
 * `create()` (from a bundle, or shipped from a source). Given an `undo`, the caller owns what was
 * made once the run succeeded (ferry drill removes it); else it stays. Under --on-conflict
 * replace, what is replaced stays intact until the new containers have passed their watch
 * (replace.ts).
 */
export class Recreation {
  /** The name each volume is mounted under on the target, by its name where it came from. */
  readonly volumeNames: Record<string, string> = {};
  readonly undo: Undo;
  private readonly owned: boolean;
  private readonly where: string;
  private readonly replacing: Replacement;
  private readonly via?: Routing;
  private list: ToCreate[] = [];

  constructor(
    readonly engine: Engine,
    private readonly ctx: { progress: Progress; signal: AbortSignal },
    opts: { undo?: Undo; where?: string; via?: Routing } = {},
  ) {
    this.undo = opts.undo ?? new Undo(engine);
    this.owned = !opts.undo;
    this.where = opts.where ? ` ${opts.where}` : '';
    this.replacing = new Replacement(engine, ctx.progress);
    this.via = opts.via;
  }

  async networks(networks: NetworkSpec[]): Promise<void> {
    for (const n of networks) await ensureNetwork(this.engine, n, this.undo, this.ctx.progress);
  }

  /** Whether this recreation replaces what is there (then it is committed only after the watch). */
  get replaces(): boolean {
    return this.replacing.active;
  }

  /** --on-conflict replace: these containers are there; they are set aside, not removed, until the new ones run. */
  replaceContainers(names: string[]): void {
    this.replacing.replaceContainers(names);
  }

  /**
   * Create volume `v` (its name on the target) for the one called `from` where it came from.
   * `fill`: the volume to write its data to; under --on-conflict replace, when `v` exists, a
   * staging volume (the existing one is untouched until the new containers have run).
   */
  async volume(from: string, v: VolumeEntry, onConflict: OnConflict): Promise<{ name: string; fill: string }> {
    if (onConflict === 'replace' && !v.anonymous && (await this.engine.inspectVolume(v.name))) {
      const staging = await this.replacing.stageVolume(v, this.undo);
      this.volumeNames[from] = staging;
      return { name: v.name, fill: staging };
    }
    const name = await createVolume(
      this.engine,
      v,
      onConflict === 'replace' ? 'fail' : onConflict,
      this.undo,
      this.ctx.progress,
    );
    this.volumeNames[from] = name;
    return { name, fill: name };
  }

  /**
   * Create the containers, each after those it refers to (container:<name> network,
   * volumes-from, links), whose references follow them to their names on the target. Those they
   * replace are set aside first.
   */
  async create(list: ToCreate[]): Promise<Recreated[]> {
    this.list = list;
    if (this.replacing.active) {
      await this.replacing.setAside(this.undo);
      await faultPoint('replace-aside');
    }
    return this.createOnly(list);
  }

  /**
   * Start those that are to run, in the same order; then nothing is rolled back any more (unless
   * replacing). A run told to stop before this does not start anything: past here the result stands.
   */
  async start(list: ToCreate[], out: Recreated[], abortable = true): Promise<void> {
    if (abortable) checkAborted(this.ctx.signal);
    for (const i of dependencyOrder(list.map((c) => c.original))) {
      const c = list[i]!;
      if (!c.start) continue;
      this.ctx.progress.step(`start ${out[i]!.name}${this.where}`);
      await this.engine.start(out[i]!.id);
      out[i]!.started = true;
      if (c.pause) await this.engine.pause(out[i]!.id);
    }
    if (this.owned && !this.replacing.active) this.undo.clear();
  }

  /**
   * Watch what was started for a moment; note the exit code of each that stopped. Under
   * --on-conflict replace this is the proof: a new container that stopped, or an interrupt,
   * fails the run (the old are put back); else the replace is committed. Returns the containers
   * as they are at the end (a committed replace creates them again).
   */
  async watch(out: Recreated[]): Promise<Recreated[]> {
    const { progress, signal } = this.ctx;
    await faultPoint('watch');
    const exited = await watchStarted(
      this.engine,
      out.filter((c) => c.started),
      progress,
      signal,
    );
    for (const c of out) if (exited.has(c.id)) c.exitCode = exited.get(c.id);
    if (!this.replacing.active) return out;
    checkAborted(signal);
    const failed = out.filter((c) => c.exitCode !== undefined);
    if (failed.length)
      throw new ConflictError(
        `${failed.map((c) => c.name).join(', ')} stopped right after its start, so it does not replace what was there`,
        "what was there is put back as it was, with its data; look at the new container's logs above, fix the cause and retry",
      );
    return this.commitReplace(out);
  }

  /**
   * The new containers proved themselves: the old go; the new data moves under the real names.
   * What finishing takes is journaled first (replace.ts, finishCommit): a run killed from here on
   * is finished by the next one. A failure leaves the staging volumes and that journal.
   */
  private async commitReplace(out: Recreated[]): Promise<Recreated[]> {
    const r = this.replacing;
    this.undo.clear(); // the old do not come back from here on
    const rec = r.beginCommit(await this.commitPlan(out));
    let done: CommitDone;
    try {
      // No interrupt cuts this short: the old go, the new must stand (a second signal still ends ferry at once).
      done = await finishCommit(this.engine, rec, (c) => r.saveCommit(c), this.ctx.progress, { via: this.via });
    } catch (err) {
      throw replaceUnfinished(this.engine, rec, err);
    }
    r.finish();
    for (const s of r.staged)
      for (const [from, name] of Object.entries(this.volumeNames))
        if (name === s.staging) this.volumeNames[from] = s.real;
    if (this.owned) this.undo.clear();
    if (!rec.commit.containers.length) return out; // nothing staged: the new containers stand as they are
    return out.map((c) => done.containers.find((k) => k.name === c.name) ?? c);
  }

  /**
   * How the commit ends, as ferry will send it: each new container's create body on the real
   * volumes (in creation order), each real volume's settings. Nothing staged (only containers
   * replaced): the new containers stay as they run, and only the old go.
   */
  private async commitPlan(out: Recreated[]): Promise<ReplaceCommit> {
    const r = this.replacing;
    const commit: ReplaceCommit = {
      at: new Date().toISOString(),
      trial: [],
      volumes: [],
      containers: [],
      done: [],
      made: {},
    };
    if (!r.staged.length) return commit;
    commit.trial = out.map((c) => c.id).filter(Boolean);
    commit.volumes = r.staged.map((s) => ({
      real: s.real,
      staging: s.staging,
      ...(s.entry.driver ? { driver: s.entry.driver } : {}),
      ...(s.entry.driverOpts ? { driverOpts: s.entry.driverOpts } : {}),
      ...(s.entry.labels ? { labels: s.entry.labels } : {}),
    }));
    const real = { ...this.volumeNames };
    for (const s of r.staged)
      for (const [from, name] of Object.entries(real)) if (name === s.staging) real[from] = s.real;
    const list = this.list;
    const renamed = Object.fromEntries(list.map((c) => [c.original.name, c.name]));
    const quiet: Progress = { ...this.ctx.progress, info() {}, step() {} };
    for (const i of dependencyOrder(list.map((c) => c.original))) {
      const c = list[i]!;
      const plan = await containerCreatePlan(
        this.engine,
        renameContainerRefs(c.spec, renamed),
        c.name,
        c.image,
        real,
        quiet,
      );
      commit.containers.push({
        name: c.name,
        body: plan.body,
        endpoints: plan.laterEndpoints.map((e) => ({ network: e.network, config: endpointCreateConfig(e) })),
        start: c.start,
        pause: !!c.pause,
        adopt: [],
      });
    }
    return commit;
  }

  private async createOnly(list: ToCreate[], abortable = true): Promise<Recreated[]> {
    const renamed = Object.fromEntries(list.map((c) => [c.original.name, c.name]));
    const out: Recreated[] = list.map((c) => ({ name: c.name, id: '', started: false }));
    for (const i of dependencyOrder(list.map((c) => c.original))) {
      if (abortable) checkAborted(this.ctx.signal);
      const c = list[i]!;
      const spec = renameContainerRefs(c.spec, renamed);
      out[i]!.id = await createContainer(
        this.engine,
        spec,
        c.name,
        c.image,
        this.volumeNames,
        this.undo,
        this.ctx.progress,
        this.via,
      );
      if (this.replacing.isAside) this.replacing.noteCreated(out[i]!.id);
    }
    return out;
  }

  /** After a failure: remove every helper (on `others` too), then what this run made, in reverse. */
  async rollback(others: Engine[] = []): Promise<void> {
    for (const e of [this.engine, ...others]) e.prepareCleanup();
    // First: a helper would keep a volume the undo removes in use.
    for (const e of [this.engine, ...others]) await sweepHolders(e);
    await this.undo.run(this.ctx.progress);
    this.replacing.forget();
  }
}

export { LABEL_MANAGED };
