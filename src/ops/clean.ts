/**
 * `ferry clean`: remove ferry's own leftovers on an engine, and nothing else.
 *
 * - helper containers (label io.ferry.role) whose run is dead: made by a ferry process on this
 *   host that no longer exists (io.ferry.owner = host/pid);
 * - snapshot images `ferry/<name>:<UTC stamp>` that no container (running or not) was created
 *   from: the snapshots of runs that failed before removing them, the images restores loaded
 *   for containers since removed;
 * - the empty holder image `ferry-holder:empty`, when no container uses it;
 * - the staging volumes of `backup --precopy` (label io.ferry.role=backup-staging) whose run is
 *   dead, as helpers (ops/steps/stage.ts).
 *
 * What a ferry run that may still be going uses is kept: a helper whose process is alive (or
 * that another host made, where ferry cannot tell), what the journals on this host (util/state.ts)
 * record for a live run, a snapshot younger than `minAgeSeconds` (a run on another host may have
 * just committed it), the newest snapshot of each container and the holder image while any run
 * is seen on the engine. Images are removed by reference, never forced: an image with another
 * tag only loses its ferry tag, and the engine refuses one a container uses.
 */
import type { Progress } from '../context.js';
import { HOLDER_IMAGE, LABEL_OWNER, LABEL_ROLE, type ContainerSummary, type Engine } from '../engine/engine.js';
import { removeWithAnonymousVolumes } from '../data/volumes.js';
import { toFerryError, type FerryError } from '../errors.js';
import { alive, MadeJournal, QuiesceJournal } from '../util/state.js';
import { checkAborted } from '../context.js';
import { snapshotRef } from './steps/capture.js';
import { BACKUP_STAGING_ROLE } from './steps/stage.js';

/** A snapshot's reference, as snapshotRef() (ops/steps/capture.ts) makes it. */
export const SNAPSHOT_TAG = /^ferry\/[a-z0-9][a-z0-9_.-]*:\d{8}T\d{6}Z$/;

/** By default a snapshot younger than an hour is kept: a run on another host may be using it. */
export const DEFAULT_MIN_AGE_S = 3600;

export interface CleanItem {
  kind: 'container' | 'image' | 'volume';
  /** A container's or volume's name; an image's reference. */
  name: string;
  id: string;
  /** Why it is removed, or why it is kept. */
  reason: string;
}

export interface CleanReport {
  engine: string;
  dryRun: boolean;
  /** Removed (with dryRun: what would be). */
  removed: CleanItem[];
  /** ferry's own objects that are kept, and why. */
  kept: CleanItem[];
  failed: (CleanItem & { error: FerryError })[];
}

export interface CleanOptions {
  dryRun: boolean;
  /** Only the snapshot images of these containers (no holder image); stray helpers still go. */
  containers?: string[];
  minAgeSeconds: number;
  now?: Date;
}

export interface CleanJournals {
  quiesce: QuiesceJournal;
  made: MadeJournal;
}

const nameOf = (c: ContainerSummary) => (c.Names?.[0] ?? c.Id.slice(0, 12)).replace(/^\//, '');

/** Whose a helper is, from its owner label: dead (this host, process gone), or why it may be running. Pure but for `isAlive`. */
export function helperOwner(
  labels: Record<string, string> | undefined,
  me: { host: string; pid: number },
  isAlive: (pid: number) => boolean = alive,
): { dead: true; pid: number } | { dead: false; why: string } {
  const owner = labels?.[LABEL_OWNER] ?? '';
  const slash = owner.lastIndexOf('/');
  if (slash < 0)
    return { dead: false, why: 'it has no io.ferry.owner label: ferry cannot tell whether its run is over' };
  const host = owner.slice(0, slash);
  const pid = Number(owner.slice(slash + 1));
  if (host !== me.host)
    return { dead: false, why: `made by a ferry run on host ${host}: ferry cannot tell from here whether it is over` };
  if (!Number.isInteger(pid) || pid <= 0) return { dead: false, why: `its owner label ${owner} names no process` };
  if (pid === me.pid || isAlive(pid)) return { dead: false, why: `its ferry run (pid ${pid}) is still running` };
  return { dead: true, pid };
}

export async function clean(
  engine: Engine,
  ctx: { progress: Progress; signal: AbortSignal },
  opts: CleanOptions,
  journals: CleanJournals = { quiesce: new QuiesceJournal(), made: new MadeJournal() },
): Promise<CleanReport> {
  const where = engine.facts.endpoint;
  const now = (opts.now ?? new Date()).getTime();
  const report: CleanReport = { engine: where, dryRun: opts.dryRun, removed: [], kept: [], failed: [] };
  ctx.progress.step(`list containers and images on ${where}`);
  const containers = await engine.listContainers(true);
  const images = await engine.listImages();

  // Helpers: a dead run's go; any other is a sign that a run may be going on this engine.
  const stray = new Set<string>();
  const liveRuns: string[] = [];
  for (const c of containers) {
    const role = c.Labels?.[LABEL_ROLE];
    if (role === undefined) continue;
    const o = helperOwner(c.Labels, engine.run);
    const item: CleanItem = { kind: 'container', name: nameOf(c), id: c.Id, reason: '' };
    if (o.dead) {
      stray.add(c.Id);
      report.removed.push({
        ...item,
        reason: `ferry ${role} container of a run (pid ${o.pid}) on this host that is no longer running`,
      });
    } else {
      liveRuns.push(`${role} container ${item.name}`);
      report.kept.push({ ...item, reason: `ferry ${role} container: ${o.why}` });
    }
  }

  // backup --precopy's staging volumes: a dead run's go, as its helpers do.
  const staged = await engine.listLabelled(`${LABEL_ROLE}=${BACKUP_STAGING_ROLE}`);
  for (const name of staged.volumes) {
    const v = await engine.inspectVolume(name);
    if (!v) continue;
    const o = helperOwner(v.Labels ?? undefined, engine.run);
    const item: CleanItem = { kind: 'volume', name, id: name, reason: '' };
    if (o.dead)
      report.removed.push({
        ...item,
        reason: `staging copy of a backup --precopy run (pid ${o.pid}) on this host that is no longer running`,
      });
    else {
      liveRuns.push(`staging volume ${name}`);
      report.kept.push({ ...item, reason: `staging copy of a backup --precopy run: ${o.why}` });
    }
  }

  // What live runs recorded on this host (a snapshot committed, an image loaded).
  const journalled = new Map<string, string>(); // image id or reference -> why
  for (const r of journals.quiesce.active(where)) {
    liveRuns.push(`pid ${r.pid}`);
    if (r.action === 'snapshot') {
      const why = `committed by a ferry run (pid ${r.pid}${r.host === engine.run.host ? '' : ` on ${r.host}`}) that is still running`;
      journalled.set(r.containerId, why);
      journalled.set(r.name, why);
    }
  }
  for (const r of journals.made.active(where)) {
    liveRuns.push(`pid ${r.pid}`);
    for (const m of r.made)
      if (m.kind === 'image')
        journalled.set(
          m.name,
          `loaded by a ferry run (pid ${r.pid}${r.host === engine.run.host ? '' : ` on ${r.host}`}) that is still running`,
        );
  }

  // Which images containers use (the stray helpers about to go do not count).
  const users = new Map<string, string[]>();
  const use = (key: string | undefined, name: string) => {
    if (!key) return;
    users.set(key, [...(users.get(key) ?? []), name]);
  };
  for (const c of containers) {
    if (stray.has(c.Id)) continue;
    use(c.ImageID, nameOf(c));
    if (c.Image && c.Image !== c.ImageID) use(c.Image, nameOf(c));
  }
  // A row without ImageID (an engine that leaves it out): ask the container itself.
  for (const c of containers)
    if (!stray.has(c.Id) && !c.ImageID) {
      const inspected = await engine.inspectContainer(c.Id).catch(() => undefined);
      use(inspected?.Image, nameOf(c));
    }

  // The newest snapshot of each container, kept while a run is seen on this engine.
  const newest = new Map<string, string>();
  for (const img of images)
    for (const tag of img.RepoTags ?? [])
      if (SNAPSHOT_TAG.test(tag)) {
        const [repo, stamp] = tag.split(':') as [string, string];
        const best = newest.get(repo);
        if (!best || best < stamp) newest.set(repo, stamp);
      }

  const only = opts.containers?.length
    ? new Set(opts.containers.map((n) => snapshotRef(n, new Date(0)).repo))
    : undefined;
  for (const img of images)
    for (const tag of img.RepoTags ?? []) {
      const snapshot = SNAPSHOT_TAG.test(tag);
      if (!snapshot && tag !== HOLDER_IMAGE) continue;
      if (only && !(snapshot && only.has(tag.split(':')[0]!))) continue;
      const item: CleanItem = { kind: 'image', name: tag, id: img.Id, reason: '' };
      const usedBy = [...(users.get(img.Id) ?? []), ...(users.get(tag) ?? [])];
      const journal = journalled.get(img.Id) ?? journalled.get(tag);
      const ageS = img.Created === undefined ? undefined : Math.floor(now / 1000) - img.Created;
      const [repo, stamp] = tag.split(':') as [string, string];
      let keep: string | undefined;
      if (usedBy.length) keep = `used by container ${[...new Set(usedBy)].join(', ')}`;
      else if (journal) keep = journal;
      else if (snapshot && (ageS === undefined || ageS < opts.minAgeSeconds))
        keep =
          ageS === undefined
            ? 'the engine does not say when it was made (a run may be using it)'
            : `made ${Math.max(0, Math.round(ageS / 60))} min ago, less than --min-age ${opts.minAgeSeconds}s (a run may be using it)`;
      else if (liveRuns.length && snapshot && newest.get(repo) === stamp)
        keep = `the newest snapshot of ${repo.slice('ferry/'.length)} while a ferry run is seen on this engine (${liveRuns[0]})`;
      else if (liveRuns.length && !snapshot)
        keep = `a ferry run is seen on this engine (${liveRuns[0]}) and may be about to use it`;
      if (keep) report.kept.push({ ...item, reason: keep });
      else
        report.removed.push({
          ...item,
          reason: snapshot
            ? 'a ferry snapshot image no container uses (left by a failed or interrupted run, or loaded by a restore whose container is gone)'
            : 'ferry’s empty holder image, which no container uses (ferry imports it again when it needs it)',
        });
    }

  if (opts.dryRun) return report;
  // Containers first: a stray helper keeps the holder image (and a staging volume) in use.
  const done: CleanItem[] = [];
  const ordered = [
    ...report.removed.filter((i) => i.kind === 'container'),
    ...report.removed.filter((i) => i.kind === 'volume'),
    ...report.removed.filter((i) => i.kind === 'image'),
  ];
  for (const item of ordered) {
    checkAborted(ctx.signal);
    ctx.progress.step(`remove ${item.kind} ${item.name}`);
    try {
      if (item.kind === 'container') await removeWithAnonymousVolumes(engine, item.id);
      else if (item.kind === 'volume') await engine.removeVolume(item.name);
      else await engine.removeImage(item.name); // by reference, never forced
      done.push(item);
    } catch (err) {
      report.failed.push({ ...item, error: toFerryError(err) });
    }
  }
  report.removed = done;
  return report;
}
