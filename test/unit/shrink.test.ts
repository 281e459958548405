import { describe, expect, it } from 'vitest';
import type { CatalogEntry } from '../../src/store/catalog.js';
import { bundleStem, goneVolumes, previousBundle, shrunkVolumes, volumeSizes } from '../../src/plan/shrink.js';

const MiB = 1 << 20;
const manifest = (sizes: Record<string, number | undefined>) => ({
  volumes: Object.keys(sizes).map((name) => ({
    name,
    anonymous: false,
    driver: 'local',
    member: `volumes/${name}.tar.zst`,
  })),
  members: Object.entries(sizes).map(([name, rawBytes]) => ({
    name: `volumes/${name}.tar.zst`,
    kind: 'volume' as const,
    codec: 'zstd' as const,
    ...(rawBytes === undefined ? {} : { rawBytes }),
  })),
});

describe('volumeSizes', () => {
  it('reads the bytes before compression of each volume, from the trailer when given', () => {
    expect([...volumeSizes(manifest({ db: 5 * MiB, cache: undefined }))]).toEqual([['db', 5 * MiB]]);
    const trailer = { members: [{ name: 'volumes/cache.tar.zst', bytes: 1, sha256: 'x', rawBytes: 7 }] };
    expect([...volumeSizes(manifest({ db: 5 * MiB, cache: undefined }), trailer)]).toEqual([['cache', 7]]);
  });
});

describe('shrunkVolumes', () => {
  const m = (o: Record<string, number>) => new Map(Object.entries(o));
  it('reports a volume under half of what it held that lost at least 1 MiB', () => {
    expect(shrunkVolumes(m({ db: 10 * 1024 }), m({ db: 200 * MiB }))).toEqual([
      { volume: 'db', bytes: 10 * 1024, previousBytes: 200 * MiB },
    ]);
  });
  it('not a volume that shrank a little, a small one, a new one, or one that grew', () => {
    expect(shrunkVolumes(m({ db: 60 * MiB }), m({ db: 100 * MiB }))).toEqual([]);
    expect(shrunkVolumes(m({ db: 10 * 1024 }), m({ db: 900 * 1024 }))).toEqual([]);
    expect(shrunkVolumes(m({ fresh: 0 }), m({ db: 100 * MiB }))).toEqual([]);
    expect(shrunkVolumes(m({ db: 300 * MiB }), m({ db: 100 * MiB }))).toEqual([]);
  });
});

describe('bundleStem', () => {
  it('is the name ferry chose without its time', () => {
    expect(bundleStem('ferry-web-20261123T021500Z.tar')).toBe('ferry-web-');
    expect(bundleStem('ferry-web-2-20261123T021500Z-3.tar')).toBe('ferry-web-2-');
    expect(bundleStem('my-own-name.tar')).toBeUndefined();
  });
});

describe('previousBundle', () => {
  const entry = (
    bundle: string,
    created: string,
    containers: string[],
    sizes: Record<string, number | undefined> = { db: MiB },
  ): CatalogEntry =>
    ({ bundle, created, containers, bytes: 1, mtime: created, manifest: manifest(sizes) }) as unknown as CatalogEntry;
  it('is the newest earlier bundle of the same containers that declares its volume sizes', () => {
    const list = [
      entry('a', '2026-12-01T02:00:00.000Z', ['web']),
      entry('b', '2026-12-02T02:00:00.000Z', ['web']),
      entry('c', '2026-12-02T03:00:00.000Z', ['web'], { db: undefined }), // a stream bundle: no sizes
      entry('d', '2026-12-02T03:30:00.000Z', ['web', 'db']), // another set
      entry('now', '2026-12-02T04:00:00.000Z', ['web']),
      entry('later', '2026-12-02T05:00:00.000Z', ['web']),
    ];
    expect(previousBundle(list, 'now', ['web'], '2026-12-02T04:00:00.000Z')?.bundle).toBe('b');
    expect(previousBundle(list, 'now', ['db', 'web'], '2026-12-02T04:00:00.000Z')?.bundle).toBe('d');
    expect(previousBundle(list, 'a', ['web'], '2026-12-01T02:00:00.000Z')).toBeUndefined();
  });
});

describe('goneVolumes', () => {
  it('names the named volumes of the previous bundle that this one lacks, never anonymous ones', () => {
    const before = manifest({ db: 5 * MiB, logs: undefined, ['a'.repeat(64)]: MiB });
    before.volumes[2]!.anonymous = true;
    expect(goneVolumes(manifest({ logs: 1 }), before)).toEqual([{ volume: 'db', previousBytes: 5 * MiB }]);
    expect(goneVolumes(manifest({ db: 1, logs: 1 }), before)).toEqual([]);
  });
});
