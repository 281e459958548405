/**
 * Stage 3, ship, engine to engine (migrate): the committed image goes from the source's save
 * endpoint straight into the target's load endpoint, and each volume from the source's archive
 * GET straight into the target's archive PUT. Nothing touches the disk on either side.
 *
 * Layers the target already has are not sent: docker load opens a layer file only when the
 * layer (by chain id) is missing, so the archive is re-streamed without those layer files. In
 * the docker-archive layout of Docker 20.10 a layer's folder is named by a v1 id derived from
 * its chain id (computed here, and checked: a layer whose folder name we cannot predict is sent).
 * Where ferry is root on the source engine's host, the archive is built there from the layer
 * store instead, with only the missing layers in it (host-image.ts): no save of the whole image;
 * from the containerd image store, read from its content store likewise (content-image.ts).
 */
import { createHash } from 'node:crypto';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import type { Engine, EngineFacts, ImageInspect } from '../engine/engine.js';
import type { ContainerSpec } from '../model/spec.js';
import { splitRef } from '../model/refs.js';
import { checkAborted, type Progress } from '../context.js';
import { openHostImageArchive, type HostImageArchive } from './host-image.js';
import { readContentStore } from './content-store.js';
import { openContentImageArchive, type ContentImageArchive } from './content-image.js';
import { toOciArchive, type Descriptor, type OciPlan } from './oci.js';
import { checkedImageArchive, enginePlatform, engineSave, ImageIncompleteError } from './image-complete.js';
import { ENGINE_ONLY, isRefused, refused, withFallback, type Carried, type PathOption, type Routing } from './paths.js';
import { fillVolume, openContainerVolumeReader, volumeSizeHint } from './volumes.js';
import { faultPoint } from '../util/fault.js';

export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const [i, d] of diffIds.entries()) {
    out.push(
      i === 0
        ? d
        : `sha256:${createHash('sha256')
            .update(`${out[i - 1]} ${d}`)
            .digest('hex')}`,
    );
  }
  return out;
}

// The zero container.Config as Docker 20.10 marshals it, part of every non-top layer's v1 id.
const ZERO_CONFIG =
  '{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}';

/** v1 ids (folder names in a 20.10 `docker save`) of every layer but the top one, by index. */
export function v1LayerIds(diffIds: string[]): string[] {
  const chains = chainIds(diffIds);
  const ids: string[] = [];
  let parent: string | undefined;
  for (let i = 0; i < diffIds.length - 1; i++) {
    const json = `{"container_config":${ZERO_CONFIG},"created":"1970-01-01T00:00:00Z","layer_id":"${chains[i]}"${parent ? `,"parent":"${parent}"` : ''}}`;
    const id = createHash('sha256').update(json).digest('hex');
    ids.push(id);
    parent = `sha256:${id}`;
  }
  return ids;
}

/** Every layer chain id the engine's images hold. */
export async function engineChainIds(engine: Engine): Promise<Set<string>> {
  const have = new Set<string>();
  const images = await engine.listImages().catch(() => []);
  for (const img of images.slice(0, 1000)) {
    const info = await engine.inspectImage(img.Id).catch(() => undefined);
    for (const c of chainIds(info?.RootFS?.Layers ?? [])) have.add(c);
  }
  return have;
}

export interface ShipStats {
  bytes: number;
  skippedLayers: number;
  totalLayers: number;
  /** How the image left the source (layer-store, content-store, engine-save, or none: the target had it), and how the target took it. */
  carried: Carried & { target: Carried };
}

/** Count bytes passing through. */
function counter(onBytes: (n: number) => void): Transform {
  let n = 0;
  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _e, cb) {
      n += chunk.length;
      onBytes(n);
      cb(null, chunk);
    },
  });
}

/** Re-stream a `docker save` archive without the layer files in `skip` (v1 folder names or OCI blob digests). */
function withoutLayers(src: Readable, skip: Set<string>, onSkip?: (name: string) => void): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  (async () => {
    const feeding = pipeline(src, extract);
    const sending = pipeline(pack, out);
    // Observed below; when the loop fails first, their teardown errors must not go unhandled.
    feeding.catch(() => {});
    sending.catch(() => {});
    for await (const entry of extract) {
      const h = entry.header;
      // A layer file: `<v1 id>/layer.tar` (Docker's own store), or `blobs/sha256/<digest>` in the
      // OCI layout Docker 25+ saves (an uncompressed layer's digest is its diff ID).
      const m = /^(?:([0-9a-f]{64})\/layer\.tar|blobs\/sha256\/([0-9a-f]{64}))$/.exec(h.name);
      if (m && skip.has((m[1] ?? m[2])!)) {
        onSkip?.((m[1] ?? m[2])!);
        entry.resume();
        await new Promise<void>((r) => entry.on('end', () => r()));
        continue;
      }
      await new Promise<void>((resolve, reject) => {
        const w = pack.entry({ ...h, size: h.size }, (err) => (err ? reject(err) : resolve()));
        pipeline(entry, w).catch(reject);
      });
    }
    pack.finalize();
    await feeding;
    await sending;
  })().catch((err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))));
  return out;
}

/** Whether an engine's `docker save` is an OCI layout (Docker 25+, and the containerd image store). Pure. */
export function savesOciLayout(facts: Pick<EngineFacts, 'containerdStore' | 'podman' | 'serverVersion'>): boolean {
  return facts.containerdStore || (!facts.podman && Number(/^(\d+)\./.exec(facts.serverVersion)?.[1] ?? 0) >= 25);
}

/**
 * What the target takes without: the layers it already has, and how the archive says so.
 *  - Docker with its own image store: a docker-archive without the layer files of chains it has.
 *  - Docker with the containerd image store: an OCI archive without the blobs its content store
 *    holds (oci.ts): from an OCI source, the blobs of the same digest are left out; from a
 *    docker-archive, the archive is rewritten (`oci`) naming the target's own blob for each layer
 *    it holds. Only where that store is read on the target's host; else the whole image.
 *  - Anything else (Podman): the whole image.
 */
export interface TargetPlan {
  /** Indexes of the layers left out. */
  omit: Set<number>;
  /** Folder names or blob digests (hex) a docker-archive or OCI save is re-streamed without. */
  skip: Set<string>;
  /** A docker-archive is rewritten as this OCI layout (containerd store target). */
  oci?: OciPlan;
  /** Of `skip`, the blobs that are layers (hex): those left out of an OCI save are counted as layers skipped. */
  layerBlobs?: Set<string>;
  /** The target's side, as reported. */
  written: Carried;
}

/** The whole image, to a target that takes nothing less (or where what it has is not known). */
function whole(written: Carried): TargetPlan {
  return { omit: new Set(), skip: new Set(), written };
}

async function planTarget(
  source: Engine,
  target: Engine,
  img: ImageInspect,
  ref: string,
  progress: Progress,
  via: Routing,
  targetVia: Routing | undefined,
  targetChains?: Promise<Set<string>>,
): Promise<TargetPlan> {
  const diffIds = img.RootFS?.Layers ?? [];
  const chains = chainIds(diffIds);
  const v1 = v1LayerIds(diffIds);
  if (target.quirks.loadsPartialImages) {
    const have = await (targetChains ?? engineChainIds(target));
    const plan = whole({ path: 'engine-load' });
    for (let i = 0; i < diffIds.length; i++)
      if (have.has(chains[i]!)) {
        plan.omit.add(i);
        if (i < v1.length) plan.skip.add(v1[i]!);
      }
    // A blob (named by digest in an OCI save) is left out only when every layer it holds is.
    const omitted = (d: string) => diffIds.every((x, i) => x !== d || plan.omit.has(i));
    for (const i of plan.omit) if (omitted(diffIds[i]!)) plan.skip.add(diffIds[i]!.slice(7));
    // From a containerd store, the save names a compressed layer by its blob's digest: which diff
    // ID that blob holds is in the image's manifest, read in the source's content store.
    if (plan.omit.size && source.facts.containerdStore) {
      const view = await readContentStore(source, diffIds, via.access, { images: [img.Id] });
      if (isRefused(view)) via.debug?.(`image ${ref}: compressed layers not mapped to diff IDs: ${view.refused}`);
      else for (const [hex, d] of view.named) if (omitted(d)) plan.skip.add(hex);
    }
    return plan;
  }
  if (!target.facts.containerdStore) return whole({ path: 'engine-load' });
  const view = await readContentStore(target, diffIds, targetVia?.access ?? ENGINE_ONLY);
  if (isRefused(view)) {
    targetVia?.debug?.(`image ${ref} to ${target.facts.endpoint}: not content-store: ${view.refused}`);
    return whole({ path: 'engine-load', fallback: { from: 'content-store', reason: view.refused } });
  }
  const reuse = new Map<number, Descriptor>();
  for (const [i, d] of diffIds.entries()) {
    const desc = view.layers.get(d);
    if (desc) reuse.set(i, desc);
  }
  if (!reuse.size) {
    const reason = "the target's content store holds none of the image's layers";
    targetVia?.debug?.(`image ${ref} to ${target.facts.endpoint}: not content-store: ${reason}`);
    return whole({ path: 'engine-load', fallback: { from: 'content-store', reason } });
  }
  progress.info(
    `image ${ref}: ${reuse.size} of ${diffIds.length} layers already in the content store of ${target.facts.endpoint} (${view.dir} on ${view.where}); not sending them`,
  );
  targetVia?.debug?.(
    `image ${ref} to ${target.facts.endpoint}: content-store (${reuse.size}/${diffIds.length} layers there)`,
  );
  const layerDirs = new Map<string, number>();
  for (const [i, c] of chains.entries()) layerDirs.set(c.slice(7), i);
  for (const [i, id] of v1.entries()) layerDirs.set(id, i);
  // An OCI save names blobs by digest: the layer blobs the target's images hold under the same
  // digest are left out as they stream, and counted there (the save's may be compressed otherwise).
  if (savesOciLayout(source.facts)) {
    const held = new Set([...view.named.keys()].filter((hex) => view.blobs.has(hex)));
    return { omit: new Set(), skip: held, layerBlobs: held, written: { path: 'content-store' } };
  }
  return {
    omit: new Set(reuse.keys()),
    skip: new Set(),
    oci: { ref, configDigest: img.Id, diffIds, reuse, layerDirs },
    written: { path: 'content-store' },
  };
}

/** Save `ref` on the source and load it on the target, skipping layers the target has. */
export async function shipImage(
  source: Engine,
  target: Engine,
  ref: string,
  progress: Progress,
  via: Routing,
  targetVia?: Routing,
  signal?: AbortSignal,
  /**
   * The target's layers (engineChainIds), asked earlier by the caller: a cutover asks while the
   * source stops and commits, rather than after. Used where the target loads partial images.
   */
  targetChains?: Promise<Set<string>>,
): Promise<ShipStats> {
  const what = `image ${ref} from ${source.facts.endpoint} to ${target.facts.endpoint}`;
  const img = await source.inspectImage(ref);
  if (await target.imageExists(img.Id)) {
    progress.info(`target already has image ${img.Id.slice(7, 19)}; not sending it`);
    via.debug?.(`${what}: none (the target has image ${img.Id.slice(7, 19)})`);
    await target.tagImage(img.Id, ...splitRef(ref));
    return {
      bytes: 0,
      skippedLayers: img.RootFS?.Layers?.length ?? 0,
      totalLayers: img.RootFS?.Layers?.length ?? 0,
      carried: { path: 'none', target: { path: 'none' } },
    };
  }
  const diffIds = img.RootFS?.Layers ?? [];
  const chains = chainIds(diffIds);
  const v1 = v1LayerIds(diffIds);
  const planned = await planTarget(source, target, img, ref, progress, via, targetVia, targetChains);
  const load = async (body: Readable, close: () => void, total?: number): Promise<number> => {
    let bytes = 0;
    const counted = counter((n) => {
      bytes = n;
      progress.bytes(`image ${ref}`, n, total);
    });
    // Told to stop: the image stops too (the rollback waits for it, then removes it).
    const stream = body.pipe(counted);
    // An archive found incomplete as it streams: that is the failure, not the load it cut short.
    let incomplete: ImageIncompleteError | undefined;
    body.on('error', (err) => {
      if (err instanceof ImageIncompleteError) incomplete = err;
      counted.destroy(err);
    });
    counted.on('error', () => {}); // the load reports it, even when it fails before the load began
    // Told to stop: the load stops too, rather than the rollback waiting for the whole image.
    const stop = () => counted.destroy(signal!.reason as Error);
    try {
      await faultPoint('image-load');
      if (signal) checkAborted(signal);
      signal?.addEventListener('abort', stop, { once: true });
      await target.loadImage(stream);
    } catch (err) {
      // Close the source's side too: a response nobody reads keeps the run alive.
      close();
      throw incomplete ?? err;
    } finally {
      signal?.removeEventListener('abort', stop);
    }
    if (!(await target.imageExists(ref))) throw new Error(`the target did not load ${ref}`);
    return bytes;
  };
  const send = async (plan: TargetPlan) => {
    const missing = diffIds.map((_, i) => i).filter((i) => !plan.omit.has(i));
    const oci = plan.oci;
    // What the target gets is checked whole as it streams (image-complete.ts): every file the
    // image needs, but for the layers left out because the target holds them.
    const left = new Set(plan.skip);
    for (const i of plan.omit) {
      left.add(chains[i]!.slice(7));
      left.add(diffIds[i]!.slice(7));
      if (i < v1.length) left.add(v1[i]!);
    }
    for (const d of oci?.reuse.values() ?? []) left.add(d.digest.replace(/^sha256:/, ''));
    const platform = enginePlatform(source);
    const checked = (body: Readable, by: string) =>
      checkedImageArchive(body, `${what} (${by})`, { platform, leftOut: left });
    const rewrite = (body: Readable, by: string) => checked(oci ? toOciArchive(body, oci) : body, by);
    skippedBlobs = 0;
    // Only the missing layers, from the source host's layer store: no save of the whole image;
    // else (or should the layer store fail it) the engine's save.
    type Opened = { body: Readable; close: () => void; host?: HostImageArchive | ContentImageArchive };
    let where = source.facts.endpoint;
    const opened = (a: HostImageArchive | ContentImageArchive, body: Readable): Opened => {
      where = a.where;
      return {
        body,
        close: () => {
          a.stream.destroy();
          body.destroy();
        },
        host: a,
      };
    };
    // The source host's store of the engine's kind: Docker's overlay2 layer store, or containerd's
    // content store (its blobs as they are, only those the target lacks).
    const fromHost: PathOption<Opened> = source.facts.containerdStore
      ? {
          path: 'content-store',
          open: async () => {
            if (oci) return refused('the target takes a rewritten docker-archive');
            const a = await openContentImageArchive(
              source,
              img,
              ref,
              (i, hex) => {
                // Named in its manifests but left out: the completeness check counts it as there.
                const out = plan.omit.has(i) || plan.skip.has(hex);
                if (out) left.add(hex);
                return out;
              },
              progress,
              via.access,
            );
            if (isRefused(a)) return a;
            if (plan.layerBlobs) skippedBlobs = a.leftOut;
            return opened(a, checked(a.stream, 'the content store'));
          },
        }
      : {
          path: 'layer-store',
          open: async () => {
            const a = await openHostImageArchive(source, img, ref, { chains, missing }, progress, via.access);
            if (isRefused(a)) return a;
            return opened(a, rewrite(a.stream, 'the layer store'));
          },
        };
    return withFallback<Opened, number>(
      what,
      fromHost,
      {
        path: 'engine-save',
        open: async () => {
          skippedBlobs = 0;
          const saved = await engineSave(() => source.saveImages([ref], { platform }), what, platform);
          // The engine's save holds every layer: those the target has (by folder name or blob digest) are dropped.
          const body = rewrite(
            plan.skip.size
              ? withoutLayers(saved, plan.skip, (hex) => {
                  if (plan.layerBlobs?.has(hex)) skippedBlobs++;
                })
              : saved,
            "the engine's save",
          );
          return {
            body,
            close: () => {
              saved.destroy();
              body.destroy();
            },
          };
        },
      },
      // The whole image is about its inspected size; one without some layers, unknown.
      async (o) => load(o.body, o.close, !plan.omit.size && !plan.skip.size && img.Size > 0 ? img.Size : undefined),
      (err, o) =>
        o.host
          ? (o.host.mismatch()?.message ?? (err instanceof ImageIncompleteError ? err.message : undefined))
          : undefined,
      {
        debug: via.debug,
        note: (why) => progress.warn(`image ${ref} on ${where}: ${why}; sending it with the engine's save instead`),
      },
    );
  };
  let skippedBlobs = 0;
  let plan = planned;
  let sent: Awaited<ReturnType<typeof send>>;
  try {
    sent = await send(plan);
  } catch (err) {
    // A target that refuses the archive without the layers it held a moment ago (removed since:
    // another run's rollback, a prune; in its content store or its layer store) gets the whole
    // image: never a failed load for what was left out.
    // (An archive the source gave incomplete is no better whole.)
    if (!leftOut(plan) || err instanceof ImageIncompleteError || isAbort(err) || signal?.aborted) throw err;
    const reason = `the load without the layers there failed: ${err instanceof Error ? err.message : String(err)}`;
    progress.warn(`image ${ref} on ${target.facts.endpoint}: ${reason}; sending the whole image`);
    targetVia?.debug?.(`${what}: fallback from ${plan.written.path} to engine-load: ${reason}`);
    plan = whole({ path: 'engine-load', fallback: { from: plan.written.path, reason } });
    sent = await send(plan);
  }
  return {
    bytes: sent.result,
    skippedLayers: plan.layerBlobs ? skippedBlobs : plan.omit.size,
    totalLayers: diffIds.length,
    carried: { ...sent.carried, target: plan.written },
  };
}

/** Whether a plan sends less than the whole image (layers the target held when it was read). */
function leftOut(plan: TargetPlan): boolean {
  return plan.omit.size > 0 || plan.skip.size > 0;
}

function isAbort(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || (err as { code?: string }).code === 'ABORT_ERR');
}

/** Copy one volume of a (quiesced) source container into a (created, empty) target volume. */
export async function shipVolume(
  source: Engine,
  sourceSpec: ContainerSpec,
  volume: string,
  target: Engine,
  targetImage: string,
  targetVolume: string,
  progress: Progress,
  via: { source: Routing; target: Routing },
  exclude: readonly string[] = [],
): Promise<{ bytes: number; read: Carried; written: Carried }> {
  // About how many bytes the volume's archive gives (the progress line's total; never awaited by the copy).
  let total: number | undefined;
  void volumeSizeHint(source, sourceSpec, volume, via.source).then((t) => (total = t));
  const r = await openContainerVolumeReader(source, sourceSpec, volume, progress, via.source, exclude);
  let bytes = 0;
  let written: Carried;
  try {
    const counted = counter((n) => {
      bytes = n;
      progress.bytes(`volume ${volume}`, n, total);
    });
    r.stream.on('error', (err) => counted.destroy(err));
    // The fill reports it (it reads a destroyed stream's error); a reader that fails before the
    // fill listens (tar killed by the Ctrl-C of the terminal's process group) must not crash the run.
    counted.on('error', () => {});
    written = await fillVolume(target, targetImage, targetVolume, r.stream.pipe(counted), progress, via.target);
  } finally {
    // A half-read archive GET holds the helper's lock on the source engine: close it before the
    // helper is removed, or the removal waits forever.
    r.stream.destroy();
    await r.done();
  }
  return { bytes, read: r.carried, written };
}
