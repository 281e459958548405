/**
 * readContentStore against a containerd content store laid out in a temporary directory, read
 * with the real host scripts on this machine: which blob holds each layer the target has, for an
 * image that is a multi-platform index (Docker 25+ with the containerd store), including an index
 * nested in another (an OCI archive's index.json naming the image's own index), whose other
 * platforms' manifests the store never fetched.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readContentStore } from '../../src/data/content-store.js';
import { isRefused } from '../../src/data/paths.js';
import type { Engine } from '../../src/engine/engine.js';
import type { HostAccess } from '../../src/hostaccess/access.js';
import { localShell } from '../../src/hostaccess/shell.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

let root: string;
let blobs: string;

/** Put a blob in the store: its descriptor. */
function put(data: Buffer | object, mediaType: string) {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(JSON.stringify(data));
  writeFileSync(path.join(blobs, sha(b)), b);
  return { mediaType, digest: `sha256:${sha(b)}`, size: b.length };
}

/** A descriptor of a blob the store does not hold (another platform's, never fetched). */
function absent(data: object, mediaType: string) {
  const b = Buffer.from(JSON.stringify(data));
  return { mediaType, digest: `sha256:${sha(b)}`, size: b.length };
}

const access = (): HostAccess => ({
  volumes: { use: false, reason: 'not in this test' },
  layers: { use: false, reason: 'not in this test' },
  contentStore: { use: true, reason: 'root on this host' },
  shell: localShell,
});

/** An amd64 image: a layer (gzip-compressed, so its blob's digest is not its diff ID) and its manifest. */
function image(content: string) {
  const tar = Buffer.from(content.padEnd(1024, '\0'));
  const diffId = `sha256:${sha(tar)}`;
  const layer = put(gzipSync(tar), 'application/vnd.oci.image.layer.v1.tar+gzip');
  const config = put(
    { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } },
    'application/vnd.oci.image.config.v1+json',
  );
  const manifest = put({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] }, OCI_MANIFEST);
  const arm64 = absent({ schemaVersion: 2, mediaType: OCI_MANIFEST, arm64: content }, OCI_MANIFEST);
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { ...manifest, platform: { architecture: 'amd64', os: 'linux' } },
      { ...arm64, platform: { architecture: 'arm64', os: 'linux' } },
    ],
  };
  return { diffId, layer, index };
}

/** The engine as readContentStore sees it: its facts, and an inspect giving the image's diff IDs. */
function engine(diffIds: Record<string, string[]>): Engine {
  return {
    facts: { endpoint: 'test', os: 'linux', arch: 'amd64', rootDir: root },
    inspectImage: async (id: string) => ({ Id: id, RootFS: { Type: 'layers', Layers: diffIds[id] ?? [] } }),
  } as unknown as Engine;
}

beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'ferry-content-store-'));
  blobs = path.join(root, 'containerd', 'daemon', 'io.containerd.content.v1.content', 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

// 60 s a test: the host scripts scan /proc for running containerds, slow on a busy machine.
describe('readContentStore: which blob holds each layer the target has', () => {
  it("an image that is a multi-platform index: this platform's blob, the other platform's manifest absent", async () => {
    const img = image('one level');
    const id = `sha256:${sha(Buffer.from(JSON.stringify(img.index)))}`;
    put(img.index, OCI_INDEX);
    const view = await readContentStore(engine({ [id]: [img.diffId] }), [img.diffId], access(), { images: [id] });
    if (isRefused(view)) throw new Error(view.refused);
    expect(view.layers.get(img.diffId)).toEqual(img.layer);
  }, 60_000);

  it('an index nested in an index: followed to the manifest of this platform', async () => {
    const img = image('nested');
    const inner = put(img.index, OCI_INDEX);
    const outer = put({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [inner] }, OCI_INDEX);
    const view = await readContentStore(engine({ [outer.digest]: [img.diffId] }), [img.diffId], access(), {
      images: [outer.digest],
    });
    if (isRefused(view)) throw new Error(view.refused);
    expect(view.layers.get(img.diffId)).toEqual(img.layer);
    expect(view.named.get(img.layer.digest.slice(7))).toBe(img.diffId);
  }, 60_000);
});
