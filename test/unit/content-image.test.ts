/**
 * The source's side of the content-store path (issue 21): an image read straight from
 * containerd's content store on the engine's host. The host is a fake shell answering
 * content-store.ts's scripts and `cat` of a blob from an in-memory store holding a multi-platform
 * image (an index, the amd64 manifest, its config, two layer blobs; the arm64 manifest not
 * fetched).
 */
import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ContentStoreMismatch,
  contentArchiveIndexes,
  layerBlobsToSend,
  openContentImageArchive,
  resolveStoredImage,
  withStoredLayers,
} from '../../src/data/content-image.js';
import { LOCATE } from '../../src/data/content-store.js';
import { isRefused } from '../../src/data/paths.js';
import { saveImage } from '../../src/data/save.js';
import type { Engine, ImageInspect } from '../../src/engine/engine.js';
import type { HostShell } from '../../src/hostaccess/shell.js';
import type { HostAccess } from '../../src/hostaccess/access.js';
import { silentProgress } from '../../src/context.js';
import { faultHook, faults } from '../../src/util/fault.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import { untar } from '../helpers/ops-fixtures.js';
import { collect } from '../helpers/tar.js';

const hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const DIR = '/var/lib/docker-c/containerd/daemon/io.containerd.content.v1.content/blobs/sha256';

function store() {
  const layers = [Buffer.from('the base layer, gzip-compressed'), Buffer.from('the top layer, 10 KiB of it')];
  const diffIds = [`sha256:${hex('base tar')}`, `sha256:${hex('top tar')}`];
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: `sha256:${hex(config)}`,
        size: config.length,
      },
      layers: layers.map((l) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: `sha256:${hex(l)}`,
        size: l.length,
      })),
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${hex('an arm64 manifest never fetched')}`,
          size: 400,
          platform: { os: 'linux', architecture: 'arm64' },
        },
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${hex(manifest)}`,
          size: manifest.length,
          platform: { os: 'linux', architecture: 'amd64' },
        },
      ],
    }),
  );
  const blobs = new Map<string, Buffer>([index, manifest, config, ...layers].map((b) => [hex(b), b]));
  const img = { Id: `sha256:${hex(index)}`, RootFS: { Type: 'layers', Layers: diffIds } } as ImageInspect;
  return { blobs, img, index, manifest, config, layers, diffIds };
}

/** A shell on a host whose content store holds `blobs`; `cat` of a blob gives `catted(hex)` (default: the blob). */
function storeShell(
  blobs: Map<string, Buffer>,
  catted?: (h: string) => Buffer | undefined,
): HostShell & { cats: string[] } {
  const cats: string[] = [];
  const answer = (argv: string[]): { out: Buffer; code: number } => {
    if (argv[0] === 'cat') {
      const h = argv[2]!.slice(DIR.length + 1);
      cats.push(h);
      const b = catted ? catted(h) : blobs.get(h);
      return b ? { out: b, code: 0 } : { out: Buffer.alloc(0), code: 1 };
    }
    if (argv[2] === LOCATE)
      return { out: Buffer.from(`${DIR}\n${[...blobs].map(([h, b]) => `${h} ${b.length}`).join('\n')}\n`), code: 0 };
    const out: Buffer[] = [];
    for (const h of argv.slice(5)) {
      const b = blobs.get(h);
      if (b) out.push(Buffer.from(`${h} ${b.length}\n`), b, Buffer.from('\n'));
    }
    return { out: Buffer.concat(out), code: 0 };
  };
  return {
    where: 'the fake host',
    cats,
    run(argv) {
      const { out, code } = answer(argv);
      return Promise.resolve({
        stdin: new PassThrough(),
        stdout: Readable.from([out]),
        stderr: Readable.from([]),
        exit: Promise.resolve(code),
        kill() {},
        lost: () => undefined,
      });
    },
  };
}

function accessVia(shell: HostShell, use = true): HostAccess {
  return {
    volumes: { use: false, reason: 'not asked' },
    layers: { use: false, reason: 'not Docker’s own overlay2 layer store' },
    contentStore: use
      ? { use: true, reason: 'root on the engine host' }
      : { use: false, reason: 'FERRY_HOST_LAYERS=0' },
    shell,
  };
}

const engineC = {
  facts: { endpoint: 'unix:///var/run/docker-c.sock', os: 'linux', arch: 'amd64' },
  listImages: () => Promise.resolve([]),
} as unknown as Engine;

afterEach(() => {
  delete faults.hook;
});

describe('resolveStoredImage', () => {
  it('goes from the index to the platform’s manifest whose config names the image’s layers', async () => {
    const s = store();
    const read = (hs: string[]) =>
      Promise.resolve(new Map(hs.flatMap((h) => (s.blobs.has(h) ? [[h, s.blobs.get(h)!]] : []))));
    const r = await resolveStoredImage(s.img.Id, s.diffIds, { os: 'linux', architecture: 'amd64' }, read);
    if (typeof r === 'string') throw new Error(r);
    expect(r.top).toEqual({
      mediaType: 'application/vnd.oci.image.index.v1+json',
      digest: s.img.Id,
      size: s.index.length,
    });
    expect(r.manifest.digest).toBe(`sha256:${hex(s.manifest)}`);
    expect(r.config.digest).toBe(`sha256:${hex(s.config)}`);
    expect(r.layers.map((l) => l.digest)).toEqual(s.layers.map((l) => `sha256:${hex(l)}`));
    // Another platform, or layers that do not match the engine's inspect: not this image.
    expect(await resolveStoredImage(s.img.Id, s.diffIds, { os: 'linux', architecture: 'arm64' }, read)).toMatch(
      /no manifest of the image/,
    );
    expect(await resolveStoredImage(s.img.Id, [s.diffIds[0]!], { os: 'linux', architecture: 'amd64' }, read)).toMatch(
      /no manifest of the image/,
    );
    // A blob whose bytes are not its digest is as good as missing.
    const lying = (hs: string[]) =>
      read(hs).then((m) => new Map([...m].map(([h, b]) => [h, h === hex(s.index) ? Buffer.from('{}') : b])));
    expect(await resolveStoredImage(s.img.Id, s.diffIds, { os: 'linux', architecture: 'amd64' }, lying)).toMatch(
      /not in the store/,
    );
  });
});

describe('layerBlobsToSend', () => {
  it('leaves out what it is told to, by layer or by blob, and sends a shared blob once', () => {
    const d = (h: string) => ({ mediaType: 'x', digest: `sha256:${h.repeat(64)}`, size: 1 });
    const layers = [d('a'), d('b'), d('a'), d('c')];
    expect(layerBlobsToSend(layers, () => false)).toEqual({ send: [d('a'), d('b'), d('c')], left: 0 });
    expect(layerBlobsToSend(layers, (i) => i < 2)).toEqual({ send: [d('a'), d('c')], left: 2 });
    expect(layerBlobsToSend(layers, (_i, h) => h === 'c'.repeat(64))).toEqual({ send: [d('a'), d('b')], left: 1 });
  });
});

describe('openContentImageArchive', () => {
  it('gives the engine save’s shape with only the blobs not left out, each checked', async () => {
    const s = store();
    const shell = storeShell(s.blobs);
    const a = await openContentImageArchive(
      engineC,
      s.img,
      'shop/app:2',
      (i) => i === 0,
      silentProgress,
      accessVia(shell),
    );
    if (isRefused(a)) throw new Error(a.refused);
    expect(a.leftOut).toBe(1);
    const files = await untar(await collect(a.stream));
    const blob = (b: Buffer) => `blobs/sha256/${hex(b)}`;
    expect([...files.keys()].sort()).toEqual(
      [
        blob(s.layers[1]!),
        blob(s.index),
        blob(s.manifest),
        blob(s.config),
        'oci-layout',
        'index.json',
        'manifest.json',
      ].sort(),
    );
    for (const [name, f] of files) if (name.startsWith('blobs/')) expect(hex(f.data)).toBe(name.slice(13));
    // Only the sent layer was read with cat: the base layer's blob was never opened.
    expect(shell.cats).toEqual([hex(s.layers[1]!)]);
    expect(JSON.parse(files.get('index.json')!.data.toString())).toEqual({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.index.v1+json',
          digest: s.img.Id,
          size: s.index.length,
          annotations: { 'io.containerd.image.name': 'docker.io/shop/app:2', 'org.opencontainers.image.ref.name': '2' },
        },
      ],
    });
    // The legacy manifest names every layer, the one left out too (Docker 20.10's load opens only those it lacks).
    expect(JSON.parse(files.get('manifest.json')!.data.toString())).toEqual([
      { Config: blob(s.config), RepoTags: ['shop/app:2'], Layers: s.layers.map(blob) },
    ]);
    expect(JSON.parse(files.get('oci-layout')!.data.toString())).toEqual({ imageLayoutVersion: '1.0.0' });
  });

  it('fails with ContentStoreMismatch, before any manifest, when a blob streams with another digest', async () => {
    const s = store();
    const top = hex(s.layers[1]!);
    const shell = storeShell(s.blobs, (h) =>
      h === top ? Buffer.from(s.layers[1]!.toString().toUpperCase()) : s.blobs.get(h),
    );
    const a = await openContentImageArchive(
      engineC,
      s.img,
      'shop/app:2',
      () => false,
      silentProgress,
      accessVia(shell),
    );
    if (isRefused(a)) throw new Error(a.refused);
    const got: Buffer[] = [];
    const err = await (async () => {
      for await (const c of a.stream) got.push(c as Buffer);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ContentStoreMismatch);
    expect(a.mismatch()).toBe(err);
    expect((err as Error).message).toMatch(new RegExp(`blob ${top.slice(0, 12)} read from .* has the digest`));
    const bytes = Buffer.concat(got).toString('latin1');
    expect(bytes).not.toContain('index.json');
    expect(bytes).not.toContain('manifest.json');
  });

  it('fails the same when a blob is short or cannot be read', async () => {
    const s = store();
    const top = hex(s.layers[1]!);
    for (const catted of [
      (h: string) => (h === top ? s.layers[1]!.subarray(3) : s.blobs.get(h)),
      (h: string) => (h === top ? undefined : s.blobs.get(h)),
    ]) {
      const a = await openContentImageArchive(
        engineC,
        s.img,
        'shop/app:2',
        () => false,
        silentProgress,
        accessVia(storeShell(s.blobs, catted)),
      );
      if (isRefused(a)) throw new Error(a.refused);
      const err = await collect(a.stream).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ContentStoreMismatch);
    }
  });

  it('refuses before the first byte where the store is not read or lacks a blob to send', async () => {
    const s = store();
    const off = await openContentImageArchive(
      engineC,
      s.img,
      'shop/app:2',
      () => false,
      silentProgress,
      accessVia(storeShell(s.blobs), false),
    );
    expect(off).toEqual({ refused: 'FERRY_HOST_LAYERS=0' });
    const without = new Map(s.blobs);
    without.delete(hex(s.layers[1]!));
    const lacking = await openContentImageArchive(
      engineC,
      s.img,
      'shop/app:2',
      () => false,
      silentProgress,
      accessVia(storeShell(without)),
    );
    expect(isRefused(lacking) && lacking.refused).toMatch(/layer blob .* is not in/);
    // Left out, the blob the store lacks is not needed.
    const partial = await openContentImageArchive(
      engineC,
      s.img,
      'shop/app:2',
      (i) => i === 1,
      silentProgress,
      accessVia(storeShell(without)),
    );
    expect(isRefused(partial)).toBe(false);
  });

  it('the fault point content-store-blob fails the path half-way, as its own failure', async () => {
    const s = store();
    faults.hook = faultHook('content-store-blob', new AbortController().signal, () => {});
    const a = await openContentImageArchive(
      engineC,
      s.img,
      'shop/app:2',
      () => false,
      silentProgress,
      accessVia(storeShell(s.blobs)),
    );
    if (isRefused(a)) throw new Error(a.refused);
    const err = await collect(a.stream).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ContentStoreMismatch);
    expect((err as Error).message).toMatch(/fault injected at content-store-blob/);
  });
});

describe('saveImage on the containerd image store', () => {
  async function engineWithStore() {
    const s = store();
    const engine = new FakeEngine({
      endpoint: 'unix:///var/run/docker-c.sock',
      facts: { containerdStore: true, serverVersion: '26.1.5', os: 'linux', arch: 'amd64' },
    });
    await engine.addImage('shop/app:2', [{ 'app/main.js': 'serve()\n' }]);
    // On this store the image's ID is its index's digest: inspect says so.
    const real = engine.inspectImage.bind(engine);
    engine.inspectImage = async (ref: string) => ({ ...(await real(ref)), Id: s.img.Id, RootFS: s.img.RootFS });
    return { s, engine };
  }

  it('reads the content store into a rewindable bundle, and refuses a stream', async () => {
    const { s, engine } = await engineWithStore();
    const via = { access: accessVia(storeShell(s.blobs)) };
    const saved = await saveImage(engine, 'shop/app:2', silentProgress, { rewritable: true }, via);
    expect(saved.carried).toEqual({ path: 'content-store' });
    const files = await untar(await collect(saved.stream));
    expect(files.has('index.json')).toBe(true);
    expect(files.has(`blobs/sha256/${hex(s.layers[0]!)}`)).toBe(true);
    const streamed = await saveImage(engine, 'shop/app:2', silentProgress, { rewritable: false }, via);
    expect(streamed.carried).toEqual({
      path: 'engine-save',
      fallback: { from: 'content-store', reason: expect.stringMatching(/written to a stream/) },
    });
  });

  it('a blob that streams wrong calls for the engine’s save, from the start', async () => {
    const { s, engine } = await engineWithStore();
    const shell = storeShell(s.blobs, (h) =>
      h === hex(s.layers[0]!) ? Buffer.alloc(s.layers[0]!.length) : s.blobs.get(h),
    );
    const saved = await saveImage(
      engine,
      'shop/app:2',
      silentProgress,
      { rewritable: true },
      { access: accessVia(shell) },
    );
    const err = await collect(saved.stream).catch((e: unknown) => e);
    expect(saved.fallback!.when(err)).toBe(true);
    const again = await collect(await saved.fallback!.open(err));
    expect(saved.carried).toEqual({
      path: 'engine-save',
      fallback: { from: 'content-store', reason: expect.stringMatching(/has the digest/) },
    });
    // The engine's save: the fake's docker-archive of the image.
    expect((await untar(again)).has('manifest.json')).toBe(true);
    expect(engine.calls.filter((c) => c.method === 'saveImages')).toHaveLength(1);
  });
});

describe('withStoredLayers', () => {
  const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
  const gz = (s: string) => ({
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    digest: sha(`gz ${s}`),
    size: 10,
  });
  const diffIds = [sha('base'), sha('top')];
  const manifest = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha('m'), size: 300 };
  const img = {
    top: { mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha('index'), size: 500 },
    docs: new Map<string, Buffer>(),
    manifest,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('config'), size: 200 },
    layers: [gz('base'), gz('top')],
    diffIds,
  };

  it('keeps the image as it is where the store holds every layer blob', () => {
    const sizes = new Map(img.layers.map((l) => [l.digest.slice(7), l.size]));
    expect(withStoredLayers(img, diffIds, (h) => sizes.get(h))).toBe(img);
  });

  it('takes a layer whose blob the store lacks from its diff ID blob, under a manifest of its own', () => {
    // The pulled multi-platform image: the base layer's gzip blob never fetched, its uncompressed
    // blob there (loaded with another image).
    const sizes = new Map([
      [img.layers[1]!.digest.slice(7), 10],
      [diffIds[0]!.slice(7), 4096],
    ]);
    const got = withStoredLayers(img, diffIds, (h) => sizes.get(h));
    if (typeof got === 'string') throw new Error(got);
    expect(got.layers).toEqual([
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: diffIds[0], size: 4096 },
      img.layers[1],
    ]);
    // Its own manifest, in docs, is the archive's top; it names the config and those layers.
    expect(got.top).toEqual(got.manifest);
    const doc = JSON.parse(got.docs.get(got.manifest.digest.slice(7))!.toString()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    expect(sha256Of(got.docs.get(got.manifest.digest.slice(7))!)).toBe(got.manifest.digest);
    expect(doc.config.digest).toBe(img.config.digest);
    expect(doc.layers.map((l) => l.digest)).toEqual([diffIds[0], img.layers[1]!.digest]);
  });

  it('says which layer the store holds neither way; a layer left out is not needed', () => {
    const sizes = new Map([[img.layers[1]!.digest.slice(7), 10]]);
    expect(withStoredLayers(img, diffIds, (h) => sizes.get(h))).toMatch(
      /layer blob .* \(layer 0, .*is not in the store/,
    );
    expect(
      withStoredLayers(
        img,
        diffIds,
        (h) => sizes.get(h),
        (i) => i === 0,
      ),
    ).toBe(img);
  });
});

function sha256Of(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}
