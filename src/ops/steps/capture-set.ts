/**
 * Capturing a set of containers for one backup, written once for `backup` and `restic-backup`:
 *
 *   captureSet()    inspect every container, and decide how each is quiesced
 *   planBundle()    the manifest: containers, volumes (each shared one once), networks, members
 *   QuiescedSet     quiesce the whole set (dependents first) and put it back (in dependency order)
 *   commitSnapshot  commit one container's writable layer under the ref its entry names
 *
 * The op decides what happens to the data in between: a bundle (backup.ts) or a restic snapshot
 * (restic-backup.ts).
 */
import { volumeExcludes } from '../../data/excludes.js';
import type { Engine } from '../../engine/engine.js';
import {
  FORMAT,
  FORMAT_VERSION,
  memberName,
  type ContainerEntry,
  type ImageFacts,
  type Manifest,
  type MemberPlan,
  type VolumeEntry,
} from '../../bundle/manifest.js';
import { codecExtension, type Codec } from '../../bundle/codec.js';
import { dependencyOrder, type NetworkSpec } from '../../model/spec.js';
import { splitRef } from '../../model/refs.js';
import { VERSION } from '../../version.js';
import { checkAborted, type Progress } from '../../context.js';
import { UsageError } from '../../errors.js';
import {
  captureContainer,
  commitContainer,
  containerQuiesce,
  hostName,
  quiesce,
  removeSnapshot,
  snapshotRef,
  type Captured,
  type Consistency,
  type Resume,
} from './capture.js';
import { runHook, type Hooks } from './hooks.js';

/** How a container is quiesced for its snapshot (containerQuiesce()). */
export type QuiesceChoice = ReturnType<typeof containerQuiesce>;

export interface CaptureSet {
  /** In the order they were named. */
  captured: Captured[];
  names: string[];
  how: Map<Captured, QuiesceChoice>;
}

/**
 * Inspect every container (before anything is written or paused) and decide how each is quiesced:
 * the command line's choice, else its labels. A container named twice is a UsageError.
 */
export async function captureSet(
  engine: Engine,
  containers: string[],
  given: { consistency?: Consistency; stopTimeout?: number },
  progress: Progress,
): Promise<CaptureSet> {
  const captured: Captured[] = [];
  for (const c of containers) {
    progress.step(`inspect ${c}`);
    captured.push(await captureContainer(engine, c));
  }
  const names = captured.map((c) => c.spec.name);
  if (new Set(names).size !== names.length) throw new UsageError('a container was named twice');
  const how = new Map(captured.map((c) => [c, containerQuiesce(c.spec.name, c.labels, given)]));
  return { captured, names, how };
}

/** The warning for bind mounts whose data is not copied (`why`: what to do about it). */
export function warnUncopiedBinds(captured: Captured[], progress: Progress, why: string): void {
  for (const c of captured)
    if (c.binds.length)
      progress.warn(
        `${c.spec.name}: bind mounts ${c.binds.map((b) => b.hostPath).join(', ')} are recorded, not copied (${why})`,
      );
}

export interface BundlePlanOptions {
  /** The codec of volume and bind members. */
  codec: Codec;
  /** The codec of image members. */
  imageCodec: Codec;
  /** A member per bind mount of each container (else bind mounts are only recorded). */
  includeBinds: boolean;
  /** Registry mode: images are pushed to `<host>/<prefix>/<name>`, no image members. */
  registry?: { host: string; prefix: string };
  /** --exclude-path: left out of every volume, before each container's own (its ferry.exclude-paths label). */
  excludePaths?: string[];
}

/**
 * The manifest of one backup of `set`, members in the order they will be written: per container,
 * its volumes (a volume shared by several, once, with the first), its binds, then its image.
 * `manifest.containers[i]` is `set.captured[i]`. Pure but for the engine's facts and the host name.
 */
export function planBundle(engine: Engine, set: CaptureSet, when: Date, opts: BundlePlanOptions): Manifest {
  const members: MemberPlan[] = [];
  const volumes: VolumeEntry[] = [];
  const networks: NetworkSpec[] = [];
  const containers: ContainerEntry[] = [];
  const used = new Set<string>();
  const repos = new Set<string>();
  const uniq = (folder: 'images' | 'volumes' | 'binds', base: string, ext: string) => {
    let n = memberName(folder, base, members.length, ext);
    for (let i = 2; used.has(n); i++) n = memberName(folder, `${base}-${i}`, members.length, ext);
    used.add(n);
    return n;
  };
  const { registry } = opts;
  for (const c of set.captured) {
    for (const v of c.volumes) {
      if (volumes.some((x) => x.name === v.name)) continue; // shared volume: once, with its first container
      const member = uniq('volumes', v.name, codecExtension(opts.codec));
      const excludePaths = volumeExcludes(opts.excludePaths, v.excludePaths);
      volumes.push({ ...v, member, ...(excludePaths.length ? { excludePaths } : {}) });
      members.push({ name: member, kind: 'volume', codec: opts.codec });
    }
    const binds: ContainerEntry['binds'] = [];
    if (opts.includeBinds)
      for (const b of c.binds) {
        const member = uniq('binds', `${c.spec.name}${b.destination.replace(/\//g, '_')}`, codecExtension(opts.codec));
        binds.push({ container: c.spec.name, hostPath: b.hostPath, destination: b.destination, member });
        members.push({ name: member, kind: 'bind', codec: opts.codec });
      }
    const ref = snapshotRef(c.spec.name, when);
    let image: ContainerEntry['image'];
    if (registry) {
      const repo = registryRepo(registry.host, registry.prefix, ref.repo.slice('ferry/'.length), repos);
      image = { ref: `${repo}:${ref.tag}`, registry: { host: registry.host } };
    } else {
      const imgMember = uniq('images', c.spec.name, codecExtension(opts.imageCodec));
      members.push({ name: imgMember, kind: 'image', codec: opts.imageCodec });
      image = { ref: `${ref.repo}:${ref.tag}`, member: imgMember };
    }
    for (const n of c.networks) if (!networks.some((x) => x.name === n.name)) networks.push(n);
    containers.push({
      spec: c.spec,
      image,
      volumes: c.volumes.map((v) => v.name),
      binds,
      consistency: set.how.get(c)!.mode,
    });
  }
  return {
    format: FORMAT,
    formatVersion: FORMAT_VERSION,
    ferryVersion: VERSION,
    createdAt: when.toISOString(),
    ...(registry ? { imageMode: 'push' as const } : {}),
    source: {
      engine: engine.facts.endpoint,
      serverVersion: engine.facts.serverVersion,
      apiVersion: engine.facts.apiVersion,
      os: engine.facts.os,
      arch: engine.facts.arch,
      hostname: hostName(),
    },
    containers,
    volumes,
    networks,
    members,
  };
}

/** `<host>/<prefix>/<name>`, made unique among the repositories of this bundle. */
function registryRepo(host: string, prefix: string, name: string, used: Set<string>): string {
  // A repository path component: [a-z0-9] runs joined by '.', '_', '__' or dashes; nothing else.
  const comp =
    name
      .replace(/[^a-z0-9._-]/g, '-')
      .replace(/[._-]{2,}/g, (m) => (/^-+$/.test(m) || m === '__' ? m : '-'))
      .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '') || 'container';
  const base = [host, prefix, comp].filter(Boolean).join('/');
  let repo = base;
  for (let i = 2; used.has(repo); i++) repo = `${base}-${i}`;
  used.add(repo);
  return repo;
}

/**
 * The volumes of `entry` not read yet in this backup (a volume shared by several containers is
 * read once, with the first), marked read in `seen`.
 */
export function volumesToRead(entry: ContainerEntry, volumes: VolumeEntry[], seen: Set<string>): VolumeEntry[] {
  const out: VolumeEntry[] = [];
  for (const vname of entry.volumes) {
    if (seen.has(vname)) continue;
    seen.add(vname);
    out.push(volumes.find((x) => x.name === vname)!);
  }
  return out;
}

/**
 * Commit a quiesced container's writable layer under the ref its entry names. The snapshot's id
 * goes into `snapshots` at once, for dropSnapshots() at the end, whatever happens after.
 */
export async function commitSnapshot(
  engine: Engine,
  c: Captured,
  entry: ContainerEntry,
  mode: Consistency,
  progress: Progress,
  snapshots: string[],
): Promise<ImageFacts> {
  progress.step(`commit ${c.spec.name}`);
  const [repo, tag] = splitRef(entry.image.ref);
  const committed = await commitContainer(engine, c.spec, { repo, tag }, mode);
  snapshots.push(committed.id);
  return { ref: entry.image.ref, id: committed.id, layers: committed.layers };
}

/** Remove this run's snapshot images; one that cannot be removed is left (recover.ts sweeps it). */
export async function dropSnapshots(engine: Engine, snapshots: string[]): Promise<void> {
  for (const id of snapshots) await removeSnapshot(engine, id).catch(() => {});
}

/**
 * A set of containers quiesced together and put back together (`backup --together`, a restic
 * backup): one instant for a whole stack. quiesce() runs every pre-exec hook first, then pauses or
 * stops each container, dependents first (a sidecar before the app whose network it uses), so none
 * runs without what it needs; release() puts them back in dependency order, then runs the
 * post-exec hooks. release() is safe to call at any point, and more than once: it puts back what
 * was quiesced, once.
 */
export class QuiescedSet {
  private held: { c: Captured; resume?: Resume; post?: string }[] = [];
  private pausedAt: number | undefined;
  /** How long the set was paused or stopped: from the first quiesce to the release. */
  pausedMs = 0;

  constructor(
    private readonly engine: Engine,
    private readonly set: CaptureSet,
    private readonly ctx: { progress: Progress; signal: AbortSignal },
    private readonly opts: { wait?: number; hooks?: (c: Captured) => Hooks },
  ) {}

  async quiesce(): Promise<void> {
    const { engine, ctx } = this;
    for (const c of this.set.captured) {
      checkAborted(ctx.signal);
      const hooks = this.opts.hooks?.(c) ?? {};
      if (hooks.pre) await runHook(engine, c.spec, 'pre-exec', hooks.pre, ctx);
      this.held.push({ c, ...(hooks.post ? { post: hooks.post } : {}) });
    }
    const order = dependencyOrder(this.set.captured.map((c) => c.spec)).reverse();
    const byIndex = order.map((i) => this.held[i]!);
    this.held.splice(0, this.held.length, ...byIndex);
    for (const h of this.held) {
      checkAborted(ctx.signal);
      const q = this.set.how.get(h.c)!;
      h.resume = await quiesce(engine, h.c.spec, q.mode, ctx.progress, {
        stopTimeout: q.stopTimeout,
        waitSeconds: this.opts.wait,
        signal: ctx.signal,
      });
      this.pausedAt ??= Date.now();
    }
  }

  /** Put every container back; one that cannot be put back does not keep the others down. */
  async release(): Promise<void> {
    const held = this.held.splice(0);
    let failed: { error: unknown } | undefined;
    for (const h of [...held].reverse())
      if (h.resume) await h.resume().catch((e: unknown) => (failed ??= { error: e }));
    if (this.pausedAt !== undefined) this.pausedMs = Date.now() - this.pausedAt;
    this.pausedAt = undefined;
    for (const h of held)
      if (h.post)
        await runHook(this.engine, h.c.spec, 'post-exec', h.post, this.ctx).catch((e) =>
          this.ctx.progress.warn((e as Error).message),
        );
    if (failed) throw failed.error;
  }
}
