/**
 * ferry backup into a restic repository: one restic snapshot per backup, laid out so that restic
 * deduplicates it (store/restic/layout.ts).
 *
 *   capture -> quiesce every container -> commit each -> stage: the image archive unpacked (one
 *   file per layer), each volume either bind-mounted as a file tree (its directory on this host)
 *   or written as the engine's tar stream -> restic backup (one snapshot) -> resume -> drop the
 *   local snapshots and the staging directory
 *
 * Consistency: the containers stay paused (or stopped) from the commit until restic has read the
 * volumes it reads as file trees (restic reads the directories themselves, so they must not
 * change under it). Where no volume is read as a tree, they are resumed as soon as the volumes'
 * tar streams are staged, before restic runs. The pause is reported (pausedMs).
 */
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tarFs from 'tar-fs';
import type { Engine } from '../engine/engine.js';
import type { Manifest } from '../bundle/manifest.js';
import { checkAborted, type RunContext } from '../context.js';
import { routing } from '../data/paths.js';
import { saveImage } from '../data/save.js';
import { openContainerVolumeReader } from '../data/volumes.js';
import { sameDirectory } from '../data/host-volume.js';
import { hostAccessRefusal } from '../hostaccess/refusals.js';
import { localShell } from '../hostaccess/shell.js';
import type { HostAccess } from '../hostaccess/access.js';
import { UsageError } from '../errors.js';
import { abortable } from '../util/abortable.js';
import { hostName, type Captured, type Consistency } from './steps/capture.js';
import {
  QuiescedSet,
  captureSet,
  commitSnapshot,
  dropSnapshots,
  planBundle,
  volumesToRead,
  warnUncopiedBinds,
} from './steps/capture-set.js';
import { recoverDeadRuns } from './steps/recover.js';
import {
  LAYOUT,
  LAYOUT_FILE,
  LAYOUT_VERSION,
  MANIFEST_FILE,
  backupArgs,
  bindWrap,
  memberPath,
  newestFirst,
  parseBackupSummary,
  parseSnapshots,
  setKey,
  snapshotTags,
  snapshotsArgs,
  type Layout,
  type LayoutImage,
  type LayoutVolume,
} from '../store/restic/layout.js';
import { checkRestic, resticText, type ResticRunner } from '../store/restic/runner.js';

export interface ResticBackupOptions {
  containers: string[];
  /** The repository, as restic takes it (`-r`). */
  repo: string;
  runner: ResticRunner;
  /** Where the staging directory is made (image layers are written there: a disk, not a tmpfs). */
  stageRoot: string;
  consistency?: Consistency;
  stopTimeout?: number;
  wait?: number;
  /** --exclude-path: left out of every volume (besides each container's ferry.exclude-paths label). */
  excludePaths?: string[];
}

export interface ResticBackupResult {
  repository: string;
  snapshot: string;
  /** The snapshot restic compared with (the previous one of the same containers on this host). */
  parent?: string;
  containers: string[];
  volumes: { name: string; layout: 'tree' | 'tar'; reason?: string }[];
  /** What restic added to the repository (after deduplication and compression), and what it read. */
  bytesAdded: number;
  bytesProcessed: number;
  files: { new: number; changed: number; unmodified: number };
  /** How long the containers were paused or stopped. */
  pausedMs: number;
  durationMs: number;
  manifest: Manifest;
}

/**
 * The volume's directory on this host, when restic can read it there as a tree: host access for
 * volumes on this engine, through this machine's own shell (restic runs here), and the directory
 * is the one the engine mounts (same mode and mtime to the nanosecond). Else why not.
 */
export async function volumeTreeDir(
  engine: Engine,
  spec: Captured['spec'],
  volume: string,
  access: HostAccess | Promise<HostAccess>,
): Promise<{ dir: string; root: NonNullable<LayoutVolume['root']> } | { refused: string }> {
  const a = await access;
  if (!a.volumes.use || !a.shell) return { refused: a.volumes.reason };
  if (a.shell !== localShell) return { refused: `the volume is on ${a.shell.where}, restic runs on this host` };
  const info = await engine.inspectVolume(volume);
  const why = hostAccessRefusal({ ...engine.facts, ...engine.quirks, host: true }, info, undefined);
  if (why) return { refused: why };
  const mount = spec.mounts.find((m) => m.type === 'volume' && m.source === volume);
  if (!mount) return { refused: 'the container does not mount the volume' };
  const dir = info!.Mountpoint;
  const [seen, local] = await Promise.all([
    engine.statPath(spec.sourceId, mount.destination).catch(() => undefined),
    stat(dir, { bigint: true }).catch(() => undefined),
  ]);
  if (
    !seen ||
    !local ||
    !sameDirectory(seen, { mode: Number(local.mode), mtimeNs: local.mtimeNs, isDirectory: local.isDirectory() })
  )
    return { refused: "the volume's directory on this host is not the one the engine mounts" };
  return {
    dir,
    root: {
      mode: Number(local.mode),
      uid: Number(local.uid),
      gid: Number(local.gid),
      mtime: Number(local.mtimeMs / 1000n),
    },
  };
}

export async function resticBackup(
  engine: Engine,
  opts: ResticBackupOptions,
  ctx: RunContext,
): Promise<ResticBackupResult> {
  const started = Date.now();
  const when = new Date();
  const { progress, signal } = ctx;
  if (!opts.containers.length) throw new UsageError('no containers to back up', 'name one or more containers');
  const version = await checkRestic(opts.runner);
  ctx.debug?.(`restic ${version}`);
  for (const d of engine.differences()) progress.info(d);
  const via = routing(ctx, engine);
  await recoverDeadRuns(engine, progress);

  const set = await captureSet(engine, opts.containers, opts, progress);
  const { captured, names } = set;
  // Hooks are not run by a restic backup yet: a container that asks for one is refused, never
  // backed up without it (its data may not be consistent without its pre-exec hook).
  for (const c of captured)
    for (const label of ['ferry.pre-exec', 'ferry.post-exec'])
      if (c.labels[label] !== undefined)
        throw new UsageError(
          `${c.spec.name} has the label ${label}: hooks are not run by a backup into a restic repository yet`,
          'back it up into a directory of bundles for now',
        );
  warnUncopiedBinds(captured, progress, 'a restic backup does not copy bind data yet');

  // The manifest, as a bundle's: every member uncompressed (restic compresses).
  const manifest = planBundle(engine, set, when, {
    codec: 'none',
    imageCodec: 'none',
    includeBinds: false,
    ...(opts.excludePaths?.length ? { excludePaths: opts.excludePaths } : {}),
  });
  const { containers, volumes } = manifest;

  // The previous snapshot of the same containers from this host: restic compares with it.
  const host = hostName();
  const tags = snapshotTags(names);
  progress.step(`restic snapshots in ${opts.repo}`);
  const earlier = parseSnapshots(
    await resticText(opts.runner, { args: snapshotsArgs(opts.repo, { tags: [`ferry-set=${setKey(names)}`], host }) }),
  );
  const parent = newestFirst(earlier)[0]?.id;

  await mkdir(opts.stageRoot, { recursive: true });
  const stage = await mkdtemp(path.join(opts.stageRoot, 'ferry-restic-'));
  const snapshots: string[] = [];
  const layout: Layout = { layout: LAYOUT, version: LAYOUT_VERSION, images: [], volumes: [] };
  const binds: [string, string][] = [];
  const volumeReport: ResticBackupResult['volumes'] = [];
  // The whole set is quiesced at once, dependents first, and put back in dependency order.
  const all = new QuiescedSet(engine, set, ctx, { wait: opts.wait });
  try {
    await mkdir(path.join(stage, 'images'));
    await mkdir(path.join(stage, 'volumes'));
    await all.quiesce();
    const staging: Promise<void>[] = [];
    const read = new Set<string>();
    for (const [i, c] of captured.entries()) {
      checkAborted(signal);
      const entry = containers[i]!;
      const facts = await commitSnapshot(engine, c, entry, set.how.get(c)!.mode, progress, snapshots);
      const img: LayoutImage = {
        member: entry.image.member!,
        path: memberPath(entry.image.member!, 'image'),
        facts,
      };
      layout.images.push(img);
      // The image is unpacked while the volumes are read: one file per layer.
      const s = (async () => {
        const saved = await saveImage(engine, entry.image.ref, progress, { rewritable: false }, via);
        const dir = path.join(stage, img.path);
        await mkdir(dir, { recursive: true });
        await pipeline(abortable(saved.stream, signal), tarFs.extract(dir));
      })();
      s.catch(() => {});
      staging.push(s);
      for (const v of volumesToRead(entry, volumes, read)) {
        // A volume with path excludes is read as an archive: the excludes are left out there (excludes.ts).
        const tree = v.excludePaths?.length
          ? { refused: 'it has path excludes' }
          : await volumeTreeDir(engine, c.spec, v.name, via.access);
        if ('dir' in tree) {
          const p = memberPath(v.member, 'tree');
          await mkdir(path.join(stage, p), { recursive: true });
          binds.push([tree.dir, p]);
          layout.volumes.push({ name: v.name, member: v.member, kind: 'tree', path: p, root: tree.root });
          volumeReport.push({ name: v.name, layout: 'tree' });
          progress.info(`volume ${v.name}: restic reads ${tree.dir} as a file tree`);
          continue;
        }
        progress.step(`volume ${v.name} -> ${v.member} (${tree.refused})`);
        const r = await openContainerVolumeReader(engine, c.spec, v.name, progress, via, v.excludePaths);
        try {
          await pipeline(abortable(r.stream, signal), createWriteStream(path.join(stage, v.member)));
        } finally {
          r.stream.destroy();
          await r.done().catch(() => {});
        }
        layout.volumes.push({ name: v.name, member: v.member, kind: 'tar', path: memberPath(v.member, 'tar') });
        volumeReport.push({ name: v.name, layout: 'tar', reason: tree.refused });
      }
    }
    await Promise.all(staging);
    await writeFile(path.join(stage, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    await writeFile(path.join(stage, LAYOUT_FILE), JSON.stringify(layout, null, 2) + '\n');
    // Nothing left to read from the containers themselves: put them back before restic runs.
    if (!binds.length) await all.release();
    checkAborted(signal);
    progress.step(`restic backup -> ${opts.repo}${parent ? ` (parent ${parent.slice(0, 8)})` : ''}`);
    const out = await resticText(opts.runner, {
      args: backupArgs(opts.repo, { host, tags, parent, paths: [MANIFEST_FILE, LAYOUT_FILE, 'images', 'volumes'] }),
      cwd: stage,
      wrap: bindWrap(binds),
    });
    await all.release();
    const sum = parseBackupSummary(out);
    progress.info(`restic snapshot ${sum.snapshot_id}: ${sum.data_added} bytes added`);
    return {
      repository: opts.repo,
      snapshot: sum.snapshot_id,
      ...(parent ? { parent } : {}),
      containers: names,
      volumes: volumeReport,
      bytesAdded: sum.data_added,
      bytesProcessed: sum.total_bytes_processed,
      files: { new: sum.files_new, changed: sum.files_changed, unmodified: sum.files_unmodified },
      pausedMs: all.pausedMs,
      durationMs: Date.now() - started,
      manifest,
    };
  } finally {
    await all.release().catch((e) => progress.warn(`could not put every container back: ${(e as Error).message}`));
    await dropSnapshots(engine, snapshots);
    await removeStage(stage, binds, progress);
  }
}

/**
 * Remove the staging directory. The volumes were bind-mounted only inside restic's own mount
 * namespace, so their places here are empty directories: each is removed on its own first (rmdir,
 * never recursive), and should one not be empty, nothing is removed recursively (a volume's data
 * is never at risk from this cleanup).
 */
async function removeStage(stage: string, binds: [string, string][], progress: RunContext['progress']) {
  for (const [, p] of binds)
    try {
      await rmdir(path.join(stage, p));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      progress.warn(`left the staging directory ${stage} in place: ${p} is not empty (${(err as Error).message})`);
      return;
    }
  await rm(stage, { recursive: true, force: true }).catch(() => {});
}
