/**
 * containerd's content store on an engine's host (Docker with the containerd image store): which
 * image blobs the engine already holds, by digest, and which of them holds which layer (by diff
 * ID), read from the blobs themselves. A migration to such an engine then sends an OCI archive
 * without those blobs (oci.ts says why only those). The engine's API (1.45) does not say: its
 * image inspect gives diff IDs, not the digests of the blobs that hold them, and may name a blob
 * the store does not hold.
 *
 * Only read, as root on the engine's host (hostaccess/access.ts: `contentStore`), never written:
 * `sh -c` scripts that find the store's directory (from the running containerd's `--config`, and
 * the usual places), list its blobs (`find -printf`) and `cat` a few small ones (manifests,
 * indexes, configs). The store is the engine's when it holds the blob of one of the engine's
 * images (on this store an image's ID is its manifest's or index's digest).
 */
import type { Engine } from '../engine/engine.js';
import { captureBytes, type HostShell } from '../hostaccess/shell.js';
import type { HostAccess } from '../hostaccess/access.js';
import { isIndex, isManifest, layerBlobsByDiffId, manifestsFor, type Descriptor } from './oci.js';
import { refused, type Refused } from './paths.js';

/**
 * A shell function: the top-level `root` of the containerd config file $1. containerd 1.x's
 * config (version 2) quotes it "like this", containerd 2's (version 3, as `containerd config
 * default` writes it) 'like this': both are read. Exported for its unit test.
 */
export const CONFIG_ROOT = `config_root() {
  tr "'" '"' <"$1" | sed -n 's/^[[:space:]]*root[[:space:]]*=[[:space:]]*"\\([^"]*\\)".*/\\1/p' | head -n 1
}`;

// $1: blobs the engine's store holds (hex digests of some of its images' configs, space-separated);
// then candidate roots. Of the stores found (every running containerd's, and the candidates), the
// one that holds the most of those blobs is the engine's: a host may run two containerds, and an
// image both engines hold has the same digest in both. Prints the store's blob directory, then
// one line per blob: digest (hex) and size.
export const LOCATE = `${CONFIG_ROOT}
want=$1; shift
for p in /proc/[0-9]*; do
  case "$(readlink "$p/exe" 2>/dev/null)" in */containerd) ;; *) continue ;; esac
  cfg=$(tr '\\0' '\\n' <"$p/cmdline" 2>/dev/null | sed -n -e '/^--config$/{n;p;}' -e '/^-c$/{n;p;}' -e 's/^--config=//p' | head -n 1)
  [ -n "$cfg" ] && [ -f "$cfg" ] || continue
  r=$(config_root "$cfg")
  [ -n "$r" ] && set -- "$r" "$@"
done
best=; most=0
for r in "$@"; do
  d="$r/io.containerd.content.v1.content/blobs/sha256"
  n=0
  for w in $want; do [ -f "$d/$w" ] && n=$((n+1)); done
  if [ $n -gt $most ]; then best=$d; most=$n; fi
done
[ -n "$best" ] || exit 3
echo "$best"; exec find "$best" -maxdepth 1 -type f -printf '%f %s\\n'`;

// $1: the blob directory; then digests (hex). Prints, for each blob at most 1 MiB, `<hex> <size>`,
// a newline, its bytes and a newline.
const READ = `d=$1; shift
for h in "$@"; do
  s=$(stat -c %s -- "$d/$h" 2>/dev/null) || continue
  [ "$s" -le 1048576 ] || continue
  printf '%s %s\\n' "$h" "$s"; cat -- "$d/$h"; echo
done`;

/** Parse LOCATE's answer: the directory and each blob's size by hex digest. Pure; unit-tested. */
export function parseListing(out: string): { dir: string; sizes: Map<string, number> } | undefined {
  const [dir, ...lines] = out.split('\n');
  if (!dir?.startsWith('/')) return undefined;
  const sizes = new Map<string, number>();
  for (const l of lines) {
    const m = /^([0-9a-f]{64}) (\d+)$/.exec(l);
    if (m) sizes.set(m[1]!, Number(m[2]));
  }
  return { dir, sizes };
}

/** Parse READ's answer: each blob's bytes by hex digest. Pure; unit-tested. */
export function parseBlobs(out: Buffer): Map<string, Buffer> {
  const blobs = new Map<string, Buffer>();
  let at = 0;
  while (at < out.length) {
    const nl = out.indexOf(0x0a, at);
    if (nl < 0) break;
    const m = /^([0-9a-f]{64}) (\d+)$/.exec(out.subarray(at, nl).toString('latin1'));
    if (!m) break;
    const size = Number(m[2]);
    if (nl + 1 + size > out.length) break;
    blobs.set(m[1]!, out.subarray(nl + 1, nl + 1 + size));
    at = nl + 1 + size + 1;
  }
  return blobs;
}

function json(b: Buffer | undefined): unknown {
  if (!b) return undefined;
  try {
    return JSON.parse(b.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * The content store of `engine` on its host: its blob directory and every blob's size by hex
 * digest; undefined where none is found. `ids`: hex digests of some of the engine's images (on
 * this store an image's ID is its manifest's or index's digest), which tell its store from
 * another containerd's.
 */
export async function locateContentStore(
  engine: Engine,
  shell: HostShell,
  ids: string[],
): Promise<{ dir: string; sizes: Map<string, number> } | undefined> {
  const roots = ['/var/lib/containerd', ...(engine.facts.rootDir ? [`${engine.facts.rootDir}/containerd/daemon`] : [])];
  const located = await captureBytes(
    shell,
    ['sh', '-c', LOCATE, 'sh', ids.slice(0, 8).join(' '), ...roots],
    64 << 20,
  ).catch(() => undefined);
  return located?.code === 0 ? parseListing(located.stdout.toString('utf8')) : undefined;
}

/** The bytes of the small blobs (at most 1 MiB each) `hexes` of the store in `dir`, by hex digest; those it lacks left out. */
export async function readSmallBlobs(shell: HostShell, dir: string, hexes: string[]): Promise<Map<string, Buffer>> {
  return hexes.length
    ? parseBlobs((await captureBytes(shell, ['sh', '-c', READ, 'sh', dir, ...hexes], 64 << 20)).stdout)
    : new Map<string, Buffer>();
}

/** What an engine's content store holds: every blob (hex digest → size), and layer blobs by diff ID. */
export interface ContentStoreView {
  where: string;
  dir: string;
  blobs: Map<string, number>;
  /** For each diff ID asked about, a blob of the store that holds it (the store has it, at that size). */
  layers: Map<string, Descriptor>;
  /** Every layer blob (hex digest) the manifests read name, with the diff ID it holds (whether the store has it or not). */
  named: Map<string, string>;
}

/**
 * Read what `engine`'s content store holds of the layers `diffIds`: the store's blob list, and
 * the manifests and configs of those of the engine's images that share a layer with them.
 * Refused, with why, where the store is not read (access) or not found.
 */
export async function readContentStore(
  engine: Engine,
  diffIds: string[],
  access: HostAccess | Promise<HostAccess>,
  opts: { images?: string[] } = {},
): Promise<ContentStoreView | Refused> {
  const a = await access;
  const decided = a.contentStore;
  if (!decided?.use || !a.shell) return refused(decided?.reason ?? 'the content store is not read on this engine');
  const shell = a.shell;
  const images = opts.images
    ? opts.images.map((Id) => ({ Id }))
    : (await engine.listImages().catch(() => [])).slice(0, 1000);
  const ids = images.map((i) => /^sha256:([0-9a-f]{64})$/.exec(i.Id)?.[1]).filter((x): x is string => !!x);
  if (!ids.length) return refused('the target holds no images');
  const listing = await locateContentStore(engine, shell, ids);
  if (!listing) return refused(`containerd's content store of ${engine.facts.endpoint} not found on ${shell.where}`);
  const { dir, sizes } = listing;
  const want = new Set(diffIds);
  const layers = new Map<string, Descriptor>();
  // A blob is reused only where a manifest of one of the engine's images names it: a blob no image
  // holds goes at the store's next garbage collection, perhaps between this look and the load.
  const named = new Map<string, string>();
  {
    const sharing: string[] = [];
    for (const img of images) {
      if (sharing.length >= 50) break;
      const info = await engine.inspectImage(img.Id).catch(() => undefined);
      const hex = /^sha256:([0-9a-f]{64})$/.exec(img.Id)?.[1];
      if (hex && info?.RootFS?.Layers?.some((l) => want.has(l))) sharing.push(hex);
    }
    const read = (hexes: string[]) => readSmallBlobs(shell, dir, hexes);
    const platform = { os: engine.facts.os, architecture: engine.facts.arch };
    const tops = await read(sharing).catch(() => new Map<string, Buffer>());
    const manifests: { layers: Descriptor[]; config: Descriptor }[] = [];
    // An image's blob is a manifest, or an index of this platform's manifests, which may itself
    // name an index (an OCI archive's index.json naming the image's own): followed a few levels.
    let level = tops;
    for (let depth = 0; level.size && depth < 4; depth++) {
      const more: string[] = [];
      for (const b of level.values()) {
        const doc = json(b);
        if (isManifest(doc)) manifests.push(doc);
        else if (isIndex(doc)) for (const m of manifestsFor(doc, platform)) more.push(m.digest.slice(7));
      }
      level = await read(more).catch(() => new Map<string, Buffer>());
    }
    const configs = await read(manifests.map((m) => m.config.digest.slice(7))).catch(() => new Map<string, Buffer>());
    for (const m of manifests) {
      const config = json(configs.get(m.config.digest.slice(7))) as { rootfs?: { diff_ids?: unknown } } | undefined;
      if (!config) continue;
      for (const [diffId, desc] of layerBlobsByDiffId(m, config)) {
        named.set(desc.digest.slice(7), diffId);
        if (!want.has(diffId) || layers.has(diffId)) continue;
        // Only a blob the store holds, at the size the manifest says: a manifest may name blobs
        // that were never fetched (other platforms, or an image loaded without them).
        if (sizes.get(desc.digest.slice(7)) === desc.size) layers.set(diffId, desc);
      }
    }
  }
  return { where: shell.where, dir, blobs: sizes, layers, named };
}
