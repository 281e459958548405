/**
 * Whether an image archive is complete: every file the image needs is in it. An engine's save
 * can answer with an archive that is not and still succeed: Docker 26 and 28 with the containerd
 * image store save a multi-platform image whose layer blobs the content store never fetched (a
 * pull that found the layers' snapshots already there) as its index, manifests and config only,
 * and 20.10 then refuses the bundle at restore ("load image: open …/blobs/sha256/…: no such file
 * or directory"). So every image archive ferry writes into a bundle or sends to a target is
 * checked as it streams (checkedImageArchive), and one that is not complete is the path's own
 * failure: never a bundle or a load that only looks whole.
 *
 * Complete means (docs/format.md, Image members):
 *  - a legacy `manifest.json` (when present): each image's Config file, and each of its Layers;
 *  - an OCI `index.json` (when present): each manifest it names, for the engine's platform (an
 *    index naming other platforms' manifests needs only one of the platform's), that manifest's
 *    config blob and every layer blob, at the size the manifest says;
 *  - at least one of the two.
 * A layer left out on purpose (a migration, where the target holds it) counts as there: `leftOut`
 * names it by the hex of its folder name (`<hex>/layer.tar`) or blob digest (`blobs/sha256/<hex>`).
 *
 * The check is pure (imageArchiveGaps, unit-tested); checkedImageArchive streams the archive
 * through, reading its small files, and holds its last bytes back until the check has passed, so
 * that a load reading it never sees the end of the archive of an incomplete one.
 */
import { Transform, type Readable, type TransformOptions } from 'node:stream';
import * as tar from 'tar-stream';
import { EngineError } from '../errors.js';
import { isIndex, isManifest, manifestsFor, type Descriptor, type Platform } from './oci.js';

/** A file of the archive: its size, and its bytes where it is small enough to be a JSON document. */
export interface ArchiveFile {
  size: number;
  body?: Buffer;
}

export interface CompletenessOpts {
  /** The platform the image is for (the engine's): an index's other platforms are not needed. */
  platform?: Platform;
  /** Layers left out on purpose, by the hex of their folder name or blob digest. */
  leftOut?: ReadonlySet<string>;
}

/** Files up to this size are read (manifests, indexes, configs). */
export const SMALL_FILE = 1 << 20;
/** At most this many bytes of small files are kept per archive. */
export const SMALL_TOTAL = 32 << 20;

function norm(name: string): string {
  return name.replace(/^(?:\.\/)+/, '').replace(/\/+$/, '');
}

function parse(b: Buffer | undefined): unknown {
  if (!b) return undefined;
  try {
    return JSON.parse(b.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

const short = (d: string) => d.replace(/^sha256:/, '').slice(0, 12);

/**
 * What an image archive lacks, one line each; empty when it is complete. `files` by name (as in
 * the tar, `./` stripped). Pure; unit-tested.
 */
export function imageArchiveGaps(files: ReadonlyMap<string, ArchiveFile>, opts: CompletenessOpts = {}): string[] {
  const leftOut = opts.leftOut ?? new Set<string>();
  const gaps: string[] = [];
  const get = (name: string) => files.get(norm(name));
  const hexOf = (name: string) =>
    /^(?:([0-9a-f]{64})\/layer\.tar|blobs\/sha256\/([0-9a-f]{64}))$/.exec(norm(name))?.slice(1).find(Boolean);
  const legacy = get('manifest.json');
  const index = get('index.json');
  if (!legacy && !index) return ['neither manifest.json nor index.json is in the archive'];
  if (legacy) {
    const m = parse(legacy.body);
    if (!Array.isArray(m) || m.length === 0) gaps.push('manifest.json is not a non-empty list of images');
    else
      for (const [i, img] of m.entries()) {
        const o = img as { Config?: unknown; Layers?: unknown };
        if (typeof o?.Config !== 'string') {
          gaps.push(`manifest.json entry ${i} names no config`);
          continue;
        }
        if (!get(o.Config)) gaps.push(`manifest.json: the config ${o.Config} is not in the archive`);
        if (!Array.isArray(o.Layers) || o.Layers.some((l) => typeof l !== 'string')) {
          gaps.push(`manifest.json entry ${i} has no valid Layers list`);
          continue;
        }
        for (const l of o.Layers as string[]) {
          const hex = hexOf(l);
          if (!get(l) && !(hex && leftOut.has(hex))) gaps.push(`manifest.json: the layer ${l} is not in the archive`);
        }
      }
  }
  if (index) {
    const doc = parse(index.body);
    if (!isIndex(doc)) gaps.push('index.json is not an image index');
    else {
      // Each image the index names (one per reference saved): one of its entries for the platform.
      const top = doc.manifests.filter((d) => typeof d?.digest === 'string');
      if (!top.length) gaps.push('index.json names no image');
      const seen = new Set<string>();
      for (const d of top) {
        if (seen.has(d.digest)) continue;
        seen.add(d.digest);
        const p = (d as { platform?: Platform }).platform;
        if (p && opts.platform && manifestsFor({ manifests: [d] }, opts.platform).length === 0) continue;
        gaps.push(...descriptorGaps(d, files, leftOut, opts.platform, 0));
      }
    }
  }
  return gaps.length > 10 ? [...gaps.slice(0, 10), `... and ${gaps.length - 10} more`] : gaps;
}

function descriptorGaps(
  d: Descriptor,
  files: ReadonlyMap<string, ArchiveFile>,
  leftOut: ReadonlySet<string>,
  platform: Platform | undefined,
  depth: number,
): string[] {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(d.digest)?.[1];
  if (!hex) return [`index.json names ${d.digest}, not a sha256 digest`];
  const f = files.get(`blobs/sha256/${hex}`);
  if (!f) return [`the manifest or index ${short(d.digest)} is not in the archive`];
  const doc = parse(f.body);
  if (isIndex(doc)) {
    if (depth >= 4) return [`the index ${short(d.digest)} nests too deep`];
    const all = doc.manifests.filter((m) => typeof m?.digest === 'string');
    const mine = platform ? manifestsFor({ manifests: all }, platform) : all;
    if (!mine.length)
      return [
        `the index ${short(d.digest)} names no manifest for ${platform?.os ?? '?'}/${platform?.architecture ?? '?'}`,
      ];
    // One complete manifest for the platform is enough (the engine loads that one).
    let first: string[] | undefined;
    for (const m of mine) {
      const g = descriptorGaps(m, files, leftOut, platform, depth + 1);
      if (!g.length) return [];
      first ??= g;
    }
    return first ?? [];
  }
  if (!isManifest(doc)) return [`the blob ${short(d.digest)} is neither an image manifest nor an index`];
  const out: string[] = [];
  const blob = (desc: Descriptor, what: string, mayBeLeftOut: boolean) => {
    const h = /^sha256:([0-9a-f]{64})$/.exec(desc.digest)?.[1];
    const file = h ? files.get(`blobs/sha256/${h}`) : undefined;
    if (file) {
      if (Number.isSafeInteger(desc.size) && file.size !== desc.size)
        out.push(`${what} ${short(desc.digest)} is ${file.size} bytes in the archive, not ${desc.size}`);
    } else if (!(mayBeLeftOut && h && leftOut.has(h)))
      out.push(`${what} ${short(desc.digest)} of the manifest ${short(d.digest)} is not in the archive`);
  };
  blob(doc.config, 'the config', false);
  for (const l of doc.layers) blob(l, 'the layer', true);
  return out;
}

/** The engine gave (or a path built) an image archive that is not complete. */
export class ImageIncompleteError extends EngineError {
  constructor(
    readonly what: string,
    readonly gaps: string[],
    hint?: string,
    cause?: unknown,
  ) {
    super(`${what} is incomplete: ${gaps.join('; ')}`, {
      code: 'IMAGE_INCOMPLETE',
      ...(cause === undefined ? {} : { cause }),
      hint:
        hint ??
        "the engine's containerd image store lacks blobs of this image (Docker keeps none for the layers of a multi-platform image it pulled while it already held those layers), and `docker save` there gives the same incomplete archive; nothing was written. Make the image whole on that engine (`docker save` it where it is whole, `docker load` it there), or back the container up where its image is whole",
    });
  }
}

/**
 * The engine's save, or ImageIncompleteError where the engine says it has not the image whole for
 * the platform asked (Docker 28 with `platform`: "does not provide the specified platform").
 */
export async function engineSave(open: () => Promise<Readable>, what: string, platform: Platform): Promise<Readable> {
  try {
    return await open();
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/does not provide the specified platform/.test(msg))
      throw new ImageIncompleteError(
        `${what} (the engine's save for ${platform.os}/${platform.architecture})`,
        [msg],
        undefined,
        err,
      );
    throw err;
  }
}

/**
 * Stream an image archive through, reading it as it passes; at its end, check it is complete
 * (imageArchiveGaps). Its last bytes (the end of the tar) are held back until then: an archive
 * that is not complete fails with ImageIncompleteError instead of ending.
 */
export function checkedImageArchive(src: Readable, what: string, opts: CompletenessOpts = {}): Readable {
  const files = new Map<string, ArchiveFile>();
  let kept = 0;
  const extract = tar.extract();
  extract.on('entry', (h, stream, next) => {
    const name = norm(h.name);
    const size = h.size ?? 0;
    const isFile = (h.type ?? 'file') === 'file' || h.type === 'contiguous-file';
    const read = isFile && size <= SMALL_FILE && kept + size <= SMALL_TOTAL;
    const chunks: Buffer[] = [];
    stream.on('data', (c) => {
      if (read && Buffer.isBuffer(c)) chunks.push(c);
    });
    stream.on('end', () => {
      if (isFile) {
        const body = read ? Buffer.concat(chunks) : undefined;
        if (body) kept += body.length;
        files.set(name, { size, ...(body ? { body } : {}) });
      }
      next();
    });
    stream.resume();
  });
  const parsed = new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  parsed.catch(() => {});
  // The archive's end (its end-of-archive blocks and padding lie in its last 10 KiB) is held back.
  const HOLD = 32 << 10;
  let held: Buffer[] = [];
  let heldBytes = 0;
  // The source is read only once the archive is (as the source itself would be).
  let started = false;
  const out = new LazyTransform(
    () => {
      if (started) return;
      started = true;
      src.on('error', (err) => out.destroy(err));
      src.pipe(out);
    },
    {
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _enc, cb) {
        const more = extract.write(chunk);
        held.push(chunk);
        heldBytes += chunk.length;
        while (held.length > 1 && heldBytes - held[0]!.length >= HOLD) {
          const c = held.shift()!;
          heldBytes -= c.length;
          this.push(c);
        }
        // The parser's pace is the stream's: its buffer stays small.
        if (more) cb();
        else extract.once('drain', () => cb());
      },
      flush(cb) {
        extract.end(Buffer.alloc(0));
        parsed.then(
          () => {
            const gaps = imageArchiveGaps(files, opts);
            if (gaps.length) return cb(new ImageIncompleteError(what, gaps));
            for (const c of held) this.push(c);
            held = [];
            cb();
          },
          (err: unknown) =>
            cb(
              new ImageIncompleteError(what, [
                `not a tar archive: ${err instanceof Error ? err.message : String(err)}`,
              ]),
            ),
        );
      },
    },
  );
  return out;
}

/** A Transform that calls `start` when first read. */
class LazyTransform extends Transform {
  constructor(
    private readonly start: () => void,
    opts: TransformOptions,
  ) {
    super(opts);
  }

  override _read(size: number): void {
    this.start();
    super._read(size);
  }
}

/** The platform an engine runs images for: its os and architecture. */
export function enginePlatform(engine: {
  facts: { os: string; arch: string };
}): Platform & { os: string; architecture: string } {
  return { os: engine.facts.os, architecture: engine.facts.arch };
}
