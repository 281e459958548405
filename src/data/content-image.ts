/**
 * An image archive for `docker load` read straight from containerd's content store on the
 * engine's host (Docker with the containerd image store), without the engine's save: the
 * source's side of the `content-store` path. The engine's save of an image reads every blob of
 * it through containerd however few of them the target lacks; this reads, with `cat`, only the
 * blobs the target lacks (in a backup, every blob).
 *
 * On that store an image's ID is its manifest's or index's digest: the image is resolved from
 * there (an index to the manifest of the engine's platform whose config names the image's diff
 * IDs, then its config and layer blobs), and the archive has the shape the engine's save gives
 * (Docker 26.1, seen in the lab): `oci-layout`, `index.json` naming the image's top blob with
 * its name, `blobs/sha256/<hex>` for each blob sent, and the legacy `manifest.json` (config and
 * layers as `blobs/sha256/<hex>`) that Docker 20.10's load goes by. A layer left out is still
 * named in both manifests: the loaders open only the layers they lack (oci.ts, ship.ts).
 *
 * Every blob's sha256 and size are checked as it streams; a mismatch, a blob that cannot be read
 * (ContentStoreMismatch), fails the archive before its manifests are written, so the target
 * loads nothing, and the image goes through the engine's save instead (paths.ts). The store is
 * only read. Used only where content-store.ts's refusal rules allow (hostaccess/access.ts).
 */
import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import type { Engine, ImageInspect } from '../engine/engine.js';
import type { Progress } from '../context.js';
import type { HostAccess } from '../hostaccess/access.js';
import type { HostShell } from '../hostaccess/shell.js';
import { EngineError } from '../errors.js';
import { keepText } from '../util/keep-text.js';
import { faultPoint } from '../util/fault.js';
import { HOST_LAYERS_ENV } from '../hostaccess/refusals.js';
import { write, type Sink } from './host-image.js';
import { locateContentStore, readSmallBlobs } from './content-store.js';
import {
  containerdName,
  isIndex,
  isManifest,
  manifestsFor,
  OCI_INDEX,
  OCI_LAYER_TAR,
  OCI_LAYOUT,
  OCI_MANIFEST,
  ociManifest,
  type Descriptor,
  type Platform,
} from './oci.js';
import { refused, type Refused } from './paths.js';

/**
 * The content store did not give a blob as the image names it (missing, short, another digest),
 * or the run was told to fail there (the fault point `content-store-blob`): the engine's save is
 * used instead. Typed, with a hint, should it ever reach the user.
 */
export class ContentStoreMismatch extends EngineError {
  constructor(message: string) {
    super(`the containerd content store did not give the image: ${message}`, {
      code: 'CONTENT_STORE',
      hint: `run again with ${HOST_LAYERS_ENV}=0 to export images with the engine's save`,
    });
  }
}

/** An image as its content store holds it: the blobs of one platform's manifest, and the docs above it. */
export interface StoredImage {
  /** The image's own blob (its ID): the manifest, or the index above it. */
  top: Descriptor;
  /** The small blobs (index, manifest, config) by hex digest, their bytes read and checked. */
  docs: Map<string, Buffer>;
  manifest: Descriptor;
  config: Descriptor;
  /** The layer blobs, bottom first: the i-th holds the image's i-th diff ID. */
  layers: Descriptor[];
  /** The image's diff IDs, bottom first (its config's). */
  diffIds: string[];
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function parse(b: Buffer | undefined): unknown {
  if (!b) return undefined;
  try {
    return JSON.parse(b.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

const hexOf = (d: string) => /^sha256:([0-9a-f]{64})$/.exec(d)?.[1];

/**
 * Resolve `id` (the image's ID) in a content store whose small blobs `read` gives (by hex digest,
 * only those it holds): the index to the manifest for `platform` whose config names exactly
 * `diffIds`, that manifest's config and layers. A string says why not. Pure but for `read`;
 * unit-tested.
 */
export async function resolveStoredImage(
  id: string,
  diffIds: string[],
  platform: Platform,
  read: (hexes: string[]) => Promise<Map<string, Buffer>>,
): Promise<StoredImage | string> {
  const idHex = hexOf(id);
  if (!idHex) return `the image ID ${id} is not a sha256 digest`;
  const docs = new Map<string, Buffer>();
  const got = async (hexes: string[]) => {
    const m = await read(hexes);
    for (const [h, b] of m) if (sha256(b) === `sha256:${h}`) docs.set(h, b);
    return hexes.filter((h) => docs.has(h));
  };
  if (!(await got([idHex])).length) return `the image's blob ${idHex.slice(0, 12)} is not in the store`;
  const topDoc = parse(docs.get(idHex));
  let candidates: Descriptor[];
  let top: Descriptor;
  if (isIndex(topDoc)) {
    top = {
      mediaType: (topDoc as { mediaType?: string }).mediaType ?? OCI_INDEX,
      digest: id,
      size: docs.get(idHex)!.length,
    };
    candidates = manifestsFor(topDoc, platform).filter((m) => hexOf(m.digest));
    await got(candidates.map((m) => hexOf(m.digest)!));
  } else if (isManifest(topDoc)) {
    top = {
      mediaType: (topDoc as { mediaType?: string }).mediaType ?? OCI_MANIFEST,
      digest: id,
      size: docs.get(idHex)!.length,
    };
    candidates = [top];
  } else return `the image's blob ${idHex.slice(0, 12)} is neither an index nor a manifest`;
  const manifests: { desc: Descriptor; doc: { config: Descriptor; layers: Descriptor[] } }[] = [];
  for (const c of candidates) {
    const b = docs.get(hexOf(c.digest)!);
    const doc = parse(b);
    if (b && isManifest(doc) && hexOf(doc.config.digest))
      manifests.push({ desc: { mediaType: c.mediaType, digest: c.digest, size: b.length }, doc });
  }
  await got(manifests.map((m) => hexOf(m.doc.config.digest)!));
  for (const m of manifests) {
    const cb = docs.get(hexOf(m.doc.config.digest)!);
    const cfg = parse(cb) as { rootfs?: { diff_ids?: unknown } } | undefined;
    const ids = cfg?.rootfs?.diff_ids;
    // No diff IDs given (Docker 28 inspects an image whose blobs its store lacks with an empty
    // RootFS): the config's own, for the engine's platform.
    const want = diffIds.length ? diffIds : Array.isArray(ids) ? ids : [];
    if (!cb || !Array.isArray(ids) || !ids.length || ids.length !== want.length || ids.some((d, i) => d !== want[i]))
      continue;
    if (m.doc.layers.length !== want.length) continue;
    if (!m.doc.layers.every((l) => hexOf(l.digest) && Number.isSafeInteger(l.size) && l.size >= 0)) continue;
    return {
      top,
      docs,
      manifest: m.desc,
      config: { mediaType: m.doc.config.mediaType, digest: m.doc.config.digest, size: cb.length },
      layers: m.doc.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
      diffIds: want.map(String),
    };
  }
  return `no manifest of the image in the store for ${platform.os ?? '?'}/${platform.architecture ?? '?'} names its layers`;
}

/**
 * The image with every layer blob the store holds: a layer whose blob the store lacks (Docker with
 * the containerd store keeps none for the layers of a multi-platform image it pulled while it
 * already held those layers, and its own save then leaves them out) is taken from the blob the
 * store holds under its diff ID (the uncompressed layer, as a `docker load` stored it), and the
 * image gets a manifest of its own naming those (its top). A string says which layer the store
 * holds neither way. `size` gives the store's size of a blob (hex), undefined where it lacks it;
 * a layer `leaveOut` names is not sent, so not needed. Pure; unit-tested.
 */
export function withStoredLayers(
  img: StoredImage,
  diffIds: string[],
  size: (hex: string) => number | undefined,
  leaveOut: (index: number, hex: string) => boolean = () => false,
): StoredImage | string {
  let changed = false;
  const layers: Descriptor[] = [];
  for (const [i, l] of img.layers.entries()) {
    if (size(l.digest.slice(7)) === l.size || leaveOut(i, l.digest.slice(7))) {
      layers.push(l);
      continue;
    }
    const d = diffIds[i];
    const hex = d && hexOf(d);
    const n = hex ? size(hex) : undefined;
    if (!hex || n === undefined)
      return `layer blob ${l.digest.slice(7, 19)} (layer ${i}, diff ID ${d?.slice(7, 19) ?? '?'}) is not in the store, under either digest`;
    layers.push({ mediaType: OCI_LAYER_TAR, digest: d, size: n });
    changed = true;
  }
  if (!changed) return img;
  const manifest = ociManifest(img.config, layers);
  const desc: Descriptor = { mediaType: OCI_MANIFEST, digest: sha256(manifest), size: manifest.length };
  const docs = new Map(img.docs);
  docs.set(desc.digest.slice(7), manifest);
  return { ...img, top: desc, manifest: desc, docs, layers };
}

/** The index.json and manifest.json of the archive, as the engine's save writes them. Pure; unit-tested. */
export function contentArchiveIndexes(img: StoredImage, ref: string): { index: Buffer; manifest: Buffer } {
  const tag = ref.slice(ref.lastIndexOf(':') + 1);
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      {
        mediaType: img.top.mediaType,
        digest: img.top.digest,
        size: img.top.size,
        annotations: { 'io.containerd.image.name': containerdName(ref), 'org.opencontainers.image.ref.name': tag },
      },
    ],
  };
  const blob = (d: Descriptor) => `blobs/sha256/${d.digest.slice(7)}`;
  const manifest = [{ Config: blob(img.config), RepoTags: [ref], Layers: img.layers.map(blob) }];
  return { index: Buffer.from(JSON.stringify(index)), manifest: Buffer.from(JSON.stringify(manifest)) };
}

/**
 * The layer blobs an archive holds: the image's, but those `leaveOut` names (by layer index and
 * blob hex digest), each blob once. Pure; unit-tested.
 */
export function layerBlobsToSend(
  layers: Descriptor[],
  leaveOut: (index: number, hex: string) => boolean,
): { send: Descriptor[]; left: number } {
  const send: Descriptor[] = [];
  const seen = new Set<string>();
  let left = 0;
  for (const [i, l] of layers.entries()) {
    const hex = l.digest.slice(7);
    if (leaveOut(i, hex)) {
      left++;
      continue;
    }
    if (seen.has(hex)) continue;
    seen.add(hex);
    send.push(l);
  }
  return { send, left };
}

export interface ContentImageArchive {
  stream: Readable;
  /** Why the archive failed, when it was the content store that did not give what it should. */
  mismatch(): ContentStoreMismatch | undefined;
  /** Where the blobs were read, for messages. */
  where: string;
  /** How many of the image's layers were left out. */
  leftOut: number;
}

/** Stream the blob `d` of the store in `dir` into w, checking its size and sha256 as it goes. */
async function writeBlob(
  shell: HostShell,
  dir: string,
  d: Descriptor,
  w: Sink,
  first: () => Promise<void>,
): Promise<void> {
  const hex = d.digest.slice(7);
  const p = await shell.run(['cat', '--', `${dir}/${hex}`]);
  p.stdin.end();
  const stderr = keepText(p.stderr);
  const hash = createHash('sha256');
  let n = 0;
  try {
    for await (const chunk of p.stdout as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > d.size)
        throw new ContentStoreMismatch(`blob ${hex.slice(0, 12)} is longer than the ${d.size} bytes named`);
      hash.update(chunk);
      await write(w, chunk);
      await first();
    }
    const code = await p.exit;
    if (code !== 0)
      throw new ContentStoreMismatch(`cat ${dir}/${hex}: ${stderr().trim().slice(0, 300) || `exit ${code}`}`);
    if (n !== d.size) throw new ContentStoreMismatch(`blob ${hex.slice(0, 12)} has ${n} bytes, not ${d.size}`);
    const got = hash.digest('hex');
    if (got !== hex)
      throw new ContentStoreMismatch(`blob ${hex.slice(0, 12)} read from ${dir} has the digest ${got.slice(0, 12)}`);
  } finally {
    p.kill();
  }
}

/**
 * An OCI archive of `img` (tagged `ref`) read from the content store on `engine`'s host, without
 * the layers `leaveOut` names (a migration: those the target has); refused, with why, where the
 * store cannot be read (`access`, decided once per engine) or does not hold the image as the
 * engine says.
 */
export async function openContentImageArchive(
  engine: Engine,
  img: ImageInspect,
  ref: string,
  leaveOut: (index: number, hex: string) => boolean,
  progress: Progress,
  access: HostAccess | Promise<HostAccess>,
): Promise<ContentImageArchive | Refused> {
  const a = await access;
  const decided = a.contentStore;
  if (!decided?.use || !a.shell) return refused(decided?.reason ?? 'the content store is not read on this engine');
  const shell = a.shell;
  const idHex = hexOf(img.Id);
  const diffIds = img.RootFS?.Layers ?? [];
  if (!idHex) return refused('the image has no sha256 ID');
  // The image's own blob, and a few more of the engine's images: on a host running two
  // containerds that both hold this image, they tell the engine's store from the other.
  const others = (await engine.listImages().catch(() => []))
    .map((i) => hexOf(i.Id))
    .filter((h): h is string => !!h && h !== idHex);
  const listing = await locateContentStore(engine, shell, [idHex, ...others.slice(0, 7)]);
  if (!listing) return refused(`containerd's content store of ${engine.facts.endpoint} not found on ${shell.where}`);
  const { dir, sizes } = listing;
  const resolved = await resolveStoredImage(
    img.Id,
    diffIds,
    { os: engine.facts.os, architecture: engine.facts.arch },
    (h) => readSmallBlobs(shell, dir, h).catch(() => new Map<string, Buffer>()),
  );
  if (typeof resolved === 'string') return refused(resolved);
  const stored = withStoredLayers(resolved, resolved.diffIds, (h) => sizes.get(h), leaveOut);
  if (typeof stored === 'string') return refused(stored);
  const { send, left } = layerBlobsToSend(stored.layers, leaveOut);
  for (const l of send)
    if (sizes.get(l.digest.slice(7)) !== l.size)
      return refused(`layer blob ${l.digest.slice(7, 19)} is not in ${dir} at the size the image names`);
  const docs = [stored.top, ...(stored.top.digest === stored.manifest.digest ? [] : [stored.manifest]), stored.config];
  const { index, manifest } = contentArchiveIndexes(stored, ref);
  progress.info(
    `image ${ref}: ${send.length} of ${stored.layers.length} layers read from the content store in ${dir} on ${shell.where}`,
  );

  const pack = tar.pack();
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let failed: ContentStoreMismatch | undefined;
  const quiet = <T extends NodeJS.EventEmitter>(e: T): T => e.on('error', () => {});
  const small = (name: string, body: Buffer) =>
    new Promise<void>((resolve, reject) =>
      quiet(
        pack.entry({ name, size: body.length, mode: 0o444, mtime: new Date(0) }, body, (e) =>
          e ? reject(e) : resolve(),
        ),
      ),
    );
  // The fault point, once, after the first bytes of the first blob streamed.
  let faulted = false;
  const first = async () => {
    if (faulted) return;
    faulted = true;
    await faultPoint('content-store-blob').catch((err: unknown) => {
      throw new ContentStoreMismatch(err instanceof Error ? err.message : String(err));
    });
  };
  (async () => {
    const sending = pipeline(pack, out);
    sending.catch(() => {});
    for (const l of send) {
      let w!: Sink;
      const done = new Promise<void>(
        (resolve, reject) =>
          (w = quiet(
            pack.entry(
              { name: `blobs/sha256/${l.digest.slice(7)}`, size: l.size, mode: 0o444, mtime: new Date(0) },
              (err) => (err ? reject(err) : resolve()),
            ) as unknown as Sink,
          )),
      );
      done.catch(() => {});
      await writeBlob(shell, dir, l, w, first);
      w.end();
      await done;
    }
    await first();
    for (const d of docs) await small(`blobs/sha256/${d.digest.slice(7)}`, stored.docs.get(d.digest.slice(7))!);
    await small('oci-layout', Buffer.from(OCI_LAYOUT));
    await small('index.json', index);
    await small('manifest.json', manifest);
    pack.finalize();
    await sending;
  })().catch((err: unknown) => {
    if (err instanceof ContentStoreMismatch) failed = err;
    pack.destroy();
    out.destroy(err instanceof Error ? err : new Error(String(err)));
  });
  return { stream: out, mismatch: () => failed, where: shell.where, leftOut: left };
}
