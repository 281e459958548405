/**
 * Images read straight from the containerd content store on the source engine's host (issue 21,
 * the source's side of `content-store`): no `docker save` of the whole image to send what the
 * target lacks. The source is engine C (Docker 26, containerd 1.7), or engine D (Docker 28,
 * containerd 2.1) in a FERRY_E2E_ENGINE=docker28 run; the other containerd engine and engine B
 * (Docker 20.10) are the targets. Every run of the suite runs this file (it names its engines).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildBaseImage,
  cleanup,
  docker,
  ENGINE_B,
  ENGINE_C,
  ENGINE_D,
  ferry,
  inspect,
  removeSnapshots,
  runLayeredService,
  sh,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

const SRC = process.env.FERRY_E2E_ENGINE === 'docker28' ? ENGINE_D : ENGINE_C;
const OTHER = SRC === ENGINE_C ? ENGINE_D : ENGINE_C;
const ALL = [SRC, OTHER, ENGINE_B];

const name = uid('csrc');
const vol = `${name}-data`;
const base = `ferry-test/csrc-base-${name}:1`;
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-csrc-'));

interface ImagePath {
  path: string;
  fallback?: { from: string; reason: string };
  target?: { path: string; fallback?: { from: string; reason: string } };
}
interface Result {
  ok: boolean;
  imageBytes?: number;
  skippedLayers?: number;
  totalLayers?: number;
  dataPaths: { images: ImagePath[] };
}

/** What `docker inspect` shows of the container a user set, and of its image. */
function seen(host: string) {
  const c = inspect('container', name, host);
  const img = inspect('image', c.Image as string, host);
  return {
    env: (c.Config.Env as string[]).filter((e) => !e.startsWith('HOSTNAME=')).sort(),
    labels: c.Config.Labels,
    cmd: c.Config.Cmd,
    restart: c.HostConfig.RestartPolicy,
    mounts: (c.Mounts as { Type: string; Name?: string; Destination: string }[]).map((m) => [
      m.Type,
      m.Name,
      m.Destination,
    ]),
    layers: img.RootFS.Layers as string[],
    imageEnv: img.Config.Env as string[],
  };
}

/** What the user set: all but the image's own (its layers, and the env a commit bakes into it). */
const settings = ({ layers: _layers, imageEnv: _env, ...rest }: ReturnType<typeof seen>) => rest;

const files = (host: string) => docker(['exec', name, 'cat', '/top.txt', '/base.txt', '/data/d/f'], { host });

/** The layers the engine's `docker save` of the container's image names, all in the archive. */
function savesWhole(host: string): { layers: number; missing: string[] } {
  const image = inspect('container', name, host).Config.Image as string;
  const r = sh(
    `f=$(mktemp) && docker -H ${host} save ${image} >"$f" && tar -xOf "$f" manifest.json && echo && tar -tf "$f"; rm -f "$f"`,
  );
  if (r.code !== 0) throw new Error(`save ${image}: ${r.stderr}`);
  const [manifest, ...names] = r.stdout.split('\n');
  const layers = (JSON.parse(manifest!) as { Layers: string[] }[])[0]!.Layers;
  return { layers: layers.length, missing: layers.filter((l) => !names.includes(l)) };
}

/** The migrated container: the user's settings, on the source's image with the container's layer on top. */
function expectMigrated(host: string) {
  const got = seen(host);
  const src = seen(SRC);
  expect(settings(got)).toEqual(settings(src));
  expect(got.layers.slice(0, -1)).toEqual(src.layers);
  expect(got.layers).toHaveLength(src.layers.length + 1);
  expect(got.imageEnv).toEqual(src.imageEnv);
}

/** Write a new top layer on the source (a layer no target has seen yet). */
function newTop(text: string) {
  docker(['exec', name, 'sh', '-c', `echo ${text} > /top.txt`], { host: SRC });
}

beforeAll(() => {
  // A base image built on the source (its layers gzip-compressed in its content store), loaded
  // into the others from one save: a shared base image.
  buildBaseImage(base, 'head -c 2000000 /dev/urandom > /big.bin; echo base > /base.txt', SRC, [OTHER, ENGINE_B]);
  runLayeredService(name, base, vol, SRC, ['--network', 'none']);
});

afterAll(() => {
  for (const host of ALL) cleanup(host, { containers: [name], volumes: [vol], images: [base] });
  removeSnapshots([name], ALL);
  rmSync(dir, { recursive: true, force: true });
});

describe(`images read from the content store of ${SRC}`, () => {
  let original: ReturnType<typeof seen>;
  let listing = '';
  const bundle = path.join(dir, 'b.tar');

  it('backs up from the content store, and the bundle restores on the same engine, on 20.10 and on the other containerd engine', async () => {
    await waitFor('the volume data', () => docker(['exec', name, 'cat', '/data/d/f'], { host: SRC }) === 'volume');
    original = seen(SRC);
    listing = volumeListing(vol, SRC);
    const r = await ferry(['-H', SRC, 'backup', name, '-o', bundle, '--compress', 'none', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Result;
    expect(res.dataPaths.images).toEqual([{ container: name, ref: expect.any(String), path: 'content-store' }]);
    let restored: ReturnType<typeof seen> | undefined;
    for (const host of [SRC, ENGINE_B, OTHER]) {
      cleanup(host, { containers: [name], volumes: [vol] });
      const back = await ferry(['-H', host, 'restore', bundle, '--json']);
      expect(back.code, `${host}: ${back.stderr}`).toBe(0);
      const got = seen(host);
      expect(settings(got), host).toEqual(settings(original));
      // The snapshot's layers: the base image's, and the container's own on top; the same on every engine.
      expect(got.layers.slice(0, -1), host).toEqual(original.layers);
      expect(got.layers).toHaveLength(original.layers.length + 1);
      // The same container and image on every engine, as `docker inspect` shows them.
      restored ??= got;
      expect(got, host).toEqual(restored);
      expect(volumeListing(vol, host), host).toBe(listing);
      expect(inspect('container', name, host).State.Running, host).toBe(true);
      expect(files(host), host).toBe('layer\nbase\nvolume');
      cleanup(host, { containers: [name], volumes: [vol] });
    }
    // The restored snapshot stays on B and the other engine: a migration below then lacks only its top layer.
  });

  it(`migrate ${SRC} -> 20.10 with the base there: only the missing layer leaves the content store`, async () => {
    // The source's container: restored from the bundle on SRC, with its own top layer.
    const back = await ferry(['-H', SRC, 'restore', bundle]);
    expect(back.code, back.stderr).toBe(0);
    newTop('to-b');
    const want = files(SRC);
    expect(want).toBe('to-b\nbase\nvolume');
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    const r = await ferry(['-H', SRC, 'migrate', name, '--to', ENGINE_B, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Result;
    expect(res.dataPaths.images[0]).toMatchObject({ path: 'content-store', target: { path: 'engine-load' } });
    expect(res.dataPaths.images[0]!.fallback).toBeUndefined();
    expect(res.skippedLayers).toBe(res.totalLayers! - 1);
    expect(res.imageBytes).toBeLessThan(200_000);
    expect(files(ENGINE_B)).toBe(want);
    expectMigrated(ENGINE_B);
    expect(settings(seen(ENGINE_B))).toEqual(settings(original));
    expect(volumeListing(vol, ENGINE_B)).toBe(listing);
    expect(savesWhole(ENGINE_B)).toEqual({ layers: res.totalLayers, missing: [] });
  });

  it(`migrate ${SRC} -> ${OTHER} with the base there: content store to content store`, async () => {
    newTop('to-other');
    const want = files(SRC);
    cleanup(OTHER, { containers: [name], volumes: [vol] });
    const r = await ferry(['-H', SRC, 'migrate', name, '--to', OTHER, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Result;
    expect(res.dataPaths.images[0]).toMatchObject({ path: 'content-store', target: { path: 'content-store' } });
    expect(res.dataPaths.images[0]!.fallback).toBeUndefined();
    expect(res.skippedLayers).toBe(res.totalLayers! - 1);
    expect(res.imageBytes).toBeLessThan(200_000);
    expect(files(OTHER)).toBe(want);
    expectMigrated(OTHER);
    expect(settings(seen(OTHER))).toEqual(settings(original));
    expect(volumeListing(vol, OTHER)).toBe(listing);
    expect(inspect('container', name, OTHER).State.Running).toBe(true);
    expect(savesWhole(OTHER)).toEqual({ layers: res.totalLayers, missing: [] });
  });

  it('a content store read that fails half-way falls back to the engine save, from the start', async () => {
    newTop('fallback');
    const want = files(SRC);
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    const r = await ferry(['-H', SRC, 'migrate', name, '--to', ENGINE_B, '--json'], {
      env: { FERRY_FAULT: 'content-store-blob' },
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Result;
    expect(res.dataPaths.images[0]).toMatchObject({
      path: 'engine-save',
      fallback: { from: 'content-store', reason: expect.stringMatching(/fault injected at content-store-blob/) },
    });
    expect(res.skippedLayers).toBe(res.totalLayers! - 1);
    expect(files(ENGINE_B)).toBe(want);
    expect(volumeListing(vol, ENGINE_B)).toBe(listing);
    expect(savesWhole(ENGINE_B)).toEqual({ layers: res.totalLayers, missing: [] });

    // A backup: the bundle writer rewinds the image member and writes it again with the save.
    const b2 = path.join(dir, 'b2.tar');
    const w = await ferry(['-H', SRC, 'backup', name, '-o', b2, '--json'], {
      env: { FERRY_FAULT: 'content-store-blob' },
    });
    expect(w.code, w.stderr).toBe(0);
    expect((JSON.parse(w.stdout) as Result).dataPaths.images[0]).toMatchObject({
      path: 'engine-save',
      fallback: { from: 'content-store', reason: expect.stringMatching(/fault injected/) },
    });
    cleanup(OTHER, { containers: [name], volumes: [vol] });
    const back = await ferry(['-H', OTHER, 'restore', b2]);
    expect(back.code, back.stderr).toBe(0);
    expect(files(OTHER)).toBe(want);
    expect(volumeListing(vol, OTHER)).toBe(listing);
  });
});
