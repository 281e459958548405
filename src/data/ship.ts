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
 * store instead, with only the missing layers in it (host-image.ts): no save of the whole image.
 */
import { createHash } from 'node:crypto';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import type { Engine } from '../engine/engine.js';
import type { ContainerSpec } from '../model/spec.js';
import type { Progress } from '../context.js';
import { openHostImageArchive, type HostImageArchive } from './host-image.js';
import { isRefused, withFallback, type Carried, type Routing } from './paths.js';
import { fillVolume, openContainerVolumeReader } from './volumes.js';

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
  /** How the image left the source: layer-store, engine-save, or none (the target had it). */
  carried: Carried;
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
function withoutLayers(src: Readable, skip: Set<string>): Readable {
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

/** Save `ref` on the source and load it on the target, skipping layers the target has. */
export async function shipImage(
  source: Engine,
  target: Engine,
  ref: string,
  progress: Progress,
  via: Routing,
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
      carried: { path: 'none' },
    };
  }
  const diffIds = img.RootFS?.Layers ?? [];
  // An engine that refuses an archive whose layer files are not all there gets the whole image.
  const have = target.quirks.loadsPartialImages ? await engineChainIds(target) : new Set<string>();
  const chains = chainIds(diffIds);
  const v1 = v1LayerIds(diffIds);
  const skip = new Set<string>();
  for (let i = 0; i < v1.length; i++)
    if (have.has(chains[i]!)) {
      skip.add(v1[i]!);
      skip.add(diffIds[i]!.replace(/^sha256:/, ''));
    }
  const missing = diffIds.map((_, i) => i).filter((i) => !have.has(chains[i]!));
  let skipped = 0;
  const load = async (body: Readable, close: () => void): Promise<number> => {
    let bytes = 0;
    const counted = counter((n) => {
      bytes = n;
      progress.bytes(`image ${ref}`, n);
    });
    const stream = body.pipe(counted);
    body.on('error', (err) => counted.destroy(err));
    try {
      await target.loadImage(stream);
    } catch (err) {
      // Close the source's side too: a response nobody reads keeps the run alive.
      close();
      throw err;
    }
    if (!(await target.imageExists(ref))) throw new Error(`the target did not load ${ref}`);
    return bytes;
  };
  // Only the missing layers, from the source host's layer store: no save of the whole image;
  // else (or should the layer store fail it) the engine's save.
  type Opened = { body: Readable; close: () => void; skipped: number; host?: HostImageArchive };
  let where = source.facts.endpoint;
  const { result, carried } = await withFallback<Opened, number>(
    what,
    {
      path: 'layer-store',
      open: async () => {
        const a = await openHostImageArchive(source, img, ref, { chains, missing }, progress, via.access);
        if (isRefused(a)) return a;
        where = a.where;
        return { body: a.stream, close: () => a.stream.destroy(), skipped: diffIds.length - missing.length, host: a };
      },
    },
    {
      path: 'engine-save',
      open: async () => {
        const saved = await source.saveImages([ref]);
        // The engine's save holds every layer: those the target has (by folder name or blob digest) are dropped.
        const body = skip.size ? withoutLayers(saved, skip) : saved;
        return {
          body,
          close: () => {
            saved.destroy();
            body.destroy();
          },
          skipped: diffIds.length - missing.length,
        };
      },
    },
    async (o) => {
      const bytes = await load(o.body, o.close);
      skipped = o.skipped;
      return bytes;
    },
    (_err, o) => o.host?.mismatch()?.message,
    {
      debug: via.debug,
      note: (why) => progress.warn(`image ${ref} on ${where}: ${why}; sending it with the engine's save instead`),
    },
  );
  return { bytes: result, skippedLayers: skipped, totalLayers: diffIds.length, carried };
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
): Promise<{ bytes: number; read: Carried; written: Carried }> {
  const r = await openContainerVolumeReader(source, sourceSpec, volume, progress, via.source);
  let bytes = 0;
  let written: Carried;
  try {
    const counted = counter((n) => {
      bytes = n;
      progress.bytes(`volume ${volume}`, n);
    });
    r.stream.on('error', (err) => counted.destroy(err));
    written = await fillVolume(target, targetImage, targetVolume, r.stream.pipe(counted), progress, via.target);
  } finally {
    // A half-read archive GET holds the helper's lock on the source engine: close it before the
    // helper is removed, or the removal waits forever.
    r.stream.destroy();
    await r.done();
  }
  return { bytes, read: r.carried, written };
}

function splitRef(ref: string): [string, string] {
  const i = ref.lastIndexOf(':');
  return [ref.slice(0, i), ref.slice(i + 1)];
}
