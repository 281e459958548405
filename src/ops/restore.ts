/**
 * ferry restore: load -> run, from a bundle read as one stream (nothing staged on disk).
 *
 *   manifest -> preflight (conflicts) -> networks -> for each member in bundle order:
 *   volume: create + fill | bind: fill | image: load -> trailer verified -> images in a registry
 *   pulled by the digest the trailer records -> containers created -> started if they were running
 *
 * Members are checked against the trailer before any container is created; a failure anywhere
 * removes what this restore created (Undo).
 */
import { BundleReader, type SignerInfo } from '../bundle/reader.js';
import { registryDigest, type BindEntry, type Manifest } from '../bundle/manifest.js';
import type { RestoreRewrite } from '../plan/rewrite.js';
import type { Engine } from '../engine/engine.js';
import { describeAuth, resolveRegistryAuth, type RegistryAuth } from '../engine/auth.js';
import { layerBytes } from '../engine/progress.js';
import type { Readable } from 'node:stream';
import { asString, containerRefs, type ContainerSpec, type NetworkSpec } from '../model/spec.js';
import { splitRef } from '../model/refs.js';
import { BundleError, ConflictError, PolicyError, UsageError } from '../errors.js';
import { allowFor, hostAccess, refusedAccess, type HostAccess, type HostAccessKind } from '../plan/policy.js';
import { badMembers, verifyStream } from '../bundle/check.js';
import type { DirectSource, DirectVolumes, NoDirectVolumes, Transport } from '../store/transport.js';
import { abortable } from '../util/abortable.js';
import { orchestratedBy } from './steps/capture.js';
import { abortAware, checkAborted, type RunContext } from '../context.js';
import { loadImage } from '../data/load.js';
import { checkConflicts, preflight } from './steps/preflight.js';
import {
  createVolume,
  freeName,
  Recreation,
  type OnConflict,
  type Recreated,
  type ToCreate,
  type Undo,
} from './steps/recreate.js';
import { fillBind, fillVolume, fillVolumeTree } from '../data/volumes.js';
import { counted } from '../util/counted.js';
import { recoverDeadRuns } from './steps/recover.js';
import { routing, type DataPaths, type Routing, type VolumePath } from '../data/paths.js';

export interface RestoreOptions {
  name?: string;
  /** Restore only these containers of the bundle (--only), with the volumes and networks they use. */
  only?: string[];
  start: boolean;
  dryRun: boolean;
  onConflict: OnConflict;
  /** Write bind-mount data back to the host paths recorded in the bundle. */
  restoreBinds?: boolean;
  /** Credentials for a registry host (images of a push-mode bundle); default: the docker config. */
  registryAuth?: (host: string) => Promise<RegistryAuth>;
  /**
   * Restore under other names and settings (ferry drill): called with the manifest, before
   * anything is planned or created. Absent: as the bundle recorded them.
   */
  rewrite?: (m: Manifest) => RestoreRewrite;
  /**
   * Record what this restore creates here: on success the caller owns the list (and removes
   * everything when it is done, as ferry drill does); on failure the restore still rolls it back.
   */
  undo?: Undo;
  /**
   * The kinds of host access (plan/policy.ts) this restore may create although the bundle is not
   * signed by a key --trust accepts (--allow). A trusted bundle restores as it was made.
   */
  allow?: ReadonlySet<HostAccessKind>;
  /**
   * A source that writes some volumes itself, where the target's host allows (a restic
   * snapshot's file trees: `restic-restore`); asked before the bundle is opened.
   */
  direct?: DirectSource;
}

export interface RestorePlan {
  /** `pull`: the registry host the image is pulled from (push-mode bundles); else it is loaded from the bundle. */
  containers: {
    from: string;
    to: string;
    image: string;
    start: boolean;
    replace: boolean;
    pull?: string;
    ports: string[];
  }[];
  volumes: { from: string; to: string; replace: boolean }[];
  networks: { name: string; exists: boolean }[];
  binds: { hostPath: string; restore: boolean }[];
  /** Settings that give a container the host (plan/policy.ts); `allowed`: by --allow or a trusted signature. */
  hostAccess: (HostAccess & { allowed: boolean })[];
}

export interface RestoreResult {
  location: string;
  plan: RestorePlan;
  /** exitCode: the container stopped right after its start (see watchStarted). */
  containers: { name: string; id: string; started: boolean; exitCode?: number }[];
  durationMs: number;
  dryRun: boolean;
  /** Which data path wrote each volume and brought each image (data/paths.ts); empty for a dry run. */
  dataPaths: DataPaths;
}

/**
 * The part of a bundle that `--only` restores: those containers, the volumes they mount and the
 * user-defined networks they join. Notes for the operator: references to containers left out
 * (they must exist on the target). Pure; unit-tested. Throws a UsageError for a name the bundle
 * does not have.
 */
export function selectContainers(m: Manifest, selected: string[]): { manifest: Manifest; notes: string[] } {
  // `volume:<name>`: that volume's data alone, without a container.
  const wantedVolumes = selected.filter((n) => n.startsWith('volume:')).map((n) => n.slice('volume:'.length));
  const only = selected.filter((n) => !n.startsWith('volume:'));
  const missingVolumes = wantedVolumes.filter((v) => !m.volumes.some((x) => x.name === v && !x.anonymous));
  if (missingVolumes.length)
    throw new UsageError(
      `--only: the bundle has no named volume ${missingVolumes.join(', ')}`,
      `its named volumes: ${
        m.volumes
          .filter((v) => !v.anonymous)
          .map((v) => v.name)
          .join(', ') || 'none'
      }; nothing was changed`,
    );
  const names = m.containers.map((c) => c.spec.name);
  const unknown = only.filter((n) => !names.includes(n));
  if (unknown.length)
    throw new UsageError(
      `--only: the bundle has no container ${unknown.join(', ')}`,
      `it holds: ${names.join(', ')}; a volume alone is volume:<name>; nothing was changed`,
    );
  const containers = m.containers.filter((c) => only.includes(c.spec.name));
  // A container's volumes include those it mounts through --volumes-from: they belong to the
  // container they come from, and are restored with it (or are on the target already).
  const volumesOf = (name: string) => m.containers.find((c) => c.spec.name === name)?.volumes ?? [];
  const volumes = new Set([
    ...containers.flatMap((c) => {
      const borrowed = new Set((c.spec.hostConfig.VolumesFrom ?? []).flatMap((v) => volumesOf(v.split(':')[0]!)));
      return c.volumes.filter((v) => !borrowed.has(v));
    }),
    ...wantedVolumes,
  ]);
  const networks = new Set(
    containers.flatMap((c) => [...c.spec.endpoints.map((e) => e.network), asString(c.spec.hostConfig.NetworkMode)]),
  );
  const notes: string[] = [];
  for (const c of containers)
    for (const ref of containerRefs(c.spec))
      if (names.includes(ref) && !only.includes(ref))
        notes.push(
          `${c.spec.name} refers to container ${ref}, which --only leaves out: it must exist on the target (or restore both)`,
        );
  return {
    manifest: {
      ...m,
      containers,
      volumes: m.volumes.filter((v) => volumes.has(v.name)),
      networks: m.networks.filter((n) => networks.has(n.name)),
    },
    notes,
  };
}

/** A spec's published ports as `[ip:]hostport -> port/proto` (the engine picks an empty host port). */
function publishedPorts(spec: ContainerSpec): string[] {
  const pb = spec.hostConfig.PortBindings ?? {};
  return Object.entries(pb).flatMap(([port, bs]) =>
    (bs ?? []).map(
      (b) =>
        `${b.HostIp ? (b.HostIp.includes(':') ? `[${b.HostIp}]:` : `${b.HostIp}:`) : ''}${b.HostPort || '(any)'} -> ${port}`,
    ),
  );
}

/** The name a container of the bundle is to have on the target (before --on-conflict rename). */
function wantedName(name: string, opts: RestoreOptions, rw?: RestoreRewrite): string {
  return opts.name ?? rw?.containerName(name) ?? name;
}

/** `specs`: what each container of `m` is created from (after the rewrite), in the same order. */
async function makePlan(
  engine: Engine,
  m: Manifest,
  specs: ContainerSpec[],
  opts: RestoreOptions,
  rw?: RestoreRewrite,
): Promise<RestorePlan> {
  const containers: RestorePlan['containers'] = [];
  for (const [i, c] of m.containers.entries()) {
    const want = wantedName(c.spec.name, opts, rw);
    const exists = await engine.containerExists(want);
    const to = exists && opts.onConflict === 'rename' ? await freeName(want, (n) => engine.containerExists(n)) : want;
    containers.push({
      from: c.spec.name,
      to,
      image: c.image.ref,
      start: opts.start && c.spec.state.running,
      replace: exists && opts.onConflict === 'replace',
      ...(c.image.registry ? { pull: c.image.registry.host } : {}),
      ports: publishedPorts(specs[i]!),
    });
  }
  const volumes: RestorePlan['volumes'] = [];
  for (const v of m.volumes) {
    if (v.anonymous) {
      volumes.push({ from: v.name, to: '(new anonymous volume)', replace: false });
      continue;
    }
    const want = rw?.volume(v).name ?? v.name;
    const exists = !!(await engine.inspectVolume(want));
    const to =
      exists && opts.onConflict === 'rename'
        ? await freeName(want, async (n) => !!(await engine.inspectVolume(n)))
        : want;
    volumes.push({ from: v.name, to, replace: exists && opts.onConflict === 'replace' });
  }
  const networks: RestorePlan['networks'] = [];
  for (const n0 of m.networks) {
    const n = rw?.network(n0) ?? n0;
    networks.push({ name: n.name, exists: !!(await engine.inspectNetwork(n.name)) });
  }
  const binds = m.containers.flatMap((c) =>
    c.binds.map((b) => ({ hostPath: rw?.bindPath?.(b) ?? b.hostPath, restore: !!opts.restoreBinds })),
  );
  return { containers, volumes, networks, binds, hostAccess: [] };
}

/** The options by which a plan changes what is there (removes containers or volumes, writes host paths). Pure. */
export function planOverwrites(plan: RestorePlan): string[] {
  return [
    ...(plan.containers.some((c) => c.replace) || plan.volumes.some((v) => v.replace) ? ['--on-conflict replace'] : []),
    ...(plan.binds.some((b) => b.restore) ? ['--restore-binds'] : []),
  ];
}

/**
 * Before a restore changes what is there (--on-conflict replace removes containers and volumes,
 * --restore-binds writes over host paths): read the whole bundle once, as `ferry verify` does; a
 * damaged one is refused with nothing changed. A bundle from a pipe cannot be read twice: that
 * is said, and the restore goes on.
 */
async function checkBeforeOverwriting(transport: Transport, what: string, ctx: RunContext): Promise<void> {
  const { progress, signal } = ctx;
  if (!transport.rereadable) {
    progress.warn(
      `${what}: a bundle from a pipe cannot be read twice, so it is not checked before what it replaces is changed; if it turns out damaged, that is lost (check it with ferry verify first)`,
    );
    return;
  }
  progress.step(`verify the whole bundle before changing anything (${what})`);
  const again = await transport.openBundle();
  let report: Awaited<ReturnType<typeof verifyStream>>;
  try {
    report = await verifyStream(abortable(again.stream, signal), again.location, ctx);
  } finally {
    again.stream.destroy();
  }
  if (!report.ok)
    throw new BundleError(
      `${again.location} is damaged (bad: ${badMembers(report).join(', ')}); nothing was replaced or written`,
      {
        member: badMembers(report)[0],
        hint: 'what is on the engine and the host is untouched; restore from another bundle (ferry ls, ferry verify)',
      },
    );
}

/**
 * --trust: read the whole bundle once (stored bytes, not decompressed), so that a bad signature
 * or a bundle changed after signing is refused with nothing changed. A bundle from a pipe cannot
 * be read twice: its signature is checked after its last member, and what the restore created
 * by then is removed when it fails (as for a damaged member).
 */
export async function checkSignedBeforeRestoring(transport: Transport, ctx: RunContext): Promise<void> {
  const { progress, signal } = ctx;
  if (!transport.rereadable) {
    progress.warn(
      'a bundle from a pipe cannot be read twice: its signature is checked after its last member, and what this restore created is removed if it fails',
    );
    return;
  }
  progress.step(`check the signature of the whole bundle before changing anything (--trust ${ctx.trust!.file})`);
  const again = await transport.openBundle();
  try {
    const r = await BundleReader.open(abortable(again.stream, signal), again.location, {
      passphrase: ctx.passphrase,
      identities: ctx.identities,
      trust: ctx.trust,
    });
    for await (const m of r.members()) m.stream.resume();
    progress.info(`signed by ${describeSignerInfo(r.signer!)}`);
  } finally {
    again.stream.destroy();
  }
}

/** `host-a (ssh-ed25519 SHA256:...), allowed by /etc/ferry/allowed_signers` */
export function describeSignerInfo(s: SignerInfo): string {
  const key = `${s.key.split(' ')[0]} ${s.fingerprint}`;
  return s.principals ? `${s.principals.join(',')} (${key}), allowed by ${s.trustedBy}` : key;
}

/** What a restore restores, decided before anything changes. */
interface RestoreJob {
  /** The part of the bundle restored (--only). */
  m: Manifest;
  rw?: RestoreRewrite;
  /** What each container of `m` is created from (after the rewrite), in the same order. */
  specs: ContainerSpec[];
  plan: RestorePlan;
  networks: NetworkSpec[];
}

/**
 * ferry restore, as a story: plan and preflight (a dry run stops there) -> registry credentials
 * -> the whole bundle checked first when something is overwritten -> networks -> the bundle's
 * members (volumes filled, binds written, images loaded) -> trailer verified -> registry images
 * pulled -> containers created, started, watched. A failure rolls back what was made.
 */
export async function restore(
  engine: Engine,
  transport: Transport,
  opts: RestoreOptions,
  ctx: RunContext,
): Promise<RestoreResult> {
  const started = Date.now();
  const { progress, signal } = ctx;
  // What the engine's host offers the data paths: asked now, in the background.
  const via = routing(ctx, engine);
  // A source that writes volumes itself takes them now: the bundle read is then without them.
  const taken = opts.direct && !opts.dryRun ? await opts.direct.take(await via.access) : undefined;
  const direct = taken && 'volumes' in taken ? taken : undefined;
  const source = direct?.transport ?? transport;
  const src = await source.openBundle();
  const reader = await BundleReader.open(abortable(src.stream, signal), src.location, {
    passphrase: ctx.passphrase,
    identities: ctx.identities,
    trust: ctx.trust,
  });
  for (const d of engine.differences()) progress.info(d);
  await recoverDeadRuns(engine, progress, undefined, undefined, undefined, via);
  const rec = new Recreation(engine, ctx, { undo: opts.undo, via });
  const result = (job: RestoreJob, containers: Recreated[], dataPaths: DataPaths): RestoreResult => ({
    location: src.location,
    plan: job.plan,
    containers,
    durationMs: Date.now() - started,
    dryRun: opts.dryRun,
    dataPaths,
  });
  try {
    progress.info(
      `bundle ${src.location}: ${reader.manifest.containers.map((c) => c.spec.name).join(', ')}, backed up on ${reader.manifest.source.hostname} (engine ${reader.manifest.source.engine}) at ${reader.manifest.createdAt}`,
    );
    const job = await planRestore(engine, reader.manifest, opts, ctx);
    if (opts.dryRun) {
      reader.close();
      return result(job, [], { volumes: [], images: [] });
    }
    // --trust: the signer the manifest declares is allowed (checked on opening); the signature
    // itself is at the end, so the whole bundle is read once before anything is changed.
    if (ctx.trust) await checkSignedBeforeRestoring(source, ctx);
    const auths = await registryAuths(job.m, opts, progress);
    // --restore-binds writes over host files, and a replace is best refused before the old
    // service is stopped: so the whole bundle is checked first.
    const overwrites = planOverwrites(job.plan);
    if (overwrites.length) await checkBeforeOverwriting(source, overwrites.join(', '), ctx);
    // Replace: the old containers are set aside (not removed) when the new ones are created.
    rec.replaceContainers(job.plan.containers.filter((c) => c.replace).map((c) => c.to));
    await rec.networks(job.networks);
    const { images, dataPaths } = await restoreMembers(reader, job, rec, opts, ctx, via, taken);
    progress.step(
      `bundle verified (every member matches its sha256${reader.signer ? `; signed by ${describeSignerInfo(reader.signer)}` : ''})`,
    );
    await pullImages(engine, job.m, registryDigests(reader), auths, { images, dataPaths, undo: rec.undo }, ctx);
    const list: ToCreate[] = job.m.containers.map((c, i) => ({
      original: c.spec,
      spec: job.specs[i]!,
      name: job.plan.containers[i]!.to,
      image: images.get(c.spec.name)!,
      start: job.plan.containers[i]!.start,
      pause: c.spec.state.paused,
    }));
    const out = await rec.create(list);
    await rec.start(list, out);
    return result(job, await rec.watch(out), dataPaths);
  } catch (err) {
    reader.close();
    await rec.rollback();
    // An engine call that failed because the bundle stream broke reports the bundle's problem.
    throw reader.failure ?? err;
  }
}

/**
 * What is restored and how, with every check that can be made before anything changes: --only,
 * --name, the rewrite, conflicts, the plan, and the target's preflight.
 */
async function planRestore(
  engine: Engine,
  whole: Manifest,
  opts: RestoreOptions,
  ctx: RunContext,
): Promise<RestoreJob> {
  const { progress } = ctx;
  // From here on, m is what this restore restores (--only: a part of the bundle).
  const { manifest: m, notes } = opts.only?.length
    ? selectContainers(whole, opts.only)
    : { manifest: whole, notes: [] };
  for (const n of notes) progress.warn(n);
  for (const c of m.containers) {
    const by = orchestratedBy(c.spec.config.Labels ?? undefined);
    if (by)
      progress.warn(
        `${c.spec.name} was a task of ${by}; it is restored as a plain container, which swarm does not manage`,
      );
  }
  if (opts.name && m.containers.length !== 1)
    throw new UsageError(`--name works on a bundle with one container; this one has ${m.containers.length}`);
  const rw = opts.rewrite?.(m);
  const volumes = rw ? m.volumes.map((v) => rw.volume(v)) : m.volumes;
  if (opts.onConflict === 'fail')
    await checkConflicts(
      engine,
      m.containers.map((c) => wantedName(c.spec.name, opts, rw)),
      volumes,
    );
  // What each container is created from: its spec after the rewrite (drill, --map-*), once.
  const specs = m.containers.map((c) => rw?.spec(c.spec) ?? c.spec);
  // The restore policy: settings that give a container the host, refused before anything is
  // asked of the engine unless --allow allows them or --trust accepted the bundle's signer.
  const found = specs.flatMap((spec) => hostAccess(spec));
  const refused = refusedAccess(found, opts.allow ?? new Set(), !!ctx.trust);
  if (refused.length && !opts.dryRun)
    throw new PolicyError(
      `the bundle asks for host access that a restore does not give unasked: ${refused.map((r) => `${r.container}: ${r.detail}`).join('; ')}`,
      `nothing was changed; if you trust where this bundle comes from, allow it with --allow ${allowFor(refused)}, or restore a bundle signed by a trusted key (--trust)`,
    );
  for (const f of found)
    if (!refused.includes(f))
      progress.info(`${f.container}: ${f.detail} (${ctx.trust ? 'signed by a trusted key' : `--allow ${f.kind}`})`);
  const plan = await makePlan(engine, m, specs, opts, rw);
  plan.hostAccess = found.map((f) => ({ ...f, allowed: !refused.includes(f) }));
  if (opts.onConflict === 'replace') await checkReplaceable(engine, plan);
  const networks = m.networks.map((n) => rw?.network(n) ?? n);
  await preflight(
    engine,
    {
      startable: specs.map((spec, i) => ({ spec, start: plan.containers[i]!.start })),
      volumes,
      networks,
      replacing: new Set(plan.containers.filter((c) => c.replace).map((c) => c.to)),
      binds: m.containers.map((c, i) => {
        const inBundle = new Set(c.binds.map((b) => b.destination));
        return { spec: specs[i]!, inBundle, ...(opts.restoreBinds ? { written: inBundle } : {}) };
      }),
      // What the target is asked with: the empty holder image (a dry run does not import it).
      probeImage: () => (opts.dryRun ? engine.holderImageIfPresent() : engine.ensureHolderImage()),
    },
    progress,
  );
  return { m, rw, specs, plan, networks };
}

/** Credentials for each registry the bundle's images are pulled from: before anything changes (a broken helper fails here). */
async function registryAuths(
  m: Manifest,
  opts: RestoreOptions,
  progress: RunContext['progress'],
): Promise<Map<string, RegistryAuth>> {
  const auths = new Map<string, RegistryAuth>();
  for (const c of m.containers) {
    const host = c.image.registry?.host;
    if (!host || auths.has(host)) continue;
    const a = await (opts.registryAuth ?? ((h: string) => resolveRegistryAuth(h)))(host);
    progress.info(`images of this bundle are pulled from ${host} (${describeAuth(a)})`);
    auths.set(host, a);
  }
  return auths;
}

/** The images restored (by container name) and the data paths that carried what. */
interface Restored {
  images: Map<string, string>;
  dataPaths: DataPaths;
  undo: Undo;
}

/**
 * Every member of the bundle, in bundle order: a volume is created and filled, a bind written
 * (--restore-binds) or restored into a volume (the rewrite), an image loaded. The reader checks
 * each member, and the trailer at the end.
 */
async function restoreMembers(
  reader: BundleReader,
  job: RestoreJob,
  rec: Recreation,
  opts: RestoreOptions,
  ctx: RunContext,
  via: Routing,
  direct?: DirectVolumes | NoDirectVolumes,
): Promise<Omit<Restored, 'undo'>> {
  const { engine } = rec;
  let holderImage: string | undefined;
  const holder = async () => (holderImage ??= await engine.ensureHolderImage());
  const out: Restored = { images: new Map(), dataPaths: { volumes: [], images: [] }, undo: rec.undo };
  const pending: Promise<void>[] = [];
  try {
    for await (const member of reader.members({ decode: true })) {
      checkAborted(ctx.signal);
      const { plan: mp } = member;
      // Counted where it is read, with its size before compression (where the manifest declares
      // it) as the progress line's total; a member not read is left to the reader, which checks it.
      const data = () => counted(member.stream, (n) => ctx.progress.bytes(mp.name, n, mp.rawBytes));
      if (mp.kind === 'volume') {
        const v0 = job.m.volumes.find((x) => x.member === mp.name);
        if (!v0) continue; // not restored (--only); the reader still checks it
        const v = job.rw?.volume(v0) ?? v0;
        const target = job.plan.volumes.find((x) => x.from === v0.name)!;
        const { name, fill } = await rec.volume(
          v0.name,
          v.anonymous ? v : { ...v, name: target.to },
          target.replace ? 'replace' : 'fail',
        );
        ctx.progress.step(`fill volume ${fill} from ${mp.name}`);
        const tree = direct && 'volumes' in direct ? direct.volumes.get(mp.name) : undefined;
        if (tree) {
          // Written by the source's own program, beside the members that follow (an image loads
          // meanwhile); every such fill has ended before the containers are created.
          const slot: VolumePath = { name, path: tree.path };
          out.dataPaths.volumes.push(slot);
          const filling = fillVolumeTree(engine, await holder(), fill, tree, ctx.progress, via, ctx.signal).then(
            (c) => {
              Object.assign(slot, c);
              ctx.progress.via?.(mp.name, c.path);
            },
          );
          filling.catch(() => {}); // awaited below
          pending.push(filling);
          continue;
        }
        let carried = await fillVolume(engine, await holder(), fill, data(), ctx.progress, via);
        // A source that would have written it itself, but not on this target: why, as the fallback.
        if (direct && 'refused' in direct && direct.members.includes(mp.name) && !carried.fallback)
          carried = { ...carried, fallback: { from: direct.path, reason: direct.refused } };
        ctx.progress.via?.(mp.name, carried.path);
        out.dataPaths.volumes.push({ name, ...carried });
      } else if (mp.kind === 'bind') {
        const b = job.m.containers.flatMap((c) => c.binds).find((x) => x.member === mp.name);
        if (b) await restoreBind(b, member.stream, job, rec, opts, { holder, ctx, via, dataPaths: out.dataPaths });
      } else if (mp.kind === 'image') {
        const c = job.m.containers.find((x) => x.image.member === mp.name);
        if (c) await loadMemberImage(engine, c, data(), out, ctx);
      }
    }
    await Promise.all(pending);
  } catch (err) {
    // nothing is rolled back while a fill still writes
    await Promise.allSettled(pending);
    throw err;
  }
  return out;
}

/** A bind's data: into a volume (a drill's rewrite), onto its host path (--restore-binds), or left. */
async function restoreBind(
  b: BindEntry,
  data: Readable,
  job: RestoreJob,
  rec: Recreation,
  opts: RestoreOptions,
  w: { holder: () => Promise<string>; ctx: RunContext; via: Routing; dataPaths: DataPaths },
): Promise<void> {
  const { engine } = rec;
  const { progress } = w.ctx;
  const bv = job.rw?.bindVolume(b);
  if (bv) {
    const name = await createVolume(engine, bv, 'fail', rec.undo, progress);
    progress.step(`fill volume ${name} from ${b.member} (bind data for ${b.hostPath})`);
    w.dataPaths.volumes.push({ name, ...(await fillVolume(engine, await w.holder(), name, data, progress, w.via)) });
    return;
  }
  const hostPath = job.rw?.bindPath?.(b) ?? b.hostPath;
  if (!opts.restoreBinds) {
    progress.info(`bind data for ${hostPath} is in the bundle; not written (use --restore-binds)`);
    return;
  }
  progress.step(`write ${hostPath} from ${b.member}`);
  await fillBind(engine, await w.holder(), hostPath, data);
}

/** An image member into the engine's load endpoint; removed again on rollback unless it was there. */
async function loadMemberImage(
  engine: Engine,
  c: Manifest['containers'][number],
  data: Readable,
  out: Restored,
  ctx: RunContext,
): Promise<void> {
  const existed = await engine.imageExists(c.image.ref);
  ctx.progress.step(`load image ${c.image.ref}`);
  if (!existed) out.undo.note({ kind: 'image', name: c.image.ref }); // a SIGKILL during the load leaves it too
  await loadImage(engine, data, c.image.ref);
  ctx.debug?.(`image ${c.image.ref} into ${engine.facts.endpoint}: engine-load`);
  out.dataPaths.images.push({ container: c.spec.name, ref: c.image.ref, path: 'engine-load' });
  if (!existed)
    out.undo.add(`remove image ${c.image.ref}`, () => engine.removeImage(c.image.ref), {
      kind: 'image',
      name: c.image.ref,
    });
  out.images.set(c.spec.name, c.image.ref);
}

/** The digest the (verified) trailer records for each registry image. */
function registryDigests(reader: BundleReader): (ref: string) => string | undefined {
  return (ref) => registryDigest(reader.trailer, ref);
}

/**
 * Images in a registry: pulled by the digest the (now verified) trailer records, tagged as the
 * manifest's reference. Pulling by digest makes the engine check the content.
 */
async function pullImages(
  engine: Engine,
  m: Manifest,
  digestOf: (ref: string) => string | undefined,
  auths: Map<string, RegistryAuth>,
  out: Restored,
  ctx: RunContext,
): Promise<void> {
  const { progress, signal } = ctx;
  for (const c of m.containers) {
    if (!c.image.registry) continue;
    checkAborted(signal);
    const ref = c.image.ref;
    const digest = digestOf(ref);
    if (!digest) throw new BundleError(`trailer.json has no digest for image ${ref}`, { member: 'trailer.json' });
    const [repo, tag] = splitRef(ref);
    const byDigest = `${repo}@${digest}`;
    const existed = (await engine.imageExists(ref)) || (await engine.imageExists(byDigest));
    progress.step(`pull image ${byDigest}`);
    await abortAware(
      signal,
      engine.pullImage(
        byDigest,
        auths.get(c.image.registry.host) ?? {},
        layerBytes('Downloading', (n) => progress.bytes(`pull ${byDigest}`, n)),
        signal,
      ),
    );
    // Removing the tag also removes the digest reference and the image (nothing else uses it).
    if (!existed)
      out.undo.add(
        `remove image ${ref}`,
        async () => {
          await engine.removeImage(ref);
          await engine.removeImage(byDigest);
        },
        { kind: 'image', name: ref },
      );
    await engine.tagImage(byDigest, repo, tag);
    out.images.set(c.spec.name, ref);
    ctx.debug?.(`image ${ref} into ${engine.facts.endpoint}: registry (${byDigest})`);
    out.dataPaths.images.push({ container: c.spec.name, ref, path: 'registry' });
  }
}

/**
 * --on-conflict replace removes the existing containers and volumes it replaces. Refuse up front,
 * before removing anything, when a volume to replace is also used by a container that is not
 * being replaced: removing it would fail half-way, after the old container was already gone.
 */
async function checkReplaceable(engine: Engine, plan: RestorePlan): Promise<void> {
  const replacing = new Set(plan.containers.filter((c) => c.replace).map((c) => c.to));
  for (const v of plan.volumes.filter((x) => x.replace)) {
    const users = (await engine.listContainers(true))
      .filter((c) => (c.Mounts ?? []).some((m) => m.Name === v.to))
      .map((c) => c.Names[0]!.replace(/^\//, ''));
    const others = users.filter((u) => !replacing.has(u));
    if (others.length)
      throw new ConflictError(
        `volume ${v.to} is also used by ${others.join(', ')}; --on-conflict replace cannot remove it`,
        'nothing was changed; stop and remove those containers first, or use --on-conflict rename',
      );
  }
}
