/**
 * OCI image layouts, for the containerd image store (Docker 25+ with `containerd-snapshotter`):
 * what its load takes when part of an image is already there, and how an image archive becomes
 * one that says so.
 *
 * What that load takes (Docker 26.1 and containerd 1.7, seen in the lab):
 *  - a docker-archive (manifest.json, `<id>/layer.tar`, no `oci-layout`) only whole: a layer file
 *    left out fails the load ("failed to resolve layers: layer … not found");
 *  - an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/<digest>`) without the blobs its
 *    content store holds under the digest the manifest names, compressed or not: the image loads,
 *    runs, and saves again whole;
 *  - an OCI layout naming a blob the content store lacks "loads" too when the layer's snapshot
 *    is there, but the image is then broken: its `docker save` leaves the blob out, silently. So a
 *    blob is left out only where the target's content store holds it (content-store.ts).
 *
 * Pure but for the streaming conversion (toOciArchive); unit-tested.
 */
import { createHash } from 'node:crypto';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export const OCI_LAYOUT = '{"imageLayoutVersion":"1.0.0"}';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

/**
 * The name the containerd image store gives a reference (`io.containerd.image.name`): the
 * registry made explicit, `library/` for official images. Pure.
 */
export function containerdName(ref: string): string {
  const slash = ref.indexOf('/');
  const first = slash < 0 ? '' : ref.slice(0, slash);
  if (first && (first.includes('.') || first.includes(':') || first === 'localhost')) return ref;
  return `docker.io/${slash < 0 ? `library/${ref}` : ref}`;
}

/** Whether a parsed JSON blob is an image index (or Docker manifest list). Pure. */
export function isIndex(doc: unknown): doc is { manifests: (Descriptor & { platform?: Platform })[] } {
  const d = doc as { mediaType?: string; manifests?: unknown };
  return (
    Array.isArray(d?.manifests) &&
    (d.mediaType === undefined || d.mediaType === OCI_INDEX || d.mediaType === DOCKER_LIST)
  );
}

/** Whether a parsed JSON blob is an image manifest. Pure. */
export function isManifest(doc: unknown): doc is { config: Descriptor; layers: Descriptor[] } {
  const d = doc as { mediaType?: string; config?: { digest?: unknown }; layers?: unknown };
  return (
    typeof d?.config?.digest === 'string' &&
    Array.isArray(d.layers) &&
    (d.mediaType === undefined || d.mediaType === OCI_MANIFEST || d.mediaType === DOCKER_MANIFEST)
  );
}

export interface Platform {
  os?: string;
  architecture?: string;
}

/** The manifests of an index for one platform (os and architecture). Pure. */
export function manifestsFor(
  index: { manifests: (Descriptor & { platform?: Platform })[] },
  p: Platform,
): Descriptor[] {
  return index.manifests.filter(
    (m) =>
      m.platform === undefined ||
      ((!p.os || m.platform.os === p.os) && (!p.architecture || m.platform.architecture === p.architecture)),
  );
}

/**
 * Each layer blob of a manifest by the diff ID it holds (the config's `rootfs.diff_ids`, in the
 * manifest's order); empty where the two do not pair up. Pure; unit-tested.
 */
export function layerBlobsByDiffId(
  manifest: { layers: Descriptor[] },
  config: { rootfs?: { diff_ids?: unknown } },
): Map<string, Descriptor> {
  const out = new Map<string, Descriptor>();
  const diffIds = config.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== manifest.layers.length) return out;
  for (const [i, l] of manifest.layers.entries()) {
    const d = diffIds[i] as unknown;
    if (typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(l.digest) && Number.isSafeInteger(l.size))
      out.set(d, { mediaType: l.mediaType, digest: l.digest, size: l.size });
  }
  return out;
}

/** What goes into an OCI archive of one image, and what is left out of it. */
export interface OciPlan {
  /** The reference the target names the image by. */
  ref: string;
  /** The image's config digest (its ID on an engine with its own image store). */
  configDigest: string;
  /** The image's diff IDs, bottom first. */
  diffIds: string[];
  /** Layers left out of the archive, by index: the blob the target holds for each. */
  reuse: Map<number, Descriptor>;
  /**
   * The layer files of the docker-archive given to toOciArchive, by folder name: index of the
   * layer each holds. A folder not in it holds the top layer (its v1 id cannot be predicted).
   */
  layerDirs: Map<string, number>;
}

/** The manifest (and its descriptor, for the index) of an OCI archive. Pure; unit-tested. */
export function ociManifest(config: Descriptor, layers: Descriptor[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }),
  );
}

/** The index.json of an OCI archive of one manifest, named `ref`. Pure; unit-tested. */
export function ociIndex(manifest: Descriptor, ref: string): Buffer {
  const tag = ref.slice(ref.lastIndexOf(':') + 1);
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: manifest.digest,
          size: manifest.size,
          annotations: { 'io.containerd.image.name': containerdName(ref), 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
}

/** The archive given was not the image the plan is for: the whole image is sent instead. */
export class OciConvertError extends Error {}

function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

type Entry = Readable & { header: tar.Header };

/**
 * Re-stream a docker-archive of one image (a Docker 20.10 `docker save`, or ferry's archive from
 * the layer store) as an OCI layout without the layers in `plan.reuse`: each layer sent becomes
 * the blob named by its diff ID (its sha256 checked as it streams), the config the blob named by
 * its digest, and a manifest names every layer, those left out by the target's own blob. Fails
 * with OciConvertError, before the index is written (so the target loads nothing), when the
 * archive is not the image of the plan.
 */
export function toOciArchive(src: Readable, plan: OciPlan): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  const n = plan.diffIds.length;
  const configHex = plan.configDigest.replace(/^sha256:/, '');
  const sent = new Map<number, number>();
  let config: Buffer | undefined;
  const add = (name: string, body: Buffer) =>
    new Promise<void>((resolve, reject) =>
      pack.entry({ name, size: body.length, mode: 0o644, mtime: new Date(0) }, body, (e) =>
        e ? reject(e) : resolve(),
      ),
    );
  (async () => {
    const feeding = pipeline(src, extract);
    const sending = pipeline(pack, out);
    feeding.catch(() => {});
    sending.catch(() => {});
    for await (const e of extract as AsyncIterable<Entry>) {
      const h = e.header;
      const layer = /^(?:\.\/)?([0-9a-f]{64})\/layer\.tar$/.exec(h.name);
      const cfg = new RegExp(`^(?:\\./)?(?:${configHex}\\.json|blobs/sha256/${configHex})$`).test(h.name);
      if (cfg) {
        const chunks: Buffer[] = [];
        for await (const c of e) chunks.push(c as Buffer);
        config = Buffer.concat(chunks);
        if (sha256(config) !== plan.configDigest) throw new OciConvertError(`${h.name} is not the image's config`);
        continue;
      }
      if (!layer) {
        e.resume();
        await new Promise<void>((r) => e.on('end', () => r()));
        continue;
      }
      let i = plan.layerDirs.get(layer[1]!);
      if (i === undefined) {
        if (sent.has(n - 1) || plan.reuse.has(n - 1))
          throw new OciConvertError(`${h.name}: a layer the image does not name in that place`);
        i = n - 1;
      }
      if (plan.reuse.has(i) || sent.has(i)) {
        e.resume();
        await new Promise<void>((r) => e.on('end', () => r()));
        continue;
      }
      const diffId = plan.diffIds[i]!;
      const hash = createHash('sha256');
      const check = new Transform({
        highWaterMark: 1 << 20,
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          cb(null, chunk);
        },
        flush(cb) {
          const got = `sha256:${hash.digest('hex')}`;
          cb(got === diffId ? null : new OciConvertError(`layer ${i} of the archive is ${got}, not ${diffId}`));
        },
      });
      await new Promise<void>((resolve, reject) => {
        const w = pack.entry(
          { name: `blobs/sha256/${diffId.slice(7)}`, size: h.size, mode: 0o644, mtime: new Date(0) },
          (err) => (err ? reject(err) : resolve()),
        );
        pipeline(e, check, w).catch(reject);
      });
      sent.set(i, h.size ?? 0);
    }
    await feeding;
    if (!config) throw new OciConvertError('the archive holds no config for the image');
    const layers: Descriptor[] = [];
    for (let i = 0; i < n; i++) {
      const reused = plan.reuse.get(i);
      const size = sent.get(i);
      if (reused) layers.push(reused);
      else if (size !== undefined) layers.push({ mediaType: OCI_LAYER_TAR, digest: plan.diffIds[i]!, size });
      else throw new OciConvertError(`the archive holds no file for layer ${i} (${plan.diffIds[i]!.slice(7, 19)})`);
    }
    await add(`blobs/sha256/${configHex}`, config);
    const manifest = ociManifest({ mediaType: OCI_CONFIG, digest: plan.configDigest, size: config.length }, layers);
    const mDigest = sha256(manifest);
    await add(`blobs/sha256/${mDigest.slice(7)}`, manifest);
    await add('oci-layout', Buffer.from(OCI_LAYOUT));
    await add('index.json', ociIndex({ mediaType: OCI_MANIFEST, digest: mDigest, size: manifest.length }, plan.ref));
    pack.finalize();
    await sending;
  })().catch((err: unknown) => {
    pack.destroy();
    out.destroy(err instanceof Error ? err : new Error(String(err)));
  });
  return out;
}
