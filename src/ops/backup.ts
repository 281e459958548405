/**
 * ferry backup: capture -> save -> ship, for one or more containers, into one bundle.
 *
 *   for each container:  quiesce -> commit -> volumes (and binds) into the bundle -> resume,
 *                        and meanwhile save the committed image into the bundle
 *   -> finish the bundle once every container is back -> drop the local snapshots
 *
 * Volumes are read while the container is still paused (or stopped), so data and layer belong to
 * the same instant. The container is resumed in a finally block, whatever fails (after a failure,
 * before anything else; otherwise while its image is written). With `together`,
 * every container of the bundle is quiesced first (dependents first) and all are resumed once the
 * last one's volumes are read (in dependency order): one instant for a whole stack.
 *
 * --precopy (ops/steps/stage.ts, docs/precopy.md): each volume of a running container is first
 * copied into a staging volume on the same engine while it runs; the freeze then takes only what
 * changed since into that copy, and the commit; the container runs again, and its members are
 * written from the staging copies, which hold the volumes as they were at the freeze.
 *
 * Registry mode (opts.registry): the committed image is pushed after the container is resumed
 * instead of being saved; the bundle has no image member and the pushed digest is in the trailer.
 */
import { type Engine } from '../engine/engine.js';
import type { Signer } from '../bundle/sshsig.js';
import { BundleWriter } from '../bundle/writer.js';
import type { Codec } from '../bundle/codec.js';
import type { ImageFacts, Manifest, Trailer } from '../bundle/manifest.js';
import { composeProject, secretLikeEnvNames } from '../model/spec.js';
import { splitRef } from '../model/refs.js';
import { describeAuth, type RegistryAuth } from '../engine/auth.js';
import { layerBytes } from '../engine/progress.js';
import type { Transport } from '../store/transport.js';
import { orchestratedBy, quiesce, utcStamp, type Captured, type Consistency } from './steps/capture.js';
import {
  QuiescedSet,
  captureSet,
  commitSnapshot,
  dropSnapshots,
  planBundle,
  volumesToRead,
  warnUncopiedBinds,
} from './steps/capture-set.js';
import { containerHooks, runHook } from './steps/hooks.js';
import { abortAware, checkAborted, type RunContext } from '../context.js';
import { abortable } from '../util/abortable.js';
import { saveImage, type SavedImage } from '../data/save.js';
import { openBindReader, openContainerVolumeReader, openStagedVolumeReader, volumeSizeHint } from '../data/volumes.js';
import { finishVolume, precopyVolume, type PrecopyArgs, type PrecopyReport, type Precopied } from '../data/precopy.js';
import { containerStageRefusal, StagingVolumes } from './steps/stage.js';
import type { Listing } from '../data/delta.js';
import { recoverDeadRuns } from './steps/recover.js';
import { UsageError } from '../errors.js';
import { isRefused, routing, type DataPaths } from '../data/paths.js';
import { faultPoint } from '../util/fault.js';

export interface BackupOptions {
  containers: string[];
  /** --consistency; absent: each container's `ferry.consistency` label, else pause. */
  consistency?: Consistency;
  /** Consistency stop: seconds to wait for a clean stop before the engine kills (absent: the `ferry.stop-timeout` label, else the container's own). */
  stopTimeout?: number;
  /** --wait: seconds to wait for another ferry run that holds a container (absent: fail at once). */
  wait?: number;
  codec: Codec;
  includeBinds: boolean;
  /**
   * Registry mode (`--image-mode push`): push each committed image to `<host>/<prefix>/<name>:<stamp>`
   * instead of saving it into the bundle. `auth` is always sent (possibly `{}`).
   */
  registry?: { host: string; prefix: string; auth: RegistryAuth };
  /**
   * Commands run inside each container (`sh -c`): `pre` before the snapshot (e.g. flush or dump a
   * database; a failure aborts that container's backup), `post` after it is resumed (always, once
   * `pre` ran; a failure is a warning). Default: the container's `ferry.pre-exec` / `ferry.post-exec` labels.
   */
  hooks?: { pre?: string; post?: string };
  /**
   * Quiesce all the containers at once (pre-exec hooks first, then each is paused or stopped,
   * dependents first) and resume them together once the last volume is read: data of the whole
   * set from one instant, at the price of every container staying paused or stopped that long.
   */
  together?: boolean;
  /** Sign the bundle (--sign-key): SHA256SUMS.sig, docs/format.md. */
  signer?: Signer;
  /**
   * --exclude-path: patterns (data/excludes.ts) left out of every volume, besides each
   * container's `ferry.exclude-paths` label; recorded per volume in the manifest.
   */
  excludePaths?: string[];
  /**
   * --precopy: copy each volume of a running container into a staging volume on the same engine
   * while it runs, freeze it only for what changed since, and write the member from that copy
   * (costs the volume's size in free space on the engine's host, and one more local copy).
   */
  precopy?: boolean;
}

export interface BackupResult {
  location: string;
  containers: string[];
  volumes: string[];
  bytes: number;
  /** What the bundle's manifest says (its members' sizes are in the trailer). */
  manifest: Manifest;
  trailer: Trailer;
  durationMs: number;
  /** The longest time a container was frozen (paused or stopped) by this run, until it ran again (with --precopy: the last delta and the commit only). */
  pausedMs: number;
  /** Registry mode: what was pushed. */
  pushed?: { container: string; ref: string; digest: string }[];
  /** Which data path read each volume and carried each image (data/paths.ts). */
  dataPaths: DataPaths;
}

/** The image member is kept loadable by `docker load` on any engine: zstd is not (Docker 20.10). */
export function imageCodec(c: Codec): Codec {
  return c === 'none' ? 'none' : 'gzip';
}

/**
 * `ferry-<name>-<UTC stamp>.tar`: the container's name; for several, the Compose project they all
 * belong to (`project`), else the first one's name and how many more. Pure.
 */
export function bundleFileName(containers: string[], when: Date, project?: string): string {
  const base =
    containers.length === 1 ? containers[0]! : (project ?? `${containers[0]}-and-${containers.length - 1}-more`);
  return `ferry-${base.replace(/[^A-Za-z0-9_.-]/g, '_')}-${utcStamp(when)}.tar`;
}

export async function backup(
  engine: Engine,
  transport: Transport,
  opts: BackupOptions,
  ctx: RunContext,
): Promise<BackupResult> {
  const started = Date.now();
  const when = new Date();
  const { progress, signal } = ctx;
  if (opts.containers.length === 0)
    throw new UsageError('no containers to back up', 'name one or more containers, or use --all');

  for (const d of engine.differences()) progress.info(d);
  // What the engine's host offers the data paths: asked now, in the background.
  const via = routing(ctx, engine);
  await recoverDeadRuns(engine, progress, undefined, undefined, undefined, via);
  // 1. capture every container's configuration before writing anything.
  const set = await captureSet(engine, opts.containers, opts, progress);
  const { captured, names, how } = set;
  for (const c of captured) {
    const by = orchestratedBy(c.labels);
    if (by && how.get(c)!.mode === 'stop')
      progress.warn(
        `${c.spec.name} is a task of ${by}: when --consistency stop stops it, swarm starts a replacement; use --consistency pause (the default), or scale the service to 0 first`,
      );
  }
  const registry = opts.registry;
  if (registry) {
    progress.info(`images go to the registry ${registry.host} (${describeAuth(registry.auth)}), not into the bundle`);
    for (const c of captured) {
      const secrets = secretLikeEnvNames(c.spec.config.Env ?? undefined);
      if (secrets.length)
        progress.warn(
          `${c.spec.name}: ${secrets.join(', ')} ${secrets.length === 1 ? 'looks like a secret' : 'look like secrets'}: docker commit bakes environment values into the image config, ` +
            `and that image is pushed to ${registry.host}: anyone who can pull it can read them`,
        );
    }
  }

  // 2. plan the bundle: members in the order they will be written.
  if (!opts.includeBinds) warnUncopiedBinds(captured, progress, 'use --include-binds to copy them');
  const manifest = planBundle(engine, set, when, {
    codec: opts.codec,
    imageCodec: imageCodec(opts.codec),
    includeBinds: opts.includeBinds,
    ...(registry ? { registry } : {}),
    ...(opts.excludePaths?.length ? { excludePaths: opts.excludePaths } : {}),
  });
  const { containers, volumes } = manifest;

  // 3. write: manifest, then per container its volumes (while quiesced) and its image.
  const projects = new Set(captured.map((c) => composeProject(c.labels)));
  const sink = await transport.createBundle(
    bundleFileName(names, when, projects.size === 1 ? [...projects][0] : undefined),
  );
  const writer = new BundleWriter(sink, manifest, { signer: opts.signer });
  const snapshots: string[] = [];
  const pendingSaves: Promise<SavedImage>[] = [];
  const pushed: NonNullable<BackupResult['pushed']> = [];
  const helpersGone: Promise<void>[] = [];
  const dataPaths: DataPaths = { volumes: [], images: [] };
  /** Containers being put back (and their post-exec hooks) while their images are written. */
  const resuming: Promise<void>[] = [];
  // --together: the whole set quiesced at once, put back once the last one's volumes are read.
  const together = !!opts.together && captured.length > 1;
  let pausedMs = 0;
  /** Quiesce, and the resume that reports how long it was frozen (from the moment it was asked). */
  const freeze = async (
    c: Captured,
    mode: Consistency,
    stopTimeout?: number,
    precopied = false,
  ): Promise<() => Promise<void>> => {
    const at = Date.now();
    const resume = await quiesce(engine, c.spec, mode, progress, { stopTimeout, waitSeconds: opts.wait, signal });
    if (mode === 'none' || !c.spec.state.running || c.spec.state.paused) return resume;
    const how = mode === 'stop' ? 'stopped' : 'paused';
    progress.info(
      `${c.spec.name} is ${how} until ${precopied ? 'what changed since the pre-copy and its snapshot are taken' : 'its volumes are read'}`,
    );
    progress.frozen?.(c.spec.name, how);
    return async () => {
      await resume();
      const ms = Date.now() - at;
      pausedMs = Math.max(pausedMs, ms);
      progress.frozen?.(c.spec.name, how, ms);
      progress.info(`${c.spec.name} was ${mode === 'stop' ? 'stopped' : 'paused'} ${(ms / 1000).toFixed(1)} s`);
    };
  };
  // --precopy: the staging copies on this engine, removed on every path (finally below).
  const staging = new StagingVolumes(engine, progress);
  let holderImage: string | undefined;
  /** Pre-copy `toRead` of `c` into staging volumes while it runs; the volumes done, and why not for the others. */
  const precopyAll = async (c: Captured, toRead: { name: string; excludePaths?: string[] }[]) => {
    const done = new Map<string, { args: PrecopyArgs; pre: Precopied }>();
    const refusedFor = new Map<string, string>();
    const first = containerStageRefusal({
      mode: how.get(c)!.mode,
      running: c.spec.state.running,
      paused: c.spec.state.paused,
      together,
    });
    for (const v of toRead) {
      checkAborted(signal);
      let no = first ?? (await staging.refusal(v.name, via));
      if (!no) {
        holderImage ??= await engine.ensureHolderImage();
        const fill = await staging.create(v.name);
        const args: PrecopyArgs = {
          source: engine,
          spec: c.spec,
          volume: v.name,
          exclude: v.excludePaths,
          target: engine,
          holder: holderImage,
          fill,
          progress,
          via: { source: via, target: via },
          signal,
          room: staging.room(fill, via),
        };
        const pre = await precopyVolume(args);
        if (isRefused(pre)) {
          no = pre.refused;
          await staging.remove(v.name);
        } else done.set(v.name, { args, pre });
      }
      if (no) {
        refusedFor.set(v.name, no);
        progress.info(`volume ${v.name}: no pre-copy (${no}); read whole while ${c.spec.name} is frozen`);
      }
    }
    return { done, refusedFor };
  };
  const all = new QuiescedSet(engine, set, ctx, {
    wait: opts.wait,
    hooks: (c) => containerHooks(c.labels, opts.hooks),
  });
  try {
    await writer.begin();
    if (together) await all.quiesce();
    const read = new Set<string>();
    for (const [i, c] of captured.entries()) {
      const entry = containers[i]!;
      checkAborted(signal);
      const hooks = together ? {} : containerHooks(c.labels, opts.hooks);
      const toRead = volumesToRead(entry, volumes, read);
      // --precopy: the volumes go into their staging copies while the container still runs.
      const pre = opts.precopy ? await precopyAll(c, toRead) : undefined;
      if (hooks.pre) await runHook(engine, c.spec, 'pre-exec', hooks.pre, ctx);
      let resume: () => Promise<void>;
      if (together) resume = i === captured.length - 1 ? () => all.release() : async () => {};
      else
        try {
          resume = await freeze(c, how.get(c)!.mode, how.get(c)!.stopTimeout, !!pre?.done.size);
        } catch (err) {
          if (hooks.post)
            await runHook(engine, c.spec, 'post-exec', hooks.post, ctx).catch((e) =>
              progress.warn((e as Error).message),
            );
          throw err;
        }
      // The image's archive is opened as soon as the image is committed: from the layer store
      // where ferry can read it and write the member again should it fail half-way (save.ts),
      // else the engine's save, which then exports the image while ferry reads the volumes
      // (Docker 20.10 stages it before the first byte). The stream is only read afterwards, so
      // nothing piles up in ferry's memory.
      let saving: Promise<SavedImage> | undefined;
      let facts: ImageFacts | undefined;
      let dataRead = false;
      // Put back once (its post-exec hook after): early, once only staged copies are left to write.
      let back: Promise<void> | undefined;
      const release = () =>
        (back ??= (async () => {
          await resume();
          if (hooks.post)
            await runHook(engine, c.spec, 'post-exec', hooks.post, ctx).catch((e) =>
              progress.warn((e as Error).message),
            );
        })());
      try {
        facts = await commitSnapshot(engine, c, entry, how.get(c)!.mode, progress, snapshots);
        // (removed at the end, after the push: tag and digest reference go with it)
        if (!registry) {
          writer.recordImage(facts);
          saving = saveImage(engine, entry.image.ref, progress, { rewritable: writer.canRewrite }, via);
          saving.catch(() => {});
          pendingSaves.push(saving);
        }
        // --precopy: what changed since the last pass goes into each staging copy, while frozen.
        const reports = new Map<string, PrecopyReport>();
        for (const [name, p] of pre?.done ?? []) {
          checkAborted(signal);
          reports.set(name, (await finishVolume(p.args, p.pre)).report);
        }
        // Volume data (each shared volume once) and bind data, read while the container is quiesced
        // (a staged volume: from its staging copy, which may be once the container runs again).
        const sources: {
          what: string;
          member: string;
          volume?: string;
          staged?: boolean;
          open: () => ReturnType<typeof openContainerVolumeReader>;
          /** About how many bytes it gives: the progress line's total (never awaited by the read). */
          size?: () => Promise<number | undefined>;
        }[] = [];
        for (const v of toRead) {
          const copy = staging.of(v.name);
          const p = pre?.done.get(v.name);
          sources.push(
            copy && p
              ? {
                  what: `volume ${v.name} (from its staging copy ${copy})`,
                  member: v.member,
                  volume: v.name,
                  staged: true,
                  open: () => openStagedVolumeReader(engine, holderImage!, copy, progress, via, v.excludePaths),
                  size: async () => tarSizeOf(p.pre.base),
                }
              : {
                  what: `volume ${v.name}`,
                  member: v.member,
                  volume: v.name,
                  open: () => openContainerVolumeReader(engine, c.spec, v.name, progress, via, v.excludePaths),
                  size: () => volumeSizeHint(engine, c.spec, v.name, via, v.excludePaths),
                },
          );
        }
        for (const b of entry.binds)
          sources.push({
            what: `bind ${b.hostPath}`,
            member: b.member,
            open: () => openBindReader(engine, c.spec.baseImage.id, b.hostPath, ctx.debug),
          });
        for (const [k, src] of sources.entries()) {
          checkAborted(signal);
          // Only staging copies left: the container runs again while they are written.
          if (!together && !back && sources.slice(k).every((x) => x.staged)) {
            const b = release();
            b.catch(() => {});
            resuming.push(b);
          }
          progress.step(`${src.what} -> ${src.member}`);
          let total: number | undefined;
          void src.size?.().then((t) => (total = t));
          const r = await src.open();
          if (src.volume) {
            const report = reports.get(src.volume);
            const why = pre?.refusedFor.get(src.volume);
            dataPaths.volumes.push({
              name: src.volume,
              ...r.carried,
              ...(report ? { precopy: report } : why ? { precopy: { refused: why } } : {}),
            });
          }
          progress.via?.(src.member, r.carried.path);
          try {
            await writer.addMember(src.member, abortable(r.stream, signal), opts.codec, (_, n) =>
              progress.bytes(src.member, n, total),
            );
          } finally {
            r.stream.destroy(); // a half-read archive GET would block the helper's removal
            // The helper goes while the next member is written (it only held the mount); a
            // staging copy goes once its member is written and its holder is gone.
            const volume = src.volume;
            const removing = src.staged
              ? r.done().then(() => staging.remove(volume!).catch(() => {})) // else removeAll() says why
              : r.done();
            removing.catch(() => {});
            helpersGone.push(removing);
          }
        }
        dataRead = true;
      } catch (err) {
        saving?.then((s) => s.stream.destroy()).catch(() => {});
        throw err;
      } finally {
        const b = release();
        // Its data read, the container goes back while its image is written (an unpause waits on
        // the engine's disk writes: up to a second here while the bundle streams); the bundle is
        // finished only once it is back. After a failure, it is back before anything else.
        if (dataRead) {
          b.catch(() => {});
          resuming.push(b);
        } else await b;
      }
      checkAborted(signal);
      if (registry) {
        // After resume: the push never lengthens the pause. The digest is known only now, so it
        // goes into the trailer (the manifest is already written).
        progress.step(`push ${entry.image.ref}`);
        const [repo, tag] = splitRef(entry.image.ref);
        const digest = await abortAware(
          signal,
          engine.pushImage(
            repo,
            tag,
            registry.auth,
            layerBytes('Pushing', (n) => progress.bytes(`push ${entry.image.ref}`, n)),
            signal,
          ),
        );
        progress.info(`pushed ${entry.image.ref} (${digest})`);
        writer.recordImage({ ...facts, digest });
        pushed.push({ container: c.spec.name, ref: entry.image.ref, digest });
        ctx.debug?.(`image ${entry.image.ref} from ${engine.facts.endpoint}: registry (pushed to ${registry.host})`);
        dataPaths.images.push({ container: c.spec.name, ref: entry.image.ref, path: 'registry' });
        continue;
      }
      const member = entry.image.member!;
      progress.step(`image ${entry.image.ref} -> ${member}`);
      // The image's size (its layers, uncompressed) is about what its archive holds.
      const imageTotal = await engine
        .inspectImage(entry.image.ref)
        .then((i) => (i.Size > 0 ? i.Size : undefined))
        .catch(() => undefined);
      const img = await saving!;
      await faultPoint('image-save');
      const again = img.fallback && {
        when: img.fallback.when,
        open: async (err: unknown) => abortable(await img.fallback!.open(err), signal),
      };
      await writer.addMember(
        member,
        abortable(img.stream, signal),
        imageCodec(opts.codec),
        (_, n) => progress.bytes(member, n, imageTotal),
        again,
      );
      dataPaths.images.push({ container: c.spec.name, ref: entry.image.ref, ...img.carried });
      progress.via?.(member, img.carried.path);
    }
    checkAborted(signal);
    await Promise.all(resuming);
    await Promise.all(helpersGone);
    await faultPoint('finish');
    // Told to stop while the containers went back: the bundle is not finished (a finished one
    // would stand, under its final name, behind an exit status that says interrupted).
    checkAborted(signal);
    progress.step('finish bundle');
    const trailer = await writer.finish();
    const bytes = trailer.members.reduce((a, m) => a + m.bytes, 0);
    return {
      location: writer.location,
      containers: names,
      volumes: volumes.map((v) => v.name),
      bytes,
      manifest,
      trailer,
      durationMs: Date.now() - started,
      pausedMs: Math.max(pausedMs, all.pausedMs),
      ...(registry ? { pushed } : {}),
      dataPaths,
    };
  } catch (err) {
    await Promise.allSettled(resuming);
    await all.release().catch((e) => progress.warn(`could not put every container back: ${(e as Error).message}`));
    for (const p of pendingSaves) p.then((st) => st.stream.destroy()).catch(() => {});
    await writer.abort();
    throw err;
  } finally {
    await Promise.allSettled(helpersGone);
    await staging.removeAll();
    await dropSnapshots(engine, snapshots);
  }
}

/** About how big a tar of what `listing` holds is (a header per entry, files in 512-byte blocks): a progress total. */
function tarSizeOf(listing: Listing): number {
  let n = 1024;
  for (const e of listing.entries.values()) n += 512 + (e.type === 'f' ? Math.ceil(e.size / 512) * 512 : 0);
  return n;
}
