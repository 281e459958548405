/**
 * After a backup into a store: did a volume shrink sharply since the previous bundle of the same
 * containers? A volume that lost its data (a wiped database, a mount that went missing under a
 * bind-mounted path, a service that re-initialised itself) backs up fine, and night after night
 * the rotation then removes the bundles that still hold the data. The same for a named volume
 * that the containers no longer mount (a Compose file that lost a `volumes:` line). ferry says so
 * at once: a warning (and `shrunk` in --json), never a failure, since data does shrink on purpose.
 *
 * Only the store's bundles whose name has this one's stem (`ferry-web-`) are read, each from its
 * manifest alone; the sizes compared are the bytes before compression, which file and SFTP
 * bundles declare in their manifests (stream bundles do not: they are skipped).
 */
import path from 'node:path';
import type { Manifest, Trailer } from '../bundle/manifest.js';
import type { Catalog, CatalogEntry } from '../store/catalog.js';

/** A volume smaller than this share of what it held is reported... */
export const SHRINK_RATIO = 0.5;
/** ...when it lost at least this much (small volumes come and go). */
export const SHRINK_MIN_BYTES = 1 << 20;

export interface Shrunk {
  volume: string;
  /** Bytes before compression, now and in `previous`. */
  bytes: number;
  previousBytes: number;
  /** The previous bundle. */
  previous: string;
  previousCreated: string;
  /** The volume is not in this bundle at all (bytes 0): the containers no longer mount it. */
  gone?: true;
}

/** The bytes before compression of each volume of a bundle (undefined where it does not say). Pure. */
export function volumeSizes(
  m: Pick<Manifest, 'volumes' | 'members'>,
  trailer?: Pick<Trailer, 'members'>,
): Map<string, number> {
  const raw = new Map<string, number>();
  for (const x of trailer?.members ?? m.members) if (typeof x.rawBytes === 'number') raw.set(x.name, x.rawBytes);
  const out = new Map<string, number>();
  for (const v of m.volumes) {
    const n = raw.get(v.member);
    if (n !== undefined) out.set(v.name, n);
  }
  return out;
}

/** The volumes of `now` that shrank past the thresholds against `before`. Pure. */
export function shrunkVolumes(
  now: Map<string, number>,
  before: Map<string, number>,
): { volume: string; bytes: number; previousBytes: number }[] {
  const out = [];
  for (const [volume, bytes] of now) {
    const previousBytes = before.get(volume);
    if (previousBytes === undefined) continue;
    if (bytes < previousBytes * SHRINK_RATIO && previousBytes - bytes >= SHRINK_MIN_BYTES)
      out.push({ volume, bytes, previousBytes });
  }
  return out;
}

/**
 * The named volumes of `before` that `now` does not have (anonymous ones get new names whenever
 * their container is recreated: not a sign of anything). Pure.
 */
export function goneVolumes(
  now: Pick<Manifest, 'volumes'>,
  before: Pick<Manifest, 'volumes' | 'members'>,
): { volume: string; previousBytes: number }[] {
  const have = new Set(now.volumes.map((v) => v.name));
  const sizes = volumeSizes(before);
  return before.volumes
    .filter((v) => !v.anonymous && !have.has(v.name))
    .map((v) => ({ volume: v.name, previousBytes: sizes.get(v.name) ?? 0 }));
}

/** `ferry-web-20261123T021500Z-2.tar` -> `ferry-web-`; undefined for a name ferry did not choose. */
export function bundleStem(name: string): string | undefined {
  return /^(.+-)\d{8}T\d{6}Z(?:-\d+)?\.tar$/.exec(name)?.[1];
}

const sameSet = (a: string[], b: string[]) =>
  a.length === b.length && [...a].sort().join('\0') === [...b].sort().join('\0');

/**
 * The newest earlier bundle of the same containers in `candidates` that declares its volumes'
 * sizes (not `location` itself). Pure.
 */
export function previousBundle(
  candidates: CatalogEntry[],
  location: string,
  containers: string[],
  createdAt: string,
): CatalogEntry | undefined {
  return candidates
    .filter(
      (e) =>
        e.bundle !== location &&
        e.manifest &&
        e.created &&
        e.created < createdAt &&
        e.containers &&
        sameSet(e.containers, containers),
    )
    .filter((e) => volumeSizes(e.manifest!).size > 0)
    .sort((a, b) => (a.created! < b.created! ? 1 : -1))[0];
}

/** Compare a bundle just written into `store` with the previous one of the same containers. */
export async function checkShrinkage(
  store: Catalog,
  written: { location: string; manifest: Manifest; trailer: Trailer },
): Promise<Shrunk[]> {
  const stem = bundleStem(path.posix.basename(written.location));
  if (!stem) return [];
  const now = volumeSizes(written.manifest, written.trailer);
  const candidates = await store.list((name) => name.startsWith(stem) && bundleStem(name) === stem);
  const prev = previousBundle(
    candidates,
    written.location,
    written.manifest.containers.map((c) => c.spec.name),
    written.manifest.createdAt,
  );
  if (!prev) return [];
  const at = { previous: prev.bundle, previousCreated: prev.created! };
  return [
    ...shrunkVolumes(now, volumeSizes(prev.manifest!)).map((s) => ({ ...s, ...at })),
    ...goneVolumes(written.manifest, prev.manifest!).map((g) => ({ ...g, bytes: 0, ...at, gone: true as const })),
  ];
}
