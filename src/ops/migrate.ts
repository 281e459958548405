/**
 * ferry migrate: capture on the source, ship straight into the target, run there.
 *
 *   capture (inspect, preflight on the target) -> for each container: quiesce -> commit ->
 *   [image: save -> load, concurrently with volumes: archive GET -> archive PUT] -> resume
 *   -> create containers on the target -> start
 *
 * With a pre-copy the commit, too, goes beside the volumes' frozen listings and deltas, and the
 * target's side of the first frozen deltas is opened before the freeze (docs/precopy.md, Cutover).
 * `frozenSteps` in the result says what the freeze was spent on.
 *
 * --stop-source (the cutover): each source container is stopped cleanly before its snapshot and
 * is not resumed, so that nothing written to it after its snapshot is left behind.
 *
 * The pre-copy (data/precopy.ts, docs/precopy.md): where the volumes' directories are reached on
 * both hosts, each volume of a running container is copied while it runs, in passes, and once
 * it is paused or stopped only what changed since the last pass goes: the pause (or, for a
 * cutover, the downtime) is that delta, the commit and the image's top layer, not the whole data.
 *
 * No bundle is written anywhere. A failure removes what the target got and leaves the source as
 * it was (a source stopped for the cutover is started again).
 */
import type { Engine } from '../engine/engine.js';
import type { ContainerSpec } from '../model/spec.js';
import { EngineError, FerryError, UsageError } from '../errors.js';
import { containerQuiesce } from './steps/capture.js';
import {
  captureContainer,
  commitContainer,
  orchestratedBy,
  quiesce,
  removeSnapshot,
  snapshotRef,
  stopCleanly,
  type Captured,
  type Consistency,
  type Resume,
} from './steps/capture.js';
import { checkAborted, type RunContext } from '../context.js';
import { checkRemap, remapNetwork, remapSpec, remapVolume, type Remap } from '../plan/remap.js';
import { portClaims, portsOverlap, type PortClaim } from './steps/startable.js';
import { checkConflicts, preflight } from './steps/preflight.js';
import { freeName, Recreation, type OnConflict, type ToCreate } from './steps/recreate.js';
import { engineChainIds, shipImage, shipVolume } from '../data/ship.js';
import { volumeExcludes } from '../data/excludes.js';
import { recoverDeadRuns } from './steps/recover.js';
import { isRefused, routing, type DataPaths, type Routing } from '../data/paths.js';
import { finishVolume, precopyVolume, prepareFinish, type PrecopyArgs, type Precopied } from '../data/precopy.js';
import type { PreparedDelta } from '../data/volumes.js';
import { Timeline, type Span } from '../util/timeline.js';

export interface MigrateOptions {
  containers: string[];
  /** --consistency; absent: each container's `ferry.consistency` label, else pause (--stop-source: stop). */
  consistency?: Consistency;
  onConflict: OnConflict;
  start: boolean;
  stopSource: boolean;
  /** Consistency stop and --stop-source: seconds to wait for a clean stop (absent: the `ferry.stop-timeout` label, else the container's own). */
  stopTimeout?: number;
  /** --wait: seconds to wait for another ferry run that holds a container (absent: fail at once). */
  wait?: number;
  /** Volumes, host paths, ports and networks under other names on the target (--map-*). */
  remap?: Remap;
  /** Copy each volume while its container runs, then only what changed once it is frozen (default true; --no-precopy). */
  precopy?: boolean;
  /** --exclude-path: left out of every volume (data/excludes.ts), besides each container's ferry.exclude-paths label. */
  excludePaths?: string[];
}

export interface MigrateResult {
  /** exitCode: the container stopped right after its start on the target. */
  containers: { name: string; id: string; started: boolean; exitCode?: number }[];
  volumes: string[];
  imageBytes: number;
  volumeBytes: number;
  skippedLayers: number;
  totalLayers: number;
  durationMs: number;
  /** The longest time a source container was frozen (paused or stopped) by this run; a cutover: until the target ran. */
  pausedMs: number;
  /** --stop-source: from the first source container's stop until the containers on the target started and passed their watch. */
  downtimeMs?: number;
  /** Which data path carried each image (from the source) and each volume (read on the source, written on the target). */
  dataPaths: DataPaths;
  /**
   * What the freeze was spent on: each step (stop or pause, listing and delta of each volume,
   * commit, image, create, start, watch) with its start and end in ms since the first source
   * container was asked to freeze. Steps that ran at once overlap. Absent when nothing froze.
   */
  frozenSteps?: Span[];
}

/** What a migration moves and how, decided before anything changes. */
interface MigrateJob {
  captured: Captured[];
  /** How each source is quiesced. */
  how: Map<Captured, ReturnType<typeof containerQuiesce>>;
  /** Volumes and networks under their names on the target (--map-*). */
  onTarget: {
    volume: <V extends { name: string; anonymous: boolean }>(v: V) => V;
    network: (n: Captured['networks'][number]) => Captured['networks'][number];
  };
  /** What each captured container is created from on the target, in the same order. */
  targetSpecs: ContainerSpec[];
}

/** What the source must be given back: its snapshots, and the containers stopped for the cutover. */
interface SourceState {
  snapshots: string[];
  /** --stop-source: the sources stopped for their snapshots (started again only by a rollback). */
  cutover: Resume[];
  /** Stopped after the create (they were paused): started again by a rollback. */
  stopped: string[];
  /** --stop-source: when the first source container was stopped (the downtime starts). */
  downSince?: number;
}

/**
 * ferry migrate, as a story: capture and preflight (nothing changed yet) -> networks on the
 * target -> per container: quiesce, commit, ship image and volumes, resume -> create -> stop the
 * sources (--stop-source) -> start -> watch. A failure rolls the target back and gives the
 * source back as it was.
 */
export async function migrate(
  source: Engine,
  target: Engine,
  opts: MigrateOptions,
  ctx: RunContext,
): Promise<MigrateResult> {
  const started = Date.now();
  const { progress } = ctx;
  if (!opts.containers.length) throw new UsageError('name at least one container to migrate');
  for (const d of [...source.differences(), ...target.differences()]) progress.info(d);
  // What each engine's host offers the data paths: asked now, in the background.
  const via = { source: routing(ctx, source), target: routing(ctx, target) };
  await recoverDeadRuns(source, progress, undefined, undefined, undefined, via.source);
  await recoverDeadRuns(target, progress, undefined, undefined, undefined, via.target);
  const job = await planMigration(source, target, opts, progress);
  const rec = new Recreation(target, ctx, { where: `on ${target.facts.endpoint}`, via: via.target });
  const held: SourceState = { snapshots: [], cutover: [], stopped: [] };
  const timeline = new Timeline(ctx.debug);
  const result: MigrateResult = {
    containers: [],
    volumes: [],
    imageBytes: 0,
    volumeBytes: 0,
    skippedLayers: 0,
    totalLayers: 0,
    durationMs: 0,
    pausedMs: 0,
    dataPaths: { volumes: [], images: [] },
  };
  try {
    await rec.networks(job.captured.flatMap((c) => c.networks).map(job.onTarget.network));
    const holder = await target.ensureHolderImage();
    const names = await targetNames(rec, job.captured, opts);
    const images = await shipAll(source, rec, job, { opts, ctx, via, held, result, holder, timeline });
    const list: ToCreate[] = job.captured.map((c, i) => ({
      original: c.spec,
      spec: job.targetSpecs[i]!,
      name: names[c.spec.name]!,
      image: images[c.spec.name]!,
      start: opts.start && c.spec.state.running,
    }));
    result.containers = await timeline.time('create on the target', () => rec.create(list));
    if (opts.stopSource) await stopSources(source, job, held, progress, timeline);
    await timeline.time('start on the target', () => rec.start(list, result.containers));
    // Started on the target, and nothing there is rolled back any more: the sources stay stopped
    // from now on, even should the run be killed (a replace is committed only after the watch).
    if (!rec.replaces) for (const r of held.cutover) r.keep();
    result.containers = await timeline.time('watch on the target', () => rec.watch(result.containers));
    for (const r of held.cutover) r.keep(); // stopped for good: the service runs on the target now
    if (opts.stopSource) {
      result.downtimeMs = held.downSince === undefined ? 0 : Date.now() - held.downSince;
      result.pausedMs = Math.max(result.pausedMs, result.downtimeMs);
      if (held.downSince !== undefined)
        progress.info(
          `the service was down ${(result.downtimeMs / 1000).toFixed(1)} s (source stopped -> target running)`,
        );
    }
    result.durationMs = Date.now() - started;
    if (timeline.spans.length) result.frozenSteps = timeline.spans;
    return result;
  } catch (err) {
    await rec.rollback([source]);
    await giveBack(source, held, progress);
    throw transferError(err, source, target);
  } finally {
    for (const id of held.snapshots) await removeSnapshot(source, id).catch(() => {});
  }
}

/** Capture the sources, decide how each is quiesced and named on the target, and preflight the target. */
async function planMigration(
  source: Engine,
  target: Engine,
  opts: MigrateOptions,
  progress: RunContext['progress'],
): Promise<MigrateJob> {
  const captured: Captured[] = [];
  for (const c of opts.containers) {
    progress.step(`inspect ${c} on ${source.facts.endpoint}`);
    captured.push(await captureContainer(source, c));
  }
  const how = quiesceModes(captured, opts, progress);
  const allVolumes = captured
    .flatMap((c) => c.volumes)
    .filter((v, i, a) => a.findIndex((x) => x.name === v.name) === i);
  // On the target: volumes, networks and specs under the --map-* names (checked first).
  const r = opts.remap;
  if (r)
    checkRemap(r, {
      specs: captured.map((c) => c.spec),
      volumes: allVolumes,
      networks: captured.flatMap((c) => c.networks),
    });
  const onTarget: MigrateJob['onTarget'] = {
    volume: (v) => (r ? remapVolume(r, v) : v),
    network: (n) => (r ? remapNetwork(r, n) : n),
  };
  const names = captured.map((c) => c.spec.name);
  if (opts.onConflict === 'fail')
    await checkConflicts(
      target,
      names,
      allVolumes.map((v) => ({ ...onTarget.volume(v), member: '' })),
    );
  const targetSpecs = captured.map((c) => (r ? remapSpec(r, c.spec) : c.spec));
  // A port the source itself publishes may be held by the source on this very host (two engines
  // on one machine) until --stop-source stops it: found only by probing, that is a warning.
  const startable = captured.map((c, i) => {
    const own = portClaims(c.spec);
    return {
      spec: targetSpecs[i]!,
      start: opts.start && c.spec.state.running,
      soft: (p: PortClaim) => opts.stopSource && own.some((o) => portsOverlap(o, p)),
    };
  });
  await preflight(
    target,
    {
      startable,
      volumes: allVolumes.map(onTarget.volume),
      networks: captured.flatMap((c) => c.networks).map(onTarget.network),
      replacing: new Set(opts.onConflict === 'replace' ? names : []),
      // Bind data does not travel: its host paths must be there on the target.
      probeImage: () => target.ensureHolderImage(),
    },
    progress,
  );
  return { captured, how, onTarget, targetSpecs };
}

/**
 * How each source is quiesced, as for backup (labels unless the command line says); a source
 * resumed after its snapshot would go on taking writes that never reach the target: --stop-source stops.
 */
function quiesceModes(captured: Captured[], opts: MigrateOptions, progress: RunContext['progress']): MigrateJob['how'] {
  const how = new Map(
    captured.map((c) => [
      c,
      containerQuiesce(c.spec.name, c.labels, {
        consistency: opts.stopSource ? 'stop' : opts.consistency,
        stopTimeout: opts.stopTimeout,
      }),
    ]),
  );
  for (const c of captured) {
    const by = how.get(c)!.mode === 'stop' ? orchestratedBy(c.labels) : undefined;
    if (by)
      progress.warn(
        `${c.spec.name} is a task of ${by}: when it is stopped on the source, swarm starts a replacement there; scale the service down (or use swarm's own tools) for a cutover`,
      );
  }
  return how;
}

/** Each container's name on the target: its own; under --on-conflict rename a free one; replace removes what is there. */
async function targetNames(
  rec: Recreation,
  captured: Captured[],
  opts: MigrateOptions,
): Promise<Record<string, string>> {
  const target = rec.engine;
  const names: Record<string, string> = {};
  for (const c of captured) {
    let name = c.spec.name;
    if (await target.containerExists(name)) {
      if (opts.onConflict === 'replace') rec.replaceContainers([name]);
      else name = await freeName(name, (n) => target.containerExists(n));
    }
    names[c.spec.name] = name;
  }
  return names;
}

interface ShipRun {
  opts: MigrateOptions;
  ctx: RunContext;
  via: { source: Routing; target: Routing };
  held: SourceState;
  result: MigrateResult;
  /** The holder image on the target, that volumes are written through. */
  holder: string;
  /** What the freeze is spent on (result.frozenSteps). */
  timeline: Timeline;
}

/** Every container in turn: quiesce, commit, ship; returns the image of each on the target, by name. */
async function shipAll(
  source: Engine,
  rec: Recreation,
  job: MigrateJob,
  run: ShipRun,
): Promise<Record<string, string>> {
  const when = new Date();
  const images: Record<string, string> = {};
  for (const c of job.captured) {
    checkAborted(run.ctx.signal);
    images[c.spec.name] = await shipOne(source, rec, c, job, snapshotRef(c.spec.name, when), run);
  }
  return images;
}

/**
 * One container: pre-copy its volumes while it runs (each created on the target first), open the
 * frozen pass's way into each, quiesce it, then commit it and ship the image while the volumes'
 * last deltas (or, without a pre-copy, the whole volumes) go; then resume it (not under
 * --stop-source). Returns the image's reference.
 */
async function shipOne(
  source: Engine,
  rec: Recreation,
  c: Captured,
  job: MigrateJob,
  ref: { repo: string; tag: string },
  run: ShipRun,
): Promise<string> {
  const { opts, ctx, via } = run;
  const { progress, signal } = ctx;
  const target = rec.engine;
  const { mode } = job.how.get(c)!;
  const freezes = mode !== 'none' && c.spec.state.running && !c.spec.state.paused;
  // Pre-copy while it runs: once frozen, only what changed since goes.
  const targets = new Map<string, { name: string; fill: string }>();
  const pre = new Map<string, { args: PrecopyArgs; done: Precopied }>();
  const notPre = new Map<string, string>();
  if (freezes && opts.precopy !== false)
    for (const v of c.volumes) {
      if (v.name in rec.volumeNames) continue;
      checkAborted(signal);
      const t = await rec.volume(v.name, { ...job.onTarget.volume(v), member: '' }, opts.onConflict);
      targets.set(v.name, t);
      const args: PrecopyArgs = {
        source,
        spec: c.spec,
        volume: v.name,
        exclude: volumeExcludes(opts.excludePaths, v.excludePaths),
        target,
        holder: run.holder,
        fill: t.fill,
        progress,
        via,
        signal,
      };
      const done = await precopyVolume(args);
      if (isRefused(done)) {
        progress.info(`volume ${v.name}: no pre-copy (${done.refused}); copied whole once ${c.spec.name} is frozen`);
        notPre.set(v.name, done.refused);
      } else pre.set(v.name, { args, done });
    }
  // The frozen pass's way into the first target volumes, opened while the source still runs.
  const ready = new Map<string, PreparedDelta>();
  const closeReady = async () => {
    const all = [...ready.values()];
    ready.clear();
    await Promise.all(all.map((r) => r.close()));
  };
  try {
    for (const [name, p] of [...pre].slice(0, PREPARED_AHEAD)) {
      checkAborted(signal);
      ready.set(name, await prepareFinish(p.args));
    }
    return await frozen(source, rec, c, job, ref, run, { targets, pre, notPre, ready, closeReady });
  } finally {
    await closeReady();
  }
}

/**
 * How many volumes have their frozen pass's way in (a helper and two shells on the target) opened
 * before the freeze; the others open theirs at their turn, as they did before. Over SSH each
 * shell is a session of the run's one connection, which OpenSSH allows 10 of at once by default
 * (MaxSessions), and the image and the other volumes need theirs meanwhile.
 */
export const PREPARED_AHEAD = 2;

/** shipOne from the freeze on. */
async function frozen(
  source: Engine,
  rec: Recreation,
  c: Captured,
  job: MigrateJob,
  ref: { repo: string; tag: string },
  run: ShipRun,
  got: {
    targets: Map<string, { name: string; fill: string }>;
    pre: Map<string, { args: PrecopyArgs; done: Precopied }>;
    notPre: Map<string, string>;
    ready: Map<string, PreparedDelta>;
    closeReady: () => Promise<void>;
  },
): Promise<string> {
  const { opts, ctx, via, held, result, timeline } = run;
  const { progress, signal } = ctx;
  const { targets, pre, notPre, ready } = got;
  const target = rec.engine;
  const fullRef = `${ref.repo}:${ref.tag}`;
  const { mode, stopTimeout } = job.how.get(c)!;
  const freezes = mode !== 'none' && c.spec.state.running && !c.spec.state.paused;
  // Frozen from the moment it is asked to pause or stop (a stop may take its whole timeout).
  const frozenAt = Date.now();
  // What the target holds of the image's layers is asked while the source stops and commits (a
  // pre-copy's frozen part is short: the image's planning would otherwise come after the commit).
  const targetChains = pre.size && target.quirks.loadsPartialImages ? engineChainIds(target) : undefined;
  if (freezes) timeline.start(frozenAt);
  const resume = await timeline.time(`${mode === 'stop' || opts.stopSource ? 'stop' : mode} ${c.spec.name}`, () =>
    quiesce(source, c.spec, mode, progress, { stopTimeout, waitSeconds: opts.wait, signal }),
  );
  if (opts.stopSource) held.cutover.push(resume);
  if (freezes) {
    if (opts.stopSource) held.downSince ??= frozenAt;
    progress.frozen?.(c.spec.name, mode === 'stop' || opts.stopSource ? 'stopped' : 'paused');
    progress.info(
      opts.stopSource
        ? `${c.spec.name} is stopped on the source: the service is down until it runs on ${target.facts.endpoint}`
        : `${c.spec.name} is ${mode === 'stop' ? 'stopped' : 'paused'} on the source until its ${pre.size ? 'changes since the pre-copy' : 'volumes'} and its snapshot are taken`,
    );
  }
  let shipping: Promise<void> | undefined;
  let committing: Promise<unknown> | undefined;
  let closing: Promise<void> | undefined;
  try {
    // The commit and the image go while the volumes do (nothing of one depends on the other once
    // the container is frozen): with a pre-copy, the commit too, beside the frozen listing and delta.
    progress.step(`commit ${c.spec.name}`);
    const commit = timeline.time(`commit ${c.spec.name}`, () => commitContainer(source, c.spec, ref, mode));
    committing = commit;
    commit.catch(() => {});
    if (!pre.size) await commit;
    shipping = commit.then(async (committed) => {
      held.snapshots.push(committed.id);
      // Its reference is this run's own (the snapshot's time).
      progress.step(`image ${fullRef} -> ${target.facts.endpoint}`);
      rec.undo.note({ kind: 'image', name: fullRef });
      const shipped = timeline.span(`image of ${c.spec.name}`);
      const s = await shipImage(source, target, fullRef, progress, via.source, via.target, signal, targetChains);
      shipped();
      result.dataPaths.images.push({ container: c.spec.name, ref: fullRef, ...s.carried });
      progress.via?.(`image ${fullRef}`, `${s.carried.path} -> ${s.carried.target.path}`);
      result.imageBytes += s.bytes;
      result.skippedLayers += s.skippedLayers;
      result.totalLayers += s.totalLayers;
      rec.undo.add(`remove image ${fullRef} from the target`, () => target.removeImage(fullRef), {
        kind: 'image',
        name: fullRef,
      });
    });
    shipping.catch(() => {});
    for (const v of c.volumes) {
      if (v.name in rec.volumeNames && !targets.has(v.name)) continue;
      checkAborted(signal);
      const { name, fill } =
        targets.get(v.name) ?? (await rec.volume(v.name, { ...job.onTarget.volume(v), member: '' }, opts.onConflict));
      const p = pre.get(v.name);
      if (p) {
        const f = await finishVolume(p.args, p.done, timeline, ready.get(v.name));
        result.volumeBytes += p.done.report.runningBytes + f.bytes;
        result.volumes.push(name);
        result.dataPaths.volumes.push({ name, ...p.done.read, target: p.done.written, precopy: f.report });
        continue;
      }
      progress.step(`volume ${v.name} -> ${fill} on ${target.facts.endpoint}`);
      const shipped = await timeline.time(`volume ${v.name}`, () =>
        shipVolume(
          source,
          c.spec,
          v.name,
          target,
          run.holder,
          fill,
          progress,
          via,
          volumeExcludes(opts.excludePaths, v.excludePaths),
        ),
      );
      result.volumeBytes += shipped.bytes;
      result.volumes.push(name);
      progress.via?.(`volume ${v.name}`, `${shipped.read.path} -> ${shipped.written.path}`);
      const why = notPre.get(v.name);
      result.dataPaths.volumes.push({
        name,
        ...shipped.read,
        target: shipped.written,
        ...(why ? { precopy: { refused: why } } : {}),
      });
    }
    closing = got.closeReady(); // the helpers go while the image may still travel
  } catch (err) {
    await shipping?.catch(() => {});
    throw err;
  } finally {
    // Never running again before its snapshot is taken.
    await committing?.catch(() => {});
    if (!opts.stopSource) {
      await timeline.time(`resume ${c.spec.name}`, resume); // else: on failure, the rollback starts it again
      if (freezes) {
        const ms = Date.now() - frozenAt;
        result.pausedMs = Math.max(result.pausedMs, ms);
        progress.frozen?.(c.spec.name, mode === 'stop' ? 'stopped' : 'paused', ms);
        progress.info(`${c.spec.name} was ${mode === 'stop' ? 'stopped' : 'paused'} ${(ms / 1000).toFixed(1)} s`);
      }
    }
  }
  // Both settle before the run goes on: a rollback must not race the helpers' removal.
  for (const s of await Promise.allSettled([shipping, closing])) if (s.status === 'rejected') throw s.reason;
  return fullRef;
}

/** --stop-source: stopped before their snapshots; what still runs (a container that was paused) stops now. */
async function stopSources(
  source: Engine,
  job: MigrateJob,
  held: SourceState,
  progress: RunContext['progress'],
  timeline: Timeline,
): Promise<void> {
  for (const c of job.captured) {
    const st = await source.inspectContainer(c.spec.sourceId);
    if (!st.State.Running) continue;
    progress.step(`stop ${c.spec.name} on the source (--stop-source)`);
    held.downSince ??= Date.now();
    timeline.start(held.downSince);
    await timeline.time(`stop ${c.spec.name}`, () =>
      stopCleanly(source, c.spec.sourceId, c.spec.name, job.how.get(c)!.stopTimeout, progress),
    );
    held.stopped.push(c.spec.sourceId);
  }
}

/** After a failure: the sources stopped for the cutover, or after the create, run again. */
async function giveBack(source: Engine, held: SourceState, progress: RunContext['progress']): Promise<void> {
  for (const r of held.cutover)
    await r().catch((e) =>
      progress.warn(`rollback: could not start a source container again: ${(e as Error).message}`),
    );
  for (const id of held.stopped) {
    progress.info(`rollback: start the source container ${id.slice(0, 12)} again`);
    await source.start(id).catch((e) => progress.warn(`could not start the source again: ${(e as Error).message}`));
  }
}

/** A stream torn down under us (connection lost) is reported as such, not as an internal error. */
function transferError(err: unknown, source: Engine, target: Engine): unknown {
  if (err instanceof FerryError) return err;
  const code = (err as NodeJS.ErrnoException)?.code ?? (err as Error)?.name;
  if (
    ['ERR_STREAM_PREMATURE_CLOSE', 'ECONNRESET', 'EPIPE', 'ABORT_ERR', 'AbortError', 'ERR_STREAM_DESTROYED'].includes(
      String(code),
    )
  )
    return new EngineError(`the transfer from ${source.facts.endpoint} to ${target.facts.endpoint} was cut (${code})`, {
      cause: err,
      hint: 'check the connection to both engines and retry; what the target had received was removed',
    });
  return err;
}
