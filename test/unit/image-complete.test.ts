import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  checkedImageArchive,
  imageArchiveGaps,
  ImageIncompleteError,
  type ArchiveFile,
} from '../../src/data/image-complete.js';
import { BundleWriter } from '../../src/bundle/writer.js';
import { verifyStream } from '../../src/bundle/check.js';
import { silentProgress } from '../../src/context.js';
import { IMAGE_MEMBER, makeManifest, MemorySink, VOLUME_MEMBER } from './bundle-fixtures.js';
import { collect, packTar } from '../helpers/tar.js';

const AMD64 = { os: 'linux', architecture: 'amd64' };

function digest(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}
const hex = (d: string) => d.slice(7);

/** An OCI layout of one image: index.json → a multi-platform index → amd64 and arm64 manifests. */
function ociImage() {
  const layer1 = Buffer.from('layer one');
  const layer2 = Buffer.from('layer two!');
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { diff_ids: [] } }));
  const armLayer = Buffer.from('arm');
  const armConfig = Buffer.from('{"architecture":"arm64"}');
  const desc = (b: Buffer, mediaType: string) => ({ mediaType, digest: digest(b), size: b.length });
  const manifest = (c: Buffer, ls: Buffer[]) =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: desc(c, 'application/vnd.oci.image.config.v1+json'),
        layers: ls.map((l) => desc(l, 'application/vnd.oci.image.layer.v1.tar+gzip')),
      }),
    );
  const amd = manifest(config, [layer1, layer2]);
  const arm = manifest(armConfig, [armLayer]);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          ...desc(amd, 'application/vnd.oci.image.manifest.v1+json'),
          platform: { os: 'linux', architecture: 'amd64' },
        },
        {
          ...desc(arm, 'application/vnd.oci.image.manifest.v1+json'),
          platform: { os: 'linux', architecture: 'arm64' },
        },
      ],
    }),
  );
  const top = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [desc(index, 'application/vnd.oci.image.index.v1+json')],
    }),
  );
  const legacy = Buffer.from(
    JSON.stringify([
      {
        Config: `blobs/sha256/${hex(digest(config))}`,
        RepoTags: ['x:1'],
        Layers: [layer1, layer2].map((l) => `blobs/sha256/${hex(digest(l))}`),
      },
    ]),
  );
  const files = new Map<string, Buffer>([
    ['oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}')],
    ['index.json', top],
    ['manifest.json', legacy],
    ...[index, amd, config, layer1, layer2].map((b) => [`blobs/sha256/${hex(digest(b))}`, b] as [string, Buffer]),
  ]);
  return { files, layer1: hex(digest(layer1)), layer2: hex(digest(layer2)), config: hex(digest(config)) };
}

/** A Docker 20.10 docker-archive: manifest.json, `<id>.json`, `<v1 id>/layer.tar`. */
function legacyImage() {
  const config = Buffer.from('{"rootfs":{}}');
  const id = hex(digest(config));
  const files = new Map<string, Buffer>([
    [`${id}.json`, config],
    [`${'a'.repeat(64)}/layer.tar`, Buffer.from('base')],
    [`${'b'.repeat(64)}/layer.tar`, Buffer.from('top')],
    [
      'manifest.json',
      Buffer.from(
        JSON.stringify([
          { Config: `${id}.json`, RepoTags: ['x:1'], Layers: ['a', 'b'].map((c) => `${c.repeat(64)}/layer.tar`) },
        ]),
      ),
    ],
  ]);
  return { files, config: `${id}.json` };
}

function asFiles(m: Map<string, Buffer>): Map<string, ArchiveFile> {
  return new Map([...m].map(([k, v]) => [k, { size: v.length, body: v }]));
}

function without(m: Map<string, Buffer>, ...names: string[]): Map<string, Buffer> {
  const out = new Map(m);
  for (const n of names) expect(out.delete(n), n).toBe(true);
  return out;
}

describe('imageArchiveGaps', () => {
  it('a complete OCI layout with a legacy manifest.json (Docker 25+ save) has none', () => {
    expect(imageArchiveGaps(asFiles(ociImage().files), { platform: AMD64 })).toEqual([]);
  });

  it("needs only the engine's platform of a multi-platform index (arm64's blobs are absent)", () => {
    const { files } = ociImage();
    expect(imageArchiveGaps(asFiles(files), { platform: AMD64 })).toEqual([]);
    // For arm64 the same archive is not complete: its manifest is not there.
    expect(imageArchiveGaps(asFiles(files), { platform: { os: 'linux', architecture: 'arm64' } })).not.toEqual([]);
  });

  it('a missing layer blob is a gap, in index.json and in manifest.json', () => {
    const { files, layer2 } = ociImage();
    const gaps = imageArchiveGaps(asFiles(without(files, `blobs/sha256/${layer2}`)), { platform: AMD64 });
    expect(gaps.some((g) => g.includes(layer2.slice(0, 12)) && g.includes('layer'))).toBe(true);
    expect(gaps.some((g) => g.startsWith('manifest.json') && g.includes(layer2))).toBe(true);
  });

  it("the containerd store's save of a pulled multi-platform image: no layer blob at all", () => {
    const { files, layer1, layer2 } = ociImage();
    const gaps = imageArchiveGaps(asFiles(without(files, `blobs/sha256/${layer1}`, `blobs/sha256/${layer2}`)), {
      platform: AMD64,
    });
    expect(gaps.length).toBeGreaterThanOrEqual(2);
  });

  it('a missing config is a gap, and cannot be left out', () => {
    const { files, config } = ociImage();
    const gaps = imageArchiveGaps(asFiles(without(files, `blobs/sha256/${config}`)), {
      platform: AMD64,
      leftOut: new Set([config]),
    });
    expect(gaps.some((g) => g.includes('config'))).toBe(true);
  });

  it('a layer blob of the wrong size is a gap', () => {
    const { files, layer1 } = ociImage();
    const f = asFiles(files);
    f.set(`blobs/sha256/${layer1}`, { size: 3 });
    expect(imageArchiveGaps(f, { platform: AMD64 }).some((g) => g.includes('bytes in the archive'))).toBe(true);
  });

  it('OCI only (no manifest.json): complete, and a missing layer is a gap', () => {
    const { files, layer1 } = ociImage();
    const oci = without(files, 'manifest.json');
    expect(imageArchiveGaps(asFiles(oci), { platform: AMD64 })).toEqual([]);
    expect(imageArchiveGaps(asFiles(without(oci, `blobs/sha256/${layer1}`)), { platform: AMD64 })).toHaveLength(1);
  });

  it('legacy only (Docker 20.10 save): complete, and a missing layer or config is a gap', () => {
    const { files, config } = legacyImage();
    expect(imageArchiveGaps(asFiles(files))).toEqual([]);
    expect(imageArchiveGaps(asFiles(without(files, `${'a'.repeat(64)}/layer.tar`)))).toEqual([
      `manifest.json: the layer ${'a'.repeat(64)}/layer.tar is not in the archive`,
    ]);
    expect(imageArchiveGaps(asFiles(without(files, config)))).toEqual([
      `manifest.json: the config ${config} is not in the archive`,
    ]);
  });

  it('neither manifest.json nor index.json: a gap', () => {
    expect(imageArchiveGaps(asFiles(new Map([['x', Buffer.from('y')]])))).toHaveLength(1);
  });

  it('a migration: layers left out on purpose (the target holds them) count as there, no others', () => {
    const { files, layer1, layer2 } = ociImage();
    const sent = without(files, `blobs/sha256/${layer1}`);
    expect(imageArchiveGaps(asFiles(sent), { platform: AMD64, leftOut: new Set([layer1]) })).toEqual([]);
    expect(imageArchiveGaps(asFiles(sent), { platform: AMD64, leftOut: new Set([layer2]) })).not.toEqual([]);
    const legacy = legacyImage().files;
    const partial = without(legacy, `${'a'.repeat(64)}/layer.tar`);
    expect(imageArchiveGaps(asFiles(partial), { leftOut: new Set(['a'.repeat(64)]) })).toEqual([]);
  });
});

const tarOf = (files: Map<string, Buffer>) => packTar([...files].map(([name, data]) => ({ name, data })));

describe('checkedImageArchive', () => {
  it('passes a complete archive through byte for byte', async () => {
    const bytes = await tarOf(ociImage().files);
    const out = await collect(checkedImageArchive(Readable.from([bytes]), 'image x:1', { platform: AMD64 }));
    expect(out.equals(bytes)).toBe(true);
  });

  it("fails an incomplete one with ImageIncompleteError, before the archive's end passes", async () => {
    const { files, layer1, layer2 } = ociImage();
    const big = new Map(files);
    // Enough bytes before the end that some pass before the check: never the end-of-archive blocks.
    big.set('filler', Buffer.alloc(200_000, 1));
    const bytes = await tarOf(without(big, `blobs/sha256/${layer1}`, `blobs/sha256/${layer2}`));
    const chunks: Buffer[] = [];
    const s = checkedImageArchive(Readable.from([bytes.subarray(0, 100_000), bytes.subarray(100_000)]), 'image x:1', {
      platform: AMD64,
    });
    const err = await new Promise<unknown>((resolve) => {
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => resolve(undefined));
      s.on('error', resolve);
    });
    expect(err).toBeInstanceOf(ImageIncompleteError);
    expect((err as ImageIncompleteError).message).toContain('image x:1');
    expect((err as ImageIncompleteError).exitCode).toBe(4);
    const passed = Buffer.concat(chunks);
    expect(passed.length).toBeGreaterThan(0);
    expect(passed.length).toBeLessThanOrEqual(bytes.length - 1024);
  });

  it('does not read its source before it is read itself', async () => {
    let reads = 0;
    const src = new Readable({
      read() {
        reads++;
        this.push(null);
      },
    });
    const s = checkedImageArchive(src, 'image x:1');
    await new Promise((r) => setTimeout(r, 20));
    expect(reads).toBe(0);
    s.destroy();
  });
});

describe('ferry verify of an image member', () => {
  async function verifyImage(image: Buffer) {
    const sink = new MemorySink(true);
    const w = new BundleWriter(
      sink,
      makeManifest([
        { name: VOLUME_MEMBER, kind: 'volume', codec: 'none' },
        { name: IMAGE_MEMBER, kind: 'image', codec: 'gzip' },
      ]),
    );
    await w.begin();
    await w.addMember(VOLUME_MEMBER, Readable.from([await tarOf(new Map([['f', Buffer.from('x')]]))]), 'none');
    await w.addMember(IMAGE_MEMBER, Readable.from([image]), 'gzip');
    await w.finish();
    const r = await verifyStream(Readable.from([sink.data]), 'mem', {
      progress: silentProgress,
      signal: new AbortController().signal,
    });
    return { ok: r.ok, member: r.members.find((m) => m.name === IMAGE_MEMBER)! };
  }

  it('a complete OCI layout (Docker 25+ save) is whole', async () => {
    const r = await verifyImage(await tarOf(ociImage().files));
    expect(r.member.problems).toEqual([]);
    expect(r.ok).toBe(true);
  });

  it("the containerd store's save without layer blobs is damaged, whatever manifest.json says", async () => {
    const { files, layer1, layer2 } = ociImage();
    const bare = without(files, `blobs/sha256/${layer1}`, `blobs/sha256/${layer2}`);
    const r = await verifyImage(await tarOf(bare));
    expect(r.ok).toBe(false);
    expect(r.member.problems.some((p) => p.includes(layer1))).toBe(true);
    // With manifest.json naming only what is there, index.json's manifest still gives it away.
    const legacyFine = new Map(bare);
    legacyFine.set(
      'manifest.json',
      Buffer.from(JSON.stringify([{ Config: `blobs/sha256/${ociImage().config}`, RepoTags: ['x:1'], Layers: [] }])),
    );
    const r2 = await verifyImage(await tarOf(legacyFine));
    expect(r2.ok).toBe(false);
    expect(r2.member.problems.some((p) => p.startsWith('incomplete image:') && p.includes(layer2.slice(0, 12)))).toBe(
      true,
    );
  });
});
