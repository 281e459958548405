/**
 * The data paths: the ways an image or a volume's data leaves or enters an engine, each named,
 * and the one rule by which ferry falls back from one to another.
 *
 * Volumes (read in backup and migrate, written in restore and migrate):
 *  - `host-tar`: GNU tar on the volume's directory, run on the engine's host (this machine for a
 *    unix socket, the SSH host for ssh://) as root (host-volume.ts). Taken where the host offers
 *    it (hostaccess/access.ts, once per engine) and the volume's directory is the one the engine
 *    mounts (checked per volume, before the first byte).
 *  - `restic-restore`: restore only, from a restic snapshot that holds the volume as a file tree
 *    (store/restic/): `restic restore` on this host writes the files beside the new volume's
 *    directory, on its filesystem, and they are moved in by renames once whole (host-volume.ts,
 *    fillHostVolumeTree). Taken under host-tar's conditions, where the engine's host is this
 *    machine (restic runs here) and the snapshot is not signed (a signature covers the bundle the
 *    snapshot rebuilds into, which this path does not read); else the tree's archive (`restic
 *    dump`) goes by host-tar or engine-archive, with the reason as the fallback.
 *  - `helper-tar`: Podman only (its archive endpoint loses owners): the tar of the container's own
 *    image, run in a helper container, read from its stdout (volumes.ts).
 *  - `engine-archive`: the engine's archive endpoints (`docker cp`): GET from the container itself
 *    or a never-started holder, PUT into a holder (volumes.ts). Always there: the last resort.
 * Images:
 *  - `layer-store`: an image archive built from the overlay2 layer store on the engine's host,
 *    only the layers the target lacks, every layer's digest checked as it streams (host-image.ts).
 *  - `engine-save`: the engine's save endpoint (`docker save`), in a migration without the layers
 *    the target has (ship.ts, save.ts).
 *  - `engine-load`: the engine's load endpoint (`docker load`): a restore's image member; in a
 *    migration, the target's side of every image sent (the whole image, or to Docker with its own
 *    image store, without the layers it has).
 *  - `content-store`: containerd's content store on the engine's host (Docker with the
 *    containerd image store), on either side; which side is the field's (ImagePath: `path` the
 *    source's, `target` the target's).
 *    As the source's path (backup, migrate): an OCI archive of the image read straight from the
 *    store's blobs, only those the target lacks, every blob's sha256 checked as it streams
 *    (content-image.ts), in the shape of the engine's save; the image is resolved from its ID (on
 *    that store its manifest's or index's digest). Refused as content-store.ts's rules say (no
 *    host access, FERRY_HOST_LAYERS=0, user ids remapped, not the containerd store); a blob
 *    missing, short or of another digest (ContentStoreMismatch) is the path's own failure: the
 *    engine's save from the start (`engine-save`), as for the layer store.
 *    As the target's path (migrate): its load endpoint given an OCI archive without the layer
 *    blobs its containerd content store holds, learnt on its host (content-store.ts, oci.ts).
 *    Where that store cannot be read (no host access, FERRY_HOST_LAYERS=0) the whole image goes
 *    (`engine-load`, with the reason); should the partial load fail, the whole image is sent again.
 *  - `registry`: pushed to (backup --image-mode push) or pulled from (restore) a registry.
 *  - `none`: nothing sent: the target of a migration already has the image.
 *
 * The fallback rule (written once: firstOpen and redoWith below): a path is asked first; before
 * its first byte it may refuse, with a reason, and the next path is taken. After it began, only a
 * failure that the path itself says is its own (`why` gives a reason) is done again from the start
 * on the next path, recorded as the fallback; any other failure is the run's.
 *
 * Where the uses differ, and why:
 *  - Volumes never fall back once begun: a tar that fails half-way on the host failed on the
 *    volume's own files (a read or write error the engine would hit too), and a half-written
 *    volume cannot be unwritten. So their paths only refuse before the first byte.
 *  - An image from the layer store or the content store can fail half-way because the store does
 *    not hold what the image says (LayerStoreMismatch, ContentStoreMismatch): the engine's save is authoritative, so the image is sent
 *    again from the start with it. In a backup the bundle writer does that (it must rewind the
 *    member's bytes before the second attempt: BundleWriter.addMember's `again`, given redoWith's
 *    answer); in a migration withFallback loads it again into the target.
 *  - A backup into a stream (stdout, a pipe) cannot be rewound: there the layer store and the
 *    content store refuse before they start.
 */
import type { Engine } from '../engine/engine.js';
import type { RunContext } from '../context.js';
import type { HostAccess } from '../hostaccess/access.js';
import { noDebug, type Debug } from '../util/debug.js';
import type { PrecopyReport } from './precopy.js';

export type DataPath =
  | 'host-tar'
  | 'restic-restore'
  | 'helper-tar'
  | 'engine-archive'
  | 'layer-store'
  | 'engine-save'
  | 'engine-load'
  | 'content-store'
  | 'registry'
  | 'none';

/** Which path carried the data; when another was asked first and refused or failed, that one and why. */
export interface Carried {
  path: DataPath;
  fallback?: { from: DataPath; reason: string };
  /** Extended attributes of the data that this path could not keep (`<key> on <file>: <why>`). */
  xattrsLost?: string[];
  /**
   * Extended attribute namespaces this path does not read at all (`user.*`, `trusted.*` through
   * the engine): whether the data had any is unknown.
   */
  xattrsUnread?: string[];
}

/** A path's answer before its first byte: it will not carry the data, and why. */
export interface Refused {
  refused: string;
}

export function refused(reason: string): Refused {
  return { refused: reason };
}

export function isRefused(x: unknown): x is Refused {
  return typeof x === 'object' && x !== null && typeof (x as Refused).refused === 'string';
}

/** A path that may carry the data: its name, and how it opens (or why it will not). */
export interface PathOption<T> {
  path: DataPath;
  open(): Promise<T | Refused>;
}

/** What the data paths of one engine go by: what its host offers, and the debug channel. */
export interface Routing {
  access: HostAccess | Promise<HostAccess>;
  debug?: Debug;
}

/** No host fast path (host access not decided for this engine): the engine's own paths. */
export const ENGINE_ONLY: HostAccess = {
  volumes: { use: false, reason: 'host access not decided for this engine' },
  layers: { use: false, reason: 'host access not decided for this engine' },
};

/** The routing of `engine` in a run: what its host offers (asked once per engine), and the run's debug channel. */
export function routing(ctx: Pick<RunContext, 'hostAccess' | 'debug'>, engine: Engine): Routing {
  return { access: ctx.hostAccess?.(engine) ?? ENGINE_ONLY, debug: ctx.debug };
}

/**
 * The fallback rule, before the first byte: the first of `options` that opens carries the data;
 * the last refusal before it is the result's fallback. The last option must not refuse.
 */
export async function firstOpen<T>(
  what: string,
  options: PathOption<T>[],
  debug: Debug = noDebug,
): Promise<{ value: T; carried: Carried }> {
  let fallback: Carried['fallback'];
  for (const o of options) {
    const v = await o.open();
    if (isRefused(v)) {
      debug(`${what}: not ${o.path}: ${v.refused}`);
      fallback = { from: o.path, reason: v.refused };
      continue;
    }
    debug(`${what}: ${o.path}${fallback ? ` (fallback from ${fallback.from}: ${fallback.reason})` : ''}`);
    return { value: v, carried: { path: o.path, ...(fallback ? { fallback } : {}) } };
  }
  throw new Error(
    `internal: no data path for ${what}${fallback ? ` (last: ${fallback.from}: ${fallback.reason})` : ''}`,
  );
}

/** Whether a failure after the first byte calls for the next path, and opens it (BundleWriter's MemberAgain). */
export interface Redo<T> {
  when(err: unknown): boolean;
  open(err: unknown): Promise<T>;
}

/**
 * The fallback rule, after the first byte: a failure for which `why` gives a reason (the path's
 * own) calls for `next`, from the start; `carried` then records it, and `note` tells the operator.
 */
export function redoWith<T>(
  what: string,
  carried: Carried,
  why: (err: unknown) => string | undefined,
  next: { path: DataPath; open(): Promise<T> },
  opts: { debug?: Debug; note?: (reason: string) => void } = {},
): Redo<T> {
  return {
    when: (err) => why(err) !== undefined,
    open: async (err) => {
      const reason = why(err) ?? String(err);
      (opts.debug ?? noDebug)(`${what}: fallback from ${carried.path} to ${next.path}: ${reason}`);
      opts.note?.(reason);
      carried.fallback = { from: carried.path, reason };
      carried.path = next.path;
      return next.open();
    },
  };
}

/**
 * Both halves of the rule around one use of the data (`use`, e.g. a load into the target): the
 * first of `primary`, `next` that opens is used; should the primary fail half-way for a reason
 * `why` gives, `use` runs again on `next`.
 */
export async function withFallback<T, R>(
  what: string,
  primary: PathOption<T>,
  next: { path: DataPath; open(): Promise<T> },
  use: (value: T) => Promise<R>,
  why: (err: unknown, value: T) => string | undefined,
  opts: { debug?: Debug; note?: (reason: string) => void } = {},
): Promise<{ result: R; carried: Carried }> {
  const { value, carried } = await firstOpen(what, [primary, next], opts.debug);
  try {
    return { result: await use(value), carried };
  } catch (err) {
    if (carried.path !== primary.path) throw err;
    const redo = redoWith(what, carried, (e) => why(e, value), next, opts);
    if (!redo.when(err)) throw err;
    return { result: await use(await redo.open(err)), carried };
  }
}

/** A volume's path, by name (migrate: `path` is the source's side, `target` the target's). */
export interface VolumePath extends Carried {
  name: string;
  target?: Carried;
  /** migrate, backup --precopy: what the pre-copy did (precopy.ts), or why there was none for a container it froze. */
  precopy?: PrecopyReport | { refused: string };
}

/** An image's path, by container and reference (migrate: `path` is the source's side, `target` the target's). */
export interface ImagePath extends Carried {
  container: string;
  ref: string;
  target?: Carried;
}

/** Which path carried each image and volume of a run (in every op's result and --json). */
export interface DataPaths {
  volumes: VolumePath[];
  images: ImagePath[];
}
