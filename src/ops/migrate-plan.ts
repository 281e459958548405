/**
 * `ferry migrate --dry-run`: what a migration would do, read from both engines and changed on
 * neither. The source containers are inspected (not paused, not committed); the target is only
 * asked what it has (containers, volumes, networks, images). It names what would be paused or
 * stopped, what would be sent (each volume with its size and the data paths that would read and
 * write it, each image with its size), what would be created on the target under which name, and
 * the conflicts that would stop a real run. What only a helper container on the target can tell
 * (host ports, devices, bind sources there) is not checked: that would change the target.
 */
import type { Engine } from '../engine/engine.js';
import type { RunContext } from '../context.js';
import type { DataPath } from '../data/paths.js';
import { routing } from '../data/paths.js';
import { volumeSizeHint } from '../data/volumes.js';
import { volumeExcludes } from '../data/excludes.js';
import { checkRemap, remapNetwork, remapVolume } from '../plan/remap.js';
import { captureContainer, containerQuiesce, type Captured } from './steps/capture.js';
import { freeName } from './steps/recreate.js';
import type { MigrateOptions } from './migrate.js';

export interface MigratePlan {
  source: string;
  target: string;
  containers: {
    name: string;
    /** Its name on the target (--on-conflict rename: a free one). */
    to: string;
    state: 'running' | 'paused' | 'stopped';
    /** How the source would be held still: pause, stop (also --stop-source), none. */
    consistency: 'pause' | 'stop' | 'none';
    /** The source is left stopped afterwards (--stop-source). */
    stopSource: boolean;
    image: string;
    /** The image's size on the source (its layers, uncompressed); the committed layer comes on top. */
    imageBytes?: number;
    /** The target already holds the image the container was made from (its layers are not sent again). */
    targetHasImage: boolean;
    start: boolean;
    /** --on-conflict replace: a container of that name on the target would be replaced. */
    replace: boolean;
  }[];
  volumes: {
    name: string;
    to: string;
    /** About how many bytes would be sent (undefined: the engine does not say cheaply). */
    rawBytes?: number;
    exists: boolean;
    replace: boolean;
    /** The data path that would read it on the source, and write it on the target, first. */
    read: DataPath;
    write: DataPath;
  }[];
  networks: { name: string; exists: boolean }[];
  /** Bind mounts: their host paths must exist on the target (bind data does not travel). */
  binds: { container: string; hostPath: string }[];
  /** What would stop the real run before anything changed. */
  conflicts: string[];
  /** The sum of what is known of rawBytes and imageBytes. */
  volumeBytes: number;
  imageBytes: number;
}

/** The data path a volume is read or written by first, on `engine`: on its host where ferry may, else through the engine. */
async function volumePath(engine: Engine, ctx: Pick<RunContext, 'hostAccess' | 'debug'>): Promise<DataPath> {
  const a = await routing(ctx, engine).access;
  if (a.volumes.use) return 'host-tar';
  return engine.quirks.archiveKeepsOwners ? 'engine-archive' : 'helper-tar';
}

/** The plan of `ferry migrate --dry-run`. Reads both engines; changes nothing. */
export async function planMigrate(
  source: Engine,
  target: Engine,
  opts: MigrateOptions,
  ctx: Pick<RunContext, 'progress' | 'hostAccess' | 'debug'>,
): Promise<MigratePlan> {
  const captured: Captured[] = [];
  for (const c of opts.containers) {
    ctx.progress.step(`inspect ${c} on ${source.facts.endpoint}`);
    captured.push(await captureContainer(source, c));
  }
  const r = opts.remap;
  const allVolumes = captured
    .flatMap((c) => c.volumes)
    .filter((v, i, a) => a.findIndex((x) => x.name === v.name) === i);
  const networks = captured.flatMap((c) => c.networks).filter((n, i, a) => a.findIndex((x) => x.name === n.name) === i);
  if (r) checkRemap(r, { specs: captured.map((c) => c.spec), volumes: allVolumes, networks });
  ctx.progress.step(`look at ${target.facts.endpoint}`);
  const conflicts: string[] = [];
  const plan: MigratePlan = {
    source: source.facts.endpoint,
    target: target.facts.endpoint,
    containers: [],
    volumes: [],
    networks: [],
    binds: [],
    conflicts,
    volumeBytes: 0,
    imageBytes: 0,
  };
  for (const c of captured) {
    const name = c.spec.name;
    const exists = await target.containerExists(name);
    if (exists && opts.onConflict === 'fail')
      conflicts.push(`container ${name} exists on the target (--on-conflict fail)`);
    const to = exists && opts.onConflict === 'rename' ? await freeName(name, (n) => target.containerExists(n)) : name;
    const q = containerQuiesce(name, c.labels, {
      consistency: opts.stopSource ? 'stop' : opts.consistency,
      stopTimeout: opts.stopTimeout,
    });
    const img = await source.inspectImage(c.spec.baseImage.id).catch(() => undefined);
    const targetHasImage = !!(await target.inspectImage(c.spec.baseImage.id).catch(() => undefined));
    plan.containers.push({
      name,
      to,
      state: c.spec.state.paused ? 'paused' : c.spec.state.running ? 'running' : 'stopped',
      consistency: q.mode,
      stopSource: opts.stopSource,
      image: c.spec.baseImage.ref,
      ...(img && img.Size > 0 ? { imageBytes: img.Size } : {}),
      targetHasImage,
      start: opts.start && c.spec.state.running,
      replace: exists && opts.onConflict === 'replace',
    });
    if (img && img.Size > 0 && !targetHasImage) plan.imageBytes += img.Size;
    for (const b of c.binds) plan.binds.push({ container: name, hostPath: b.hostPath });
  }
  const [read, write] = await Promise.all([volumePath(source, ctx), volumePath(target, ctx)]);
  const via = routing(ctx, source);
  for (const v of allVolumes) {
    const onTarget = r ? remapVolume(r, v) : v;
    const exists = !v.anonymous && !!(await target.inspectVolume(onTarget.name));
    if (exists && opts.onConflict === 'fail')
      conflicts.push(`volume ${onTarget.name} exists on the target (--on-conflict fail)`);
    const to =
      exists && opts.onConflict === 'rename'
        ? await freeName(onTarget.name, async (n) => !!(await target.inspectVolume(n)))
        : onTarget.name;
    const user = captured.find((c) => c.volumes.some((x) => x.name === v.name))!;
    const size = await volumeSizeHint(
      source,
      user.spec,
      v.name,
      via,
      volumeExcludes(opts.excludePaths, user.volumes.find((x) => x.name === v.name)?.excludePaths),
    );
    if (size !== undefined) plan.volumeBytes += size;
    plan.volumes.push({
      name: v.name,
      to: v.anonymous ? '(anonymous)' : to,
      ...(size !== undefined ? { rawBytes: size } : {}),
      exists,
      replace: exists && opts.onConflict === 'replace',
      read,
      write,
    });
  }
  for (const n of networks) {
    const onTarget = r ? remapNetwork(r, n) : n;
    plan.networks.push({ name: onTarget.name, exists: !!(await target.inspectNetwork(onTarget.name)) });
  }
  return plan;
}
