/**
 * ferry migrate: capture on the source, ship straight into the target, run there.
 *
 *   capture (inspect, preflight on the target) -> for each container: quiesce -> commit ->
 *   [image: save -> load, concurrently with volumes: archive GET -> archive PUT] -> resume
 *   -> create containers on the target -> start
 *
 * --stop-source (the cutover): each source container is stopped cleanly before its snapshot and
 * is not resumed, so that nothing written to it after its snapshot is left behind.
 *
 * No bundle is written anywhere. A failure removes what the target got and leaves the source as
 * it was (a source stopped for the cutover is started again).
 */
import type { Engine } from '../engine/engine.js';
import { dependencyOrder, renameContainerRefs } from '../model/spec.js';
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
import {
  checkDevices,
  checkEngineSupport,
  checkHostPorts,
  checkHostResources,
  portClaims,
  portsOverlap,
  type PortClaim,
} from './steps/startable.js';
import {
  bindSources,
  checkBindSources,
  checkConflicts,
  checkStaticAddresses,
  createContainer,
  createVolume,
  ensureNetwork,
  freeName,
  Undo,
  watchStarted,
  type OnConflict,
} from './steps/recreate.js';
import { shipImage, shipVolume } from '../data/ship.js';
import { sweepHolders } from '../data/volumes.js';
import { recoverDeadRuns } from './steps/recover.js';
import { routing, type DataPaths } from '../data/paths.js';

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
  /** Which data path carried each image (from the source) and each volume (read on the source, written on the target). */
  dataPaths: DataPaths;
}

export async function migrate(
  source: Engine,
  target: Engine,
  opts: MigrateOptions,
  ctx: RunContext,
): Promise<MigrateResult> {
  const started = Date.now();
  const { progress, signal } = ctx;
  if (!opts.containers.length) throw new UsageError('name at least one container to migrate');
  const when = new Date();
  for (const d of [...source.differences(), ...target.differences()]) progress.info(d);
  // What each engine's host offers the data paths: asked now, in the background.
  const via = { source: routing(ctx, source), target: routing(ctx, target) };
  for (const e of [source, target]) await recoverDeadRuns(e, progress);
  const captured: Captured[] = [];
  for (const c of opts.containers) {
    progress.step(`inspect ${c} on ${source.facts.endpoint}`);
    captured.push(await captureContainer(source, c));
  }
  const names = captured.map((c) => c.spec.name);
  // How each source is quiesced, as for backup (labels unless the command line says); a source
  // resumed after its snapshot would go on taking writes that never reach the target: --stop-source stops.
  const how = new Map(
    captured.map((c) => [
      c,
      containerQuiesce(c.spec.name, c.labels, {
        consistency: opts.stopSource ? 'stop' : opts.consistency,
        stopTimeout: opts.stopTimeout,
      }),
    ]),
  );
  for (const c of captured)
    if (how.get(c)!.mode === 'stop') {
      const by = orchestratedBy(c.labels);
      if (by)
        progress.warn(
          `${c.spec.name} is a task of ${by}: when it is stopped on the source, swarm starts a replacement there; scale the service down (or use swarm's own tools) for a cutover`,
        );
    }
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
  const onTarget = {
    volume: <V extends { name: string; anonymous: boolean }>(v: V): V => (r ? remapVolume(r, v) : v),
    network: (n: Captured['networks'][number]) => (r ? remapNetwork(r, n) : n),
    spec: (s: Captured['spec']) => (r ? remapSpec(r, s) : s),
  };
  if (opts.onConflict === 'fail')
    await checkConflicts(
      target,
      names,
      allVolumes.map((v) => ({ ...onTarget.volume(v), member: '' })),
    );
  const targetSpecs = captured.map((c) => ({ spec: onTarget.spec(c.spec) }));
  const targetNetworks = captured.flatMap((c) => c.networks).map(onTarget.network);
  // A port the source itself publishes may be held by the source on this very host (two engines
  // on one machine) until --stop-source stops it: found only by probing, that is a warning.
  const startable = captured.map((c, i) => {
    const own = portClaims(c.spec);
    return {
      spec: targetSpecs[i]!.spec,
      start: opts.start && c.spec.state.running,
      soft: (p: PortClaim) => opts.stopSource && own.some((o) => portsOverlap(o, p)),
    };
  });
  const starts = (spec: Captured['spec']) => startable.find((s) => s.spec === spec)?.start !== false;
  await checkEngineSupport(target, {
    specs: targetSpecs.map((c) => c.spec),
    volumes: allVolumes.map(onTarget.volume),
    networks: targetNetworks,
  });
  const replacing = new Set(opts.onConflict === 'replace' ? names : []);
  await checkStaticAddresses(
    target,
    targetSpecs.map((c) => c.spec),
    targetNetworks,
    { replacing, starts },
  );
  // Bind data does not travel: its host paths must be there on the target.
  if (targetSpecs.some((c) => bindSources(c.spec).length))
    await checkBindSources(target, await target.ensureHolderImage(), targetSpecs, progress);
  await checkHostPorts(target, startable, { replacing, image: () => target.ensureHolderImage(), progress });
  await checkDevices(target, startable, { image: () => target.ensureHolderImage(), progress });
  await checkHostResources(target, startable, { image: () => target.ensureHolderImage(), progress });

  const undo = new Undo();
  const snapshots: string[] = [];
  const stoppedSources: string[] = [];
  /** --stop-source: the sources stopped for their snapshots (started again only by a rollback). */
  const cutover: Resume[] = [];
  const result: MigrateResult = {
    containers: [],
    volumes: [],
    imageBytes: 0,
    volumeBytes: 0,
    skippedLayers: 0,
    totalLayers: 0,
    durationMs: 0,
    dataPaths: { volumes: [], images: [] },
  };
  try {
    for (const c of captured)
      for (const n of c.networks) await ensureNetwork(target, onTarget.network(n), undo, progress);
    const holder = await target.ensureHolderImage();
    const volumeNames: Record<string, string> = {};
    const images: Record<string, string> = {};
    const containerNames: Record<string, string> = {};
    for (const c of captured) {
      let name = c.spec.name;
      if (await target.containerExists(name)) {
        if (opts.onConflict === 'replace') {
          progress.step(`remove existing container ${name} on the target (--on-conflict replace)`);
          await target.removeContainer(name, { force: true });
        } else name = await freeName(name, (n) => target.containerExists(n));
      }
      containerNames[c.spec.name] = name;
    }

    for (const c of captured) {
      checkAborted(signal);
      const ref = snapshotRef(c.spec.name, when);
      const fullRef = `${ref.repo}:${ref.tag}`;
      const { mode, stopTimeout } = how.get(c)!;
      const resume = await quiesce(source, c.spec, mode, progress, { stopTimeout, waitSeconds: opts.wait, signal });
      if (opts.stopSource) cutover.push(resume);
      let shipping: Promise<void> | undefined;
      try {
        progress.step(`commit ${c.spec.name}`);
        const committed = await commitContainer(source, c.spec, ref, mode);
        snapshots.push(committed.id);
        // The image travels while the volumes do.
        progress.step(`image ${fullRef} -> ${target.facts.endpoint}`);
        shipping = shipImage(source, target, fullRef, progress, via.source).then((s) => {
          result.dataPaths.images.push({ container: c.spec.name, ref: fullRef, ...s.carried });
          result.imageBytes += s.bytes;
          result.skippedLayers += s.skippedLayers;
          result.totalLayers += s.totalLayers;
          undo.add(`remove image ${fullRef} from the target`, () => target.removeImage(fullRef));
        });
        shipping.catch(() => {});
        for (const v of c.volumes) {
          if (v.name in volumeNames) continue;
          checkAborted(signal);
          const name = await createVolume(
            target,
            { ...onTarget.volume(v), member: '' },
            opts.onConflict,
            undo,
            progress,
          );
          volumeNames[v.name] = name;
          progress.step(`volume ${v.name} -> ${name} on ${target.facts.endpoint}`);
          const shipped = await shipVolume(source, c.spec, v.name, target, holder, name, progress, via);
          result.volumeBytes += shipped.bytes;
          result.volumes.push(name);
          result.dataPaths.volumes.push({ name, ...shipped.read, target: shipped.written });
        }
      } catch (err) {
        await shipping?.catch(() => {});
        throw err;
      } finally {
        if (!opts.stopSource) await resume(); // else: on failure, the rollback starts it again
      }
      await shipping;
      images[c.spec.name] = fullRef;
    }

    // Each container after those it refers to (container:<name> network, volumes-from, links),
    // whose references follow them to their names on the target (--on-conflict rename).
    const order = dependencyOrder(captured.map((c) => c.spec));
    result.containers = captured.map((c) => ({ name: containerNames[c.spec.name]!, id: '', started: false }));
    for (const i of order) {
      checkAborted(signal);
      const c = captured[i]!;
      const spec = renameContainerRefs(targetSpecs[i]!.spec, containerNames);
      result.containers[i]!.id = await createContainer(
        target,
        spec,
        containerNames[c.spec.name]!,
        images[c.spec.name]!,
        volumeNames,
        undo,
        progress,
        via.target,
      );
    }
    if (opts.stopSource) {
      // Stopped before their snapshots; what still runs (a container that was paused) stops now.
      for (const c of captured) {
        const st = await source.inspectContainer(c.spec.sourceId);
        if (!st.State.Running) continue;
        progress.step(`stop ${c.spec.name} on the source (--stop-source)`);
        await stopCleanly(source, c.spec.sourceId, c.spec.name, how.get(c)!.stopTimeout, progress);
        stoppedSources.push(c.spec.sourceId);
      }
    }
    for (const i of order) {
      const c = captured[i]!;
      if (!opts.start || !c.spec.state.running) continue;
      progress.step(`start ${result.containers[i]!.name} on ${target.facts.endpoint}`);
      await target.start(result.containers[i]!.id);
      result.containers[i]!.started = true;
    }
    undo.clear();
    for (const r of cutover) r.keep(); // stopped for good: the service runs on the target now
    const exited = await watchStarted(
      target,
      result.containers.filter((c) => c.started),
      progress,
      signal,
    );
    for (const c of result.containers) if (exited.has(c.id)) c.exitCode = exited.get(c.id);
    result.durationMs = Date.now() - started;
    return result;
  } catch (err) {
    source.prepareCleanup();
    target.prepareCleanup();
    await sweepHolders(target); // first: a helper would keep a volume the undo removes in use
    await sweepHolders(source);
    await undo.run(progress);
    for (const r of cutover)
      await r().catch((e) =>
        progress.warn(`rollback: could not start a source container again: ${(e as Error).message}`),
      );
    for (const id of stoppedSources) {
      progress.info(`rollback: start the source container ${id.slice(0, 12)} again`);
      await source.start(id).catch((e) => progress.warn(`could not start the source again: ${(e as Error).message}`));
    }
    throw transferError(err, source, target);
  } finally {
    for (const id of snapshots) await removeSnapshot(source, id).catch(() => {});
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
