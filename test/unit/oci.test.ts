/**
 * OCI layouts for the containerd image store (src/data/oci.ts), and what ferry reads of a content
 * store on the engine's host (src/data/content-store.ts): which blob holds which layer, and an
 * image archive rewritten to leave out the layers the target's store holds.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  containerdName,
  isIndex,
  isManifest,
  layerBlobsByDiffId,
  manifestsFor,
  OCI_LAYER_TAR,
  OciConvertError,
  toOciArchive,
  type Descriptor,
  type OciPlan,
} from '../../src/data/oci.js';
import { parseBlobs, parseListing } from '../../src/data/content-store.js';
import { contentStoreRefusal } from '../../src/hostaccess/refusals.js';
import { chainIds, savesOciLayout, v1LayerIds } from '../../src/data/ship.js';
import { packTar, tarFiles } from '../helpers/tar.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hex = (d: string) => d.slice(7);

describe('containerdName: the name the containerd store gives a reference', () => {
  it('makes the registry explicit, with library/ for official images', () => {
    expect(containerdName('busybox:1')).toBe('docker.io/library/busybox:1');
    expect(containerdName('ferry/web:20240301T000000Z')).toBe('docker.io/ferry/web:20240301T000000Z');
    expect(containerdName('127.0.0.1:5000/a/b:1')).toBe('127.0.0.1:5000/a/b:1');
    expect(containerdName('registry.example/x:2')).toBe('registry.example/x:2');
    expect(containerdName('localhost/x:2')).toBe('localhost/x:2');
  });
});

describe('layerBlobsByDiffId: which blob of a manifest holds which layer', () => {
  const gz = (n: string): Descriptor => ({
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    digest: sha(`gz-${n}`),
    size: 10 + n.length,
  });
  it("pairs the manifest's layers with the config's diff IDs, in order", () => {
    const m = { layers: [gz('a'), gz('bb')] };
    const map = layerBlobsByDiffId(m, { rootfs: { diff_ids: [sha('a'), sha('bb')] } });
    expect([...map.entries()]).toEqual([
      [sha('a'), gz('a')],
      [sha('bb'), gz('bb')],
    ]);
  });
  it('pairs nothing when the two do not have as many entries, or a digest is not sha256', () => {
    expect(layerBlobsByDiffId({ layers: [gz('a')] }, { rootfs: { diff_ids: [sha('a'), sha('b')] } }).size).toBe(0);
    expect(layerBlobsByDiffId({ layers: [gz('a')] }, {}).size).toBe(0);
    const odd = { mediaType: OCI_LAYER_TAR, digest: 'sha512:00', size: 1 };
    expect(layerBlobsByDiffId({ layers: [odd] }, { rootfs: { diff_ids: [sha('a')] } }).size).toBe(0);
  });
  it('tells an index from a manifest, and picks the platform of an index', () => {
    const index = {
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { ...gz('amd'), platform: { os: 'linux', architecture: 'amd64' } },
        { ...gz('arm'), platform: { os: 'linux', architecture: 'arm64' } },
        { ...gz('att'), platform: { os: 'unknown', architecture: 'unknown' } },
      ],
    };
    expect(isIndex(index)).toBe(true);
    expect(isManifest(index)).toBe(false);
    expect(manifestsFor(index, { os: 'linux', architecture: 'amd64' })).toEqual([index.manifests[0]]);
    const manifest = { schemaVersion: 2, config: gz('c'), layers: [gz('a')] };
    expect(isManifest(manifest)).toBe(true);
    expect(isIndex(manifest)).toBe(false);
  });
});

describe('parseListing and parseBlobs: what the host scripts print', () => {
  it("the store's directory, then each blob's digest and size", () => {
    const a = 'a'.repeat(64);
    const b = 'b'.repeat(64);
    const got = parseListing(
      `/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256\n${a} 12\n${b} 0\nnoise\n`,
    );
    expect(got?.dir).toBe('/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256');
    expect([...got!.sizes.entries()]).toEqual([
      [a, 12],
      [b, 0],
    ]);
    expect(parseListing('')).toBeUndefined();
  });
  it('each blob by its header line, whatever bytes it holds (newlines included)', () => {
    const a = 'a'.repeat(64);
    const b = 'b'.repeat(64);
    const out = Buffer.concat([
      Buffer.from(`${a} 5\nx\ny\nz\n`),
      Buffer.from(`${b} 2\n{}\n`),
      Buffer.from(`${'c'.repeat(64)} 99\nshort`),
    ]);
    const got = parseBlobs(out);
    expect(got.get(a)?.toString()).toBe('x\ny\nz');
    expect(got.get(b)?.toString()).toBe('{}');
    expect(got.size).toBe(2);
  });
});

describe('contentStoreRefusal: where the content store is read', () => {
  const shell = { where: 'this host', run: () => Promise.reject(new Error('no')) };
  it('only on the containerd store, on a reachable host, not switched off, ids not remapped', () => {
    expect(contentStoreRefusal({ containerdStore: true, remapped: false }, shell, undefined)).toBeUndefined();
    expect(contentStoreRefusal({ containerdStore: false, remapped: false }, shell, undefined)).toMatch(
      /not the containerd/,
    );
    expect(contentStoreRefusal({ containerdStore: true, remapped: false }, shell, 'off')).toBe('FERRY_HOST_LAYERS=off');
    expect(contentStoreRefusal({ containerdStore: true, remapped: false }, undefined, undefined)).toMatch(/TCP/);
    expect(contentStoreRefusal({ containerdStore: true, remapped: true }, shell, undefined)).toMatch(/remapped/);
  });
  it('an OCI save: Docker 25 and newer, and the containerd store; not Podman or 20.10', () => {
    expect(savesOciLayout({ containerdStore: true, podman: false, serverVersion: '26.1.5+dfsg1' })).toBe(true);
    expect(savesOciLayout({ containerdStore: false, podman: false, serverVersion: '25.0.3' })).toBe(true);
    expect(savesOciLayout({ containerdStore: false, podman: false, serverVersion: '20.10.24+dfsg1' })).toBe(false);
    expect(savesOciLayout({ containerdStore: false, podman: true, serverVersion: '5.4.0' })).toBe(false);
  });
});

/** A Docker 20.10 `docker save` of one image: v1 folders, the config, manifest.json. */
async function dockerArchive(layers: Buffer[], opts: { topDir?: string } = {}) {
  const diffIds = layers.map((l) => sha(l));
  const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: diffIds } }));
  const id = sha(config);
  const v1 = v1LayerIds(diffIds);
  const dirs = layers.map((_, i) => (i < v1.length ? v1[i]! : (opts.topDir ?? 'f'.repeat(64))));
  const archive = await packTar([
    ...layers.flatMap((l, i) => [
      { name: `${dirs[i]}/VERSION`, data: '1.0' },
      { name: `${dirs[i]}/layer.tar`, data: l },
    ]),
    { name: `${hex(id)}.json`, data: config },
    {
      name: 'manifest.json',
      data: JSON.stringify([{ Config: `${hex(id)}.json`, Layers: dirs.map((d) => `${d}/layer.tar`) }]),
    },
  ]);
  return { archive, diffIds, id, config, dirs };
}

describe('toOciArchive: a docker-archive as an OCI layout without the layers the target holds', () => {
  const layers = [Buffer.from('base layer'.repeat(100)), Buffer.from('middle'), Buffer.from('top layer')];
  const theirs: Descriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha('gz'), size: 7 };

  async function plan(reuse: Map<number, Descriptor>, topDir?: string) {
    const a = await dockerArchive(layers, { topDir });
    const layerDirs = new Map<string, number>();
    for (const [i, c] of chainIds(a.diffIds).entries()) layerDirs.set(hex(c), i);
    for (const [i, v] of v1LayerIds(a.diffIds).entries()) layerDirs.set(v, i);
    const p: OciPlan = { ref: 'ferry/web:1', configDigest: a.id, diffIds: a.diffIds, reuse, layerDirs };
    return { a, p };
  }

  it("sends the other layers as blobs named by diff ID, and names the target's own blob for the rest", async () => {
    const { a, p } = await plan(new Map([[0, theirs]]));
    const out = await tarFiles(toOciArchive(Readable.from([a.archive]), p));
    expect(out.has(`blobs/sha256/${hex(a.diffIds[0]!)}`)).toBe(false);
    expect(out.get(`blobs/sha256/${hex(a.diffIds[1]!)}`)).toEqual(layers[1]);
    expect(out.get(`blobs/sha256/${hex(a.diffIds[2]!)}`)).toEqual(layers[2]);
    expect(out.get(`blobs/sha256/${hex(a.id)}`)).toEqual(a.config);
    expect(JSON.parse(out.get('oci-layout')!.toString())).toEqual({ imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(out.get('index.json')!.toString()) as {
      manifests: { digest: string; annotations: Record<string, string> }[];
    };
    expect(index.manifests[0]!.annotations['io.containerd.image.name']).toBe('docker.io/ferry/web:1');
    const manifestBytes = out.get(`blobs/sha256/${hex(index.manifests[0]!.digest)}`)!;
    expect(sha(manifestBytes)).toBe(index.manifests[0]!.digest);
    const manifest = JSON.parse(manifestBytes.toString()) as { config: Descriptor; layers: Descriptor[] };
    expect(manifest.config).toMatchObject({ digest: a.id, size: a.config.length });
    expect(manifest.layers).toEqual([
      theirs,
      { mediaType: OCI_LAYER_TAR, digest: a.diffIds[1], size: layers[1]!.length },
      { mediaType: OCI_LAYER_TAR, digest: a.diffIds[2], size: layers[2]!.length },
    ]);
    // Nothing of the docker-archive's own files is left.
    expect([...out.keys()].filter((k) => !k.startsWith('blobs/') && k !== 'index.json' && k !== 'oci-layout')).toEqual(
      [],
    );
  });

  it('fails, before the index, when a layer is not what the image says', async () => {
    const { a, p } = await plan(new Map());
    const wrong = { ...p, diffIds: [p.diffIds[0]!, sha('something else'), p.diffIds[2]!] };
    await expect(tarFiles(toOciArchive(Readable.from([a.archive]), wrong))).rejects.toBeInstanceOf(OciConvertError);
  });

  it('fails when the archive is another image (its config is not the one planned)', async () => {
    const { a, p } = await plan(new Map());
    await expect(tarFiles(toOciArchive(Readable.from([a.archive]), { ...p, configDigest: sha('x') }))).rejects.toThrow(
      /no config/,
    );
  });

  it('fails when two folders are not the ones it can name (only the top layer may be)', async () => {
    const { a, p } = await plan(new Map());
    const layerDirs = new Map([...p.layerDirs].filter(([, i]) => i !== 1));
    await expect(tarFiles(toOciArchive(Readable.from([a.archive]), { ...p, layerDirs }))).rejects.toBeInstanceOf(
      OciConvertError,
    );
  });
});
