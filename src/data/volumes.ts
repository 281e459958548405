/**
 * Volume data in and out through the engine's archive endpoints (`docker cp` speed), from a
 * holder container that is created but never started: it only mounts the volume. The holder is
 * always removed, whatever happens.
 *
 * Backup: the holder comes from the container's own image (already local; no pull, ever), with an
 * entrypoint that is never run, no network, and the volume mounted read-only at a path the image
 * does not have, with no copy-up. Restore: from an empty image imported on the spot. A volume
 * that its own (quiesced) container mounts with nothing else mounted inside it is read straight
 * from that container instead (inPlaceVolumePath), as `docker cp` would. On the engine's own host,
 * as root, a volume is read from the disk (host-volume.ts), without the engine.
 */
import { randomBytes } from 'node:crypto';
import { PassThrough, Readable, Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { type Engine, LABEL_MANAGED, LABEL_OWNER, LABEL_ROLE, LABEL_RUN } from '../engine/engine.js';
import type { RunIdentity } from '../engine/run.js';
import { alive } from '../util/state.js';
import { ConflictError, EngineError, NotFoundError } from '../errors.js';
import { demux } from '../engine/demux.js';
import { RootTap, rootEntryTar } from '../util/tar-root.js';
import type { Progress } from '../context.js';
import {
  hostVolumeArchiveSize,
  moveHostVolume,
  openHostRemoval,
  openHostVolumeReader,
  openHostVolumeWriter,
  fillHostVolumeTree,
  writeHostVolume,
  type HostTreeWriter,
  type HostWrite,
} from './host-volume.js';
import { EscapingLinks, escapingLinksTar } from './tar-links.js';
import { ExcludeFilter } from './excludes.js';
import {
  ENGINE_ONLY,
  firstOpen,
  isRefused,
  refused,
  type Carried,
  type DataPath,
  type PathOption,
  type Refused,
  type Routing,
} from './paths.js';
import type { HostAccess } from '../hostaccess/access.js';
import type { Debug } from '../util/debug.js';
import { faultPoint } from '../util/fault.js';

const MOUNT = '/.ferry-data';

export interface Holder {
  id: string;
  remove(): Promise<void>;
}

/** The create body of a helper of `run`: never started, and harmless were it started. Pure; unit-tested. */
export function holderCreateBody(
  run: RunIdentity,
  image: string,
  mount: Record<string, unknown>,
): Record<string, unknown> {
  return {
    Image: image,
    Entrypoint: ['/nonexistent-ferry-holder'],
    Cmd: [],
    Labels: { [LABEL_MANAGED]: 'true', [LABEL_ROLE]: 'holder', [LABEL_RUN]: run.id, [LABEL_OWNER]: run.owner },
    NetworkDisabled: true,
    // No network, no capabilities, no privilege gain, and a read-only root when it only reads
    // (writing a volume's root entry goes through the root).
    HostConfig: {
      NetworkMode: 'none',
      ...(typeof mount.bind === 'string' ? { Binds: [mount.bind] } : { Mounts: [mount] }),
      AutoRemove: false,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      ReadonlyRootfs: mount.ReadOnly === true,
      RestartPolicy: { Name: 'no' },
    },
  };
}

/**
 * Remove a container and the anonymous volumes the engine made for it from its image's VOLUME
 * lines (PostgreSQL's image declares one): left alone, a helper made from such an image leaves a
 * volume behind at every backup. A volume the container was created to mount by name (its
 * HostConfig Mounts or Binds: the data ferry reads or writes) is never touched; the others go
 * once the container is gone (the engine refuses any that another container uses). Not the
 * engine's `v=1`: Podman applies that to every anonymous volume the container mounts, even one
 * mounted by name.
 */
export async function removeWithAnonymousVolumes(engine: Engine, id: string): Promise<void> {
  const made = await engine.inspectContainer(id).then(
    (c) => {
      const named = namedVolumes(c);
      return ((c.Mounts ?? []) as { Type?: string; Name?: string }[])
        .filter((m) => m.Type === 'volume' && m.Name && !named.has(m.Name))
        .map((m) => m.Name!);
    },
    () => [] as string[],
  );
  await engine.removeContainer(id, { force: true });
  for (const v of made) await engine.removeVolume(v).catch(() => {});
}

/** Every volume a create body (or a container's inspect) mounts by name: HostConfig.Mounts sources and Binds `name:/path`. */
export function namedVolumes(body: { HostConfig?: unknown }): Set<string> {
  const hc = (body.HostConfig ?? {}) as {
    Mounts?: { Type?: string; Source?: string }[] | null;
    Binds?: string[] | null;
  };
  const out = new Set<string>();
  for (const m of hc.Mounts ?? []) if (m.Type === 'volume' && m.Source) out.add(m.Source);
  for (const b of hc.Binds ?? []) {
    const src = b.split(':')[0]!;
    if (src && !src.startsWith('/')) out.add(src);
  }
  return out;
}

/** Where a fill's holder mounts the volume it writes. */
const FILL_AT = `${MOUNT}/v`;

/** A never-started holder that mounts `volume` writable at FILL_AT, without the image's files copied in. */
function fillHolder(engine: Engine, image: string, volume: string): Promise<Holder> {
  return createHolder(engine, image, {
    Type: 'volume',
    Source: volume,
    Target: FILL_AT,
    VolumeOptions: { NoCopy: true },
  });
}

async function createHolder(
  engine: Engine,
  image: string,
  mount: Record<string, unknown>,
  body = holderCreateBody(engine.run, image, mount),
): Promise<Holder> {
  const name = `ferry-holder-${randomBytes(6).toString('hex')}`;
  let id: string;
  try {
    id = await engine.createContainer(name, body);
  } catch (err) {
    // The engine may have created it even though the answer was lost: remove it by name, and
    // have the rollback's sweep settle it should it still be under way (sweepHolders).
    const answered =
      err instanceof ConflictError ||
      err instanceof NotFoundError ||
      typeof (err as { cause?: { statusCode?: unknown } }).cause?.statusCode === 'number';
    if (!answered) lostCreates(engine).add({ name, image });
    await removeWithAnonymousVolumes(engine, name).catch(() => {});
    throw new EngineError(
      `cannot create a helper container from image ${image} to reach volume data: ${(err as Error).message}`,
      {
        cause: err,
        hint: 'ferry mounts volumes in a never-started helper made from an image already on the engine; none could serve here',
      },
    );
  }
  let removed = false;
  return {
    id,
    remove: async () => {
      if (removed) return;
      removed = true;
      await removeWithAnonymousVolumes(engine, id);
    },
  };
}

/**
 * The create body of a helper that runs `tar` from the image on the mounted data and writes the
 * archive to stdout: as root (the data's owners vary), with only the capability to read past file
 * permissions, no network, a read-only root. Pure; unit-tested.
 */
export function tarHelperCreateBody(
  run: RunIdentity,
  image: string,
  mount: Record<string, unknown>,
): Record<string, unknown> {
  const body = holderCreateBody(run, image, mount);
  return {
    ...body,
    Entrypoint: ['tar', '-c', '-f', '-', '-C', MOUNT, '.'],
    Cmd: [],
    User: '0:0',
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    HostConfig: { ...(body.HostConfig as Record<string, unknown>), CapAdd: ['DAC_READ_SEARCH'], ReadonlyRootfs: true },
  };
}

/**
 * Podman's archive endpoint reports every owner as 0:0, so there the data is read by the tar of
 * the image itself, in a helper, from its stdout. Undefined when the image has no tar to run.
 */
async function openTarReader(
  engine: Engine,
  image: string,
  mount: Record<string, unknown>,
): Promise<{ stream: Readable; done: () => Promise<void> } | undefined> {
  let helper: Holder;
  try {
    helper = await createHolder(engine, image, mount, tarHelperCreateBody(engine.run, image, mount));
  } catch {
    return undefined;
  }
  const { id } = helper;
  const remove = () => helper.remove();
  let raw: Readable;
  try {
    raw = await engine.attachOutput(id);
    await engine.start(id);
  } catch {
    await remove().catch(() => {});
    return undefined; // no tar in the image (or it cannot run): the archive endpoint it is
  }
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let stderr = '';
  const errSink = new Writable({
    write(chunk: Buffer, _e, cb) {
      if (stderr.length < 4096) stderr += chunk.toString('utf8');
      cb();
    },
  });
  const demuxing = demux(raw as AsyncIterable<Buffer>, out, errSink);
  demuxing.catch((err: Error) => out.destroy(err));
  return {
    stream: out,
    done: async () => {
      // The consumer gave up before the end (its own failure is the one to report): clean up only.
      const abandoned = out.destroyed && !out.readableEnded;
      try {
        if (abandoned) return;
        await demuxing;
        const code = await engine.waitExit(id);
        if (code !== 0)
          throw new EngineError(
            `tar in a helper container on ${engine.facts.endpoint} failed (exit ${code}): ${stderr.trim().slice(0, 500) || 'no message'}`,
            {
              hint: 'the volume data could not be read completely',
            },
          );
      } finally {
        raw.destroy();
        await remove().catch(() => {});
      }
    },
  };
}

/** A tar stream of volume (or bind) data, and which path carries it. Call done() when consumed. */
export interface DataReader {
  stream: Readable;
  done: () => Promise<void>;
  carried: Carried;
}

/** Open a tar stream of what `mount` holds (entries `./`, `./a`, ...). Call done() when consumed. */
async function openReader(
  engine: Engine,
  image: string,
  mount: Record<string, unknown>,
  what = 'data',
  debug?: Debug,
  before: PathOption<{ stream: Readable; done: () => Promise<void> }>[] = [],
): Promise<DataReader> {
  const { value, carried } = await firstOpen(
    what,
    [
      ...before,
      // Podman's archive endpoint loses owners: there the image's own tar, in a helper, first.
      ...(!engine.quirks.archiveKeepsOwners
        ? [
            {
              path: 'helper-tar' as const,
              open: async () =>
                (await openTarReader(engine, image, mount)) ?? refused('the image has no tar a helper can run'),
            },
          ]
        : []),
      {
        path: 'engine-archive',
        open: async () => {
          const holder = await createHolder(engine, image, mount);
          try {
            const stream = await engine.getArchive(holder.id, `${MOUNT}/.`);
            return { stream, done: () => holder.remove() };
          } catch (err) {
            await holder.remove().catch(() => {});
            throw err;
          }
        },
      },
    ],
    debug,
  );
  return { ...value, carried };
}

/**
 * Where a volume can be read straight from the container that mounts it (its archive endpoint
 * works paused or stopped, as `docker cp` does), without a helper: the destination the
 * container mounts `volume` at, when no other mount of the container (volume, bind, tmpfs,
 * `--tmpfs`) lies inside it, whose content the archive would carry along. Undefined otherwise
 * (a holder then mounts the volume alone). Pure; unit-tested.
 */
export function inPlaceVolumePath(
  spec: { mounts: { type: string; source?: string; destination: string }[]; hostConfig: Record<string, unknown> },
  volume: string,
): string | undefined {
  const own = spec.mounts.filter((m) => m.type === 'volume' && m.source === volume);
  if (own.length !== 1) return undefined; // mounted twice: a holder sees it once
  const dest = own[0]!.destination.replace(/\/+$/, '');
  if (!dest.startsWith('/') || dest.split('/').includes('..')) return undefined;
  const tmpfs = Object.keys(spec.hostConfig.Tmpfs ?? {});
  const others = [...spec.mounts.filter((m) => m !== own[0]).map((m) => m.destination), ...tmpfs];
  if (others.some((d) => d.replace(/\/+$/, '') === dest || d.startsWith(`${dest}/`))) return undefined;
  return dest;
}

/**
 * About how many bytes openContainerVolumeReader will give for `volume`, for the progress line's
 * total (percentage, ETA): the archive's exact size measured on the engine's host where ferry
 * reads it there (GNU tar into /dev/null), else the engine's count of the volume's bytes
 * (Engine.volumeSize), else undefined. It runs beside the read and never fails it.
 */
export async function volumeSizeHint(
  engine: Engine,
  spec: { sourceId: string; mounts: { type: string; source?: string; destination: string }[] },
  volume: string,
  via: Routing,
  exclude: readonly string[] = [],
): Promise<number | undefined> {
  try {
    return (
      (await hostVolumeArchiveSize(engine, spec, volume, via.access, exclude)) ?? (await engine.volumeSize(volume))
    );
  } catch {
    return undefined;
  }
}

/**
 * A volume of a (quiesced) container, read from that container itself where inPlaceVolumePath
 * allows it (no helper to create and remove per volume: docs/performance.md, No helper where
 * none is needed), else from a holder. Podman's archive endpoint loses owners: there it is always
 * the holder (and its tar). `exclude`: the volume's path excludes (excludes.ts), left out by GNU
 * tar on the host, else by an ExcludeFilter on what the engine gives.
 */
export async function openContainerVolumeReader(
  engine: Engine,
  spec: Parameters<typeof inPlaceVolumePath>[0] & { sourceId: string; baseImage: { id: string } },
  volume: string,
  progress: Progress | undefined,
  via: Routing,
  exclude: readonly string[] = [],
): Promise<DataReader> {
  return excluding(await openContainerVolume(engine, spec, volume, progress, via, exclude), exclude);
}

/**
 * `r` without what `exclude` names: the host's tar already left it out; any other path's archive
 * goes through an ExcludeFilter (destroying the stream returned destroys `r`'s).
 */
function excluding(r: DataReader, exclude: readonly string[]): DataReader {
  if (!exclude.length || r.carried.path === 'host-tar') return r;
  const filter = new ExcludeFilter(exclude);
  pipeline(r.stream, filter).catch(() => {}); // a failure destroys `filter`: its reader sees it
  // A half-read archive GET holds the helper: the source goes at once with the filter.
  filter.once('close', () => r.stream.destroy());
  return { ...r, stream: filter };
}

async function openContainerVolume(
  engine: Engine,
  spec: Parameters<typeof inPlaceVolumePath>[0] & { sourceId: string; baseImage: { id: string } },
  volume: string,
  progress: Progress | undefined,
  via: Routing,
  exclude: readonly string[],
): Promise<DataReader> {
  const what = `read volume ${volume} on ${engine.facts.endpoint}`;
  const fromHost: PathOption<{ stream: Readable; done: () => Promise<void> }> = {
    path: 'host-tar',
    open: async () => {
      const host = await openHostVolumeReader(engine, spec, volume, progress, via.access, undefined, exclude);
      if (!isRefused(host)) progress?.info(`volume ${volume}: read from ${host.dir} on ${host.where}`);
      return host;
    },
  };
  const inPlace = engine.quirks.archiveKeepsOwners ? inPlaceVolumePath(spec, volume) : undefined;
  if (!inPlace) {
    const r = await openVolumeReader(engine, spec.baseImage.id, volume, via.debug, [fromHost]);
    await faultPoint('volume-read');
    return noteXattrs(r, volume, progress);
  }
  const { value, carried } = await firstOpen(
    what,
    [
      fromHost,
      {
        path: 'engine-archive',
        open: async () => ({
          stream: await engine.getArchive(spec.sourceId, `${inPlace}/.`),
          done: async () => {},
        }),
      },
    ],
    via.debug,
  );
  await faultPoint('volume-read');
  return noteXattrs({ ...value, carried }, volume, progress);
}

/**
 * A volume no container mounts (a backup's staging copy: ops/steps/stage.ts), read as
 * openContainerVolumeReader reads a container's: on the engine's host with GNU tar where ferry
 * reaches it there (a holder mounts it, so that the directory is vetted as the engine's), else
 * through the engine. `image`: one the holder can be made from (the holder image).
 */
export async function openStagedVolumeReader(
  engine: Engine,
  image: string,
  volume: string,
  progress: Progress | undefined,
  via: Routing,
  exclude: readonly string[] = [],
): Promise<DataReader> {
  const fromHost: PathOption<{ stream: Readable; done: () => Promise<void> }> = {
    path: 'host-tar',
    open: async () => {
      const holder = await createHolder(engine, image, {
        Type: 'volume',
        Source: volume,
        Target: MOUNT,
        ReadOnly: true,
        VolumeOptions: { NoCopy: true },
      });
      try {
        const spec = { sourceId: holder.id, mounts: [{ type: 'volume', source: volume, destination: MOUNT }] };
        const host = await openHostVolumeReader(engine, spec, volume, progress, via.access, undefined, exclude);
        if (isRefused(host)) {
          await holder.remove().catch(() => {});
          return host;
        }
        return {
          stream: host.stream,
          done: async () => {
            try {
              await host.done();
            } finally {
              await holder.remove().catch(() => {});
            }
          },
        };
      } catch (err) {
        await holder.remove().catch(() => {});
        throw err;
      }
    },
  };
  const r = await openVolumeReader(engine, image, volume, via.debug, [fromHost]);
  await faultPoint('volume-read');
  return excluding(noteXattrs(r, volume, progress), exclude);
}

/** The extended attributes the engine's paths do not read (only GNU tar on the host, as root, does). */
export const XATTRS_UNREAD_BY_ENGINE = ['user.*', 'trusted.*'];

/**
 * A volume read through the engine (its archive endpoint, or a helper's tar) leaves its `user.*`
 * and `trusted.*` extended attributes behind, and ferry cannot tell whether it has any: it sees
 * no file there. Said once per volume and recorded on its data path (`xattrsUnread`), so that a
 * silent loss is a stated one.
 */
function noteXattrs(r: DataReader, volume: string, progress: Progress | undefined): DataReader {
  if (r.carried.path === 'host-tar') return r;
  progress?.info(
    `volume ${volume}: read through the engine (${r.carried.path}), which does not carry ${XATTRS_UNREAD_BY_ENGINE.join(' or ')} extended attributes; where the data uses them, run ferry as root on the engine's host`,
  );
  return { ...r, carried: { ...r.carried, xattrsUnread: XATTRS_UNREAD_BY_ENGINE } };
}

/** A volume's content, mounted read-only without copy-up. */
export function openVolumeReader(
  engine: Engine,
  image: string,
  volume: string,
  debug?: Debug,
  before: PathOption<{ stream: Readable; done: () => Promise<void> }>[] = [],
) {
  return openReader(
    engine,
    image,
    {
      Type: 'volume',
      Source: volume,
      Target: MOUNT,
      ReadOnly: true,
      VolumeOptions: { NoCopy: true },
    },
    `read volume ${volume} on ${engine.facts.endpoint}`,
    debug,
    before,
  );
}

/** A bind mount's host path, read-only. */
export function openBindReader(engine: Engine, image: string, hostPath: string, debug?: Debug) {
  return openReader(
    engine,
    image,
    { Type: 'bind', Source: hostPath, Target: MOUNT, ReadOnly: true },
    `read bind ${hostPath} on ${engine.facts.endpoint}`,
    debug,
  );
}

/**
 * Extract a tar stream (as produced by openVolumeReader) into a volume: on the engine's host with
 * its tar where ferry can (host-volume.ts), else through the engine. The volume is mounted one
 * level down (`MOUNT/v`) so that the root's owner, mode and mtime can be applied afterwards with
 * a one-entry tar extracted into MOUNT: the engine does not apply a `./` entry to the target.
 */
export async function fillVolume(
  engine: Engine,
  image: string,
  volume: string,
  data: Readable,
  progress?: Progress,
  via: Routing = { access: ENGINE_ONLY },
): Promise<Carried> {
  const target = FILL_AT;
  const holder = await fillHolder(engine, image, volume);
  let carried: Carried;
  try {
    await faultPoint('volume-fill');
    // On the engine's host, as root: straight into the volume's directory (host-volume.ts).
    const how = await firstOpen<HostWrite | false>(
      `write volume ${volume} on ${engine.facts.endpoint}`,
      [
        {
          path: 'host-tar',
          open: () =>
            writeHostVolume(engine, volume, () => engine.statPath(holder.id, target), data, progress, via.access),
        },
        { path: 'engine-archive', open: async () => false as const },
      ],
      via.debug,
    );
    carried = how.carried;
    if (how.value) {
      await holder.remove();
      return how.value.xattrsLost ? { ...carried, xattrsLost: how.value.xattrsLost } : carried;
    }
    // Podman chowns (and chmods) a new volume's root to the container's mount point the first
    // time a container using it starts, which would undo the root's owner and mode written below
    // as soon as the restored container starts. A start of the holder, which fails (it has
    // nothing to run), uses that first time up.
    if (engine.quirks.chownsVolumeOnFirstStart) await engine.start(holder.id).catch(() => {});
    const tap = new RootTap();
    // Symlinks that point above the root are refused by the engine's PUT: held back, put after.
    const links = new EscapingLinks();
    const piping = pipeline(data, links, tap);
    piping.catch(() => {}); // observed through `tap`, which putArchive consumes
    await engine.putArchive(holder.id, target, tap);
    await piping;
    if (!tap.readableEnded) await finished(tap).catch(() => {});
    if (links.held.length) await putEscapingLinks(engine, image, volume, links, progress);
    if (tap.root) {
      // Podman applies a `./` entry to the target itself (owner too, unless told to copy the
      // container's ids); Docker does not, so there the root goes in as `v/` from one level up.
      if (engine.quirks.archiveAppliesRootEntry)
        await engine.putArchive(holder.id, target, Readable.from(rootEntryTar('.', tap.root), { objectMode: false }), {
          copyUIDGID: false,
        });
      else await engine.putArchive(holder.id, MOUNT, Readable.from(rootEntryTar('v', tap.root), { objectMode: false }));
    }
  } catch (err) {
    await holder.remove().catch(() => {}); // the first failure is the one to report
    throw err;
  }
  await holder.remove();
  return carried;
}

/**
 * A volume whose data a source holds as a file tree that a program on this host can write itself
 * (a restic snapshot's: store/restic/snapshot.ts), and as an archive for every other path.
 */
export interface VolumeTree extends HostTreeWriter {
  /** The path that writes the tree (`restic-restore`). */
  path: DataPath;
  /** The volume's archive (as openVolumeReader gives it), for the paths after it. */
  archive(): Readable;
}

/**
 * Fill a new volume from a file tree: written on this host by the tree's own program, straight
 * into the volume's directory (fillHostVolumeTree: staged beside it, moved in whole), where that
 * is open; else, with the reason as the fallback, from the tree's archive as fillVolume writes
 * any archive (host-tar, engine-archive).
 */
export async function fillVolumeTree(
  engine: Engine,
  image: string,
  volume: string,
  tree: VolumeTree,
  progress?: Progress,
  via: Routing = { access: ENGINE_ONLY },
  signal?: AbortSignal,
): Promise<Carried> {
  const target = FILL_AT;
  const holder = await fillHolder(engine, image, volume);
  let done: true | Refused;
  try {
    await faultPoint('volume-fill');
    done = await fillHostVolumeTree(
      engine,
      volume,
      () => engine.statPath(holder.id, target),
      tree,
      via.access,
      progress,
      signal,
    );
  } catch (err) {
    await holder.remove().catch(() => {}); // the first failure is the one to report
    throw err;
  }
  await holder.remove();
  const what = `write volume ${volume} on ${engine.facts.endpoint}`;
  if (!isRefused(done)) {
    via.debug?.(`${what}: ${tree.path}`);
    return { path: tree.path };
  }
  via.debug?.(`${what}: not ${tree.path}: ${done.refused}`);
  const carried = await fillVolume(engine, image, volume, tree.archive(), progress, via);
  return carried.fallback ? carried : { ...carried, fallback: { from: tree.path, reason: done.refused } };
}

/**
 * A pre-copy's pass into a volume that holds an earlier pass (precopy.ts): `remove` (paths
 * relative to its root) removed, then `data` (a tar of the entries that changed) extracted over
 * what is there, both on the engine's host. Refused, with why, where the volume's directory is
 * not reached there.
 */
export async function applyVolumeDelta(
  engine: Engine,
  image: string,
  volume: string,
  remove: string[],
  data: Readable | undefined,
  access: HostAccess | Promise<HostAccess>,
): Promise<HostWrite | Refused> {
  const ready = await prepareVolumeDelta(engine, image, volume, access);
  if (isRefused(ready)) return ready;
  try {
    return await ready.apply(remove, data);
  } finally {
    await ready.close();
  }
}

/** A delta's way into a volume, opened before the delta is known (prepareVolumeDelta). */
export interface PreparedDelta {
  /** Remove, then extract (once). */
  apply(remove: string[], data: Readable | undefined): Promise<HostWrite>;
  /** Whatever was not used ended, and the helper removed; call it in every case. */
  close(): Promise<void>;
}

/**
 * applyVolumeDelta in two steps: everything that does not need the delta first (the helper that
 * mounts the volume, the removal's and the extraction's shells on the host, vetted and waiting
 * on their input; on an ssh:// host the SSH channels and login shells, the slow part), then the
 * delta. A cutover's frozen pass opens this before the container is stopped. Refused, with why,
 * where the volume's directory is not reached on the host (nothing was left behind).
 */
export async function prepareVolumeDelta(
  engine: Engine,
  image: string,
  volume: string,
  access: HostAccess | Promise<HostAccess>,
): Promise<PreparedDelta | Refused> {
  const target = FILL_AT;
  const holder = await fillHolder(engine, image, volume);
  const seen = () => engine.statPath(holder.id, target);
  const [removal, writer] = await Promise.allSettled([
    openHostRemoval(engine, volume, seen, access),
    openHostVolumeWriter(engine, volume, seen, undefined, access),
  ]);
  const remover = removal.status === 'fulfilled' ? removal.value : undefined;
  const extract = writer.status === 'fulfilled' ? writer.value : undefined;
  const close = async () => {
    for (const w of [remover, extract]) if (w && !isRefused(w)) await w.cancel().catch(() => {});
    await holder.remove().catch(() => {});
  };
  if (!remover || !extract || isRefused(remover) || isRefused(extract)) {
    await close();
    if (removal.status === 'rejected') throw removal.reason;
    if (writer.status === 'rejected') throw writer.reason;
    return isRefused(remover!) ? remover : (extract as Refused);
  }
  let used = false;
  return {
    async apply(remove, data) {
      if (used) throw new Error('a prepared delta is applied once');
      used = true;
      if (remove.length) await remover.run(remove);
      if (!data) return {};
      return extract.run(data);
    },
    close,
  };
}

/**
 * Anonymous volumes stay anonymous (issue 22): restore and migrate write an anonymous volume's
 * data into a staged volume before the container exists, and createPlan declares the mount
 * instead of naming that volume, so the engine makes a fresh anonymous volume at create. This
 * moves each staged volume's data into the volume the engine made for the container `id` (a
 * rename on the engine's host where ferry can reach it there, else a copy through the engine:
 * read from the staged volume, written as a restore writes) and removes the staged volume.
 * `volumeNames`: old name -> staged name; `image`: an image on the engine whose tar may read the
 * staged volume (Podman). Returns how each was carried, by the anonymous volume's name.
 */
export async function adoptAnonymousVolumes(
  engine: Engine,
  id: string,
  spec: { mounts: { type: string; source?: string; destination: string; anonymous?: boolean; origin: string }[] },
  volumeNames: Record<string, string>,
  image: string,
  progress: Progress,
  via: Routing = { access: ENGINE_ONLY },
): Promise<{ name: string; carried: Carried }[]> {
  const out: { name: string; carried: Carried }[] = [];
  const wanted = spec.mounts.filter(
    (m) => m.type === 'volume' && m.anonymous && m.origin === 'implicit' && m.source && volumeNames[m.source],
  );
  if (!wanted.length) return out;
  const made = ((await engine.inspectContainer(id)).Mounts ?? []) as {
    Type?: string;
    Name?: string;
    Destination?: string;
  }[];
  for (const m of wanted) {
    const staged = volumeNames[m.source!]!;
    const into = made.find((x) => x.Type === 'volume' && x.Destination === m.destination)?.Name;
    if (!into || into === staged) continue;
    progress.step(`move volume ${staged} into the anonymous volume ${into.slice(0, 12)} at ${m.destination}`);
    const { carried } = await firstOpen(
      `move volume ${staged} into ${into} on ${engine.facts.endpoint}`,
      [
        {
          path: 'host-tar',
          open: () => moveHostVolume(engine, staged, into, () => engine.statPath(id, m.destination), via.access),
        },
        {
          path: 'engine-archive',
          open: async () => {
            const holderImage = await engine.ensureHolderImage();
            const reader = await openVolumeReader(engine, image, staged, via.debug);
            try {
              await fillVolume(engine, holderImage, into, reader.stream, progress, { access: ENGINE_ONLY });
            } catch (err) {
              reader.stream.destroy();
              await reader.done().catch(() => {});
              throw err;
            }
            await reader.done();
            return true as const;
          },
        },
      ],
      via.debug,
    );
    await engine.removeVolume(staged);
    out.push({ name: into, carried });
  }
  return out;
}

/**
 * The links EscapingLinks held back, put into `volume` through a holder that mounts it deep
 * enough (one level per `..` they reach above its root, and one more) that the engine's check
 * of a link's target against the directory it extracts into passes.
 */
async function putEscapingLinks(
  engine: Engine,
  image: string,
  volume: string,
  links: EscapingLinks,
  progress?: Progress,
): Promise<void> {
  const prefix = `${'u/'.repeat(links.depth + 1)}v`;
  const deep = await createHolder(engine, image, {
    Type: 'volume',
    Source: volume,
    Target: `${MOUNT}/${prefix}`,
    VolumeOptions: { NoCopy: true },
  });
  try {
    const n = links.held.filter((e) => e.type !== 'directory').length;
    progress?.info(`volume ${volume}: ${n} symlink${n === 1 ? '' : 's'} pointing above its root written apart`);
    await engine.putArchive(deep.id, MOUNT, Readable.from(escapingLinksTar(links.held, prefix), { objectMode: false }));
  } finally {
    await deep.remove().catch(() => {});
  }
}

/**
 * Whether `hostPath` exists on the engine's host, asked through the Engine API: a never-started
 * holder that mounts it with `HostConfig.Mounts` is refused at create when the path is missing
 * (Docker checks there). Undefined when the answer says nothing either way: Podman checks only
 * at start, and any other refusal is not about the path.
 */
export async function hostPathExists(engine: Engine, image: string, hostPath: string): Promise<boolean | undefined> {
  if (!engine.quirks.helperProbesHost) return undefined;
  let holder: Holder;
  try {
    holder = await createHolder(engine, image, { Type: 'bind', Source: hostPath, Target: MOUNT, ReadOnly: true });
  } catch (err) {
    // createHolder's error carries the engine's message.
    return /bind source path does not exist/i.test((err as Error).message) ? false : undefined;
  }
  await holder.remove();
  return true;
}

/**
 * How far a container with these HostConfig settings (`hostConfig`: PortBindings, Devices, ...)
 * gets when it starts on the engine's host, asked through the Engine API: a helper made with them
 * is started. Docker binds the host ports and gathers the devices before it runs the entrypoint,
 * which the holder image does not have: reaching that is `true` (the host gives what was asked),
 * a refusal before it (at create or at start) is the engine's message, for the caller to tell
 * whether it is about what was asked. Undefined when the answer says nothing (Podman, which
 * checks in another order; an image that has the entrypoint).
 * `exposed`: container ports to declare (`80/tcp`), for PortBindings. The helper is removed.
 */
export async function probeStart(
  engine: Engine,
  image: string,
  hostConfig: Record<string, unknown>,
  exposed: string[] = [],
): Promise<true | string | undefined> {
  const a = await probeHost(engine, image, hostConfig, exposed);
  return a && (a.ok || a.message);
}

/** What probeHost found: the host gave what was asked, or the engine refused it at create or at start. */
export type ProbeAnswer = { ok: true } | { ok: false; at: 'create' | 'start'; message: string };

/** probeStart, telling apart a refusal at create from one at start. */
export async function probeHost(
  engine: Engine,
  image: string,
  hostConfig: Record<string, unknown>,
  exposed: string[] = [],
): Promise<ProbeAnswer | undefined> {
  if (!engine.quirks.helperProbesHost) return undefined;
  const body = holderCreateBody(engine.run, image, {});
  const hc = body.HostConfig as Record<string, unknown>;
  delete hc.Mounts;
  delete body.NetworkDisabled;
  const own = (hc.SecurityOpt as string[] | undefined) ?? [];
  Object.assign(hc, hostConfig);
  // The container's security options are asked about too, but the helper keeps its own
  // no-new-privileges whatever they say.
  if (Array.isArray(hostConfig.SecurityOpt))
    hc.SecurityOpt = [...own, ...(hostConfig.SecurityOpt as string[]).filter((o) => !/^no-new-privileges/.test(o))];
  if (exposed.length) body.ExposedPorts = Object.fromEntries(exposed.map((p) => [p, {}]));
  let holder: Holder;
  try {
    holder = await createHolder(engine, image, {}, body);
  } catch (err) {
    // an engine that checks these at create already: its own words, not the helper's wrapping
    return { ok: false, at: 'create', message: ((err as { cause?: Error }).cause ?? (err as Error)).message };
  }
  try {
    await engine.start(holder.id);
    return undefined;
  } catch (err) {
    const msg = (err as Error).message;
    return /nonexistent-ferry-holder/.test(msg) ? { ok: true } : { ok: false, at: 'start', message: msg };
  } finally {
    await holder.remove().catch(() => {});
  }
}

/** Extract a tar stream into a host path through a bind mount (the engine creates a missing path). */
export async function fillBind(engine: Engine, image: string, hostPath: string, data: Readable): Promise<void> {
  // A Binds entry (not a Mount) so that the engine creates a host path that is missing.
  const holder = await createHolder(engine, image, { bind: `${hostPath}:${MOUNT}` });
  try {
    await engine.putArchive(holder.id, MOUNT, data);
  } catch (err) {
    await holder.remove().catch(() => {});
    throw err;
  }
  await holder.remove();
}

/** Helpers whose create failed, per engine: with the connection lost, the engine may still be creating one. */
const lost = new WeakMap<Engine, Set<{ name: string; image: string }>>();
function lostCreates(engine: Engine): Set<{ name: string; image: string }> {
  let s = lost.get(engine);
  if (!s) lost.set(engine, (s = new Set()));
  return s;
}

/** How long a rollback waits for the engine to finish a helper's create whose answer was lost. */
const LOST_CREATE_WAIT_MS = 30_000;

/**
 * A helper's create whose answer was lost (the connection dropped while the engine worked on
 * it) may finish after the rollback has looked: seen here, an engine busy writing took 2 s, and
 * the helper, once there, kept the volume the rollback was removing (or made it again). The
 * engine reserves a container's name when it starts a create: a placeholder created under the
 * same name shows whether one is under way. Created, nothing was (the placeholder goes again);
 * refused as a conflict, the create is under way or done: its container is removed once it is there.
 */
async function settleLostCreate(engine: Engine, c: { name: string; image: string }): Promise<void> {
  const deadline = Date.now() + LOST_CREATE_WAIT_MS;
  for (;;) {
    try {
      const id = await engine.createContainer(
        c.name,
        holderCreateBody(engine.run, c.image, { Type: 'tmpfs', Target: MOUNT }),
      );
      await engine.removeContainer(id, { force: true });
      return;
    } catch (err) {
      if (!(err instanceof ConflictError)) return; // the image is gone, the engine unreachable: nothing more to do here
    }
    if (await engine.containerExists(c.name)) {
      await removeWithAnonymousVolumes(engine, c.name);
      return;
    }
    if (Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Remove every helper this run made on the engine (after a failure: some answers may have been lost). */
export async function sweepHolders(engine: Engine): Promise<void> {
  const pending = lost.get(engine);
  if (pending)
    for (const c of [...pending]) {
      await settleLostCreate(engine, c).catch(() => {});
      pending.delete(c);
    }
  const mine = await engine.listLabelledContainers([`${LABEL_RUN}=${engine.run.id}`]).catch(() => []);
  for (const c of mine) await removeWithAnonymousVolumes(engine, c.Id).catch(() => {});
}

/**
 * Remove helpers left by ferry runs on this host that were killed (SIGKILL) before removing
 * them. Helpers of live runs, and of other hosts sharing the engine, are left alone.
 */
export async function sweepStaleHolders(engine: Engine): Promise<number> {
  const all = await engine.listLabelledContainers([`${LABEL_ROLE}=holder`]).catch(() => []);
  let n = 0;
  for (const c of all) {
    const owner = c.Labels?.[LABEL_OWNER] ?? '';
    const slash = owner.lastIndexOf('/');
    if (slash < 0 || owner.slice(0, slash) !== engine.run.host) continue;
    const pid = Number(owner.slice(slash + 1));
    if (!Number.isInteger(pid) || pid === engine.run.pid || alive(pid)) continue;
    await removeWithAnonymousVolumes(engine, c.Id).catch(() => {});
    n++;
  }
  return n;
}
