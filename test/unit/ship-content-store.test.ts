/**
 * The content-store data path (issue 21): a migration to Docker with the containerd image store
 * sends an OCI archive without the layer blobs the target's content store holds. Should the
 * target refuse that archive (a blob it held when its store was read is gone by the load), the
 * whole image is sent again, and said once: never a failed migration for what was left out.
 * The target's host is a fake shell answering content-store.ts's scripts with a store that
 * holds the base layer; the load of the partial archive is made to fail, deterministically.
 */
import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { shipImage } from '../../src/data/ship.js';
import { LOCATE } from '../../src/data/content-store.js';
import { ENGINE_ONLY } from '../../src/data/paths.js';
import type { HostShell } from '../../src/hostaccess/shell.js';
import type { HostAccess } from '../../src/hostaccess/access.js';
import { silentProgress, type Progress } from '../../src/context.js';
import { EngineError } from '../../src/errors.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import { sourceEngine } from '../helpers/ops-fixtures.js';

const hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A shell whose every command prints `answer(argv)` and exits 0. */
function fakeShell(answer: (argv: string[]) => Buffer): HostShell & { runs: string[][] } {
  const runs: string[][] = [];
  return {
    where: 'the fake host',
    runs,
    run(argv) {
      runs.push(argv);
      return Promise.resolve({
        stdin: new PassThrough(),
        stdout: Readable.from([answer(argv)]),
        stderr: Readable.from([]),
        exit: Promise.resolve(0),
        kill() {},
        lost: () => undefined,
      });
    },
  };
}

/**
 * A containerd-store target holding a base image whose one layer is the source image's first
 * (same diff ID), and the content store of its host: the layer as a compressed blob, the base
 * image's manifest (its ID) and config.
 */
async function containerdTarget() {
  const target = new FakeEngine({
    endpoint: 'unix:///var/run/docker-c.sock',
    facts: { containerdStore: true, serverVersion: '26.1.5' },
  });
  const baseId = await target.addImage('shop/base:1', [{ 'app/main.js': 'serve()\n' }]);
  const diffId = (await target.inspectImage(baseId)).RootFS!.Layers![0]!;
  const blob = Buffer.from('a gzip-compressed layer, as containerd keeps it');
  const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [diffId] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: `sha256:${hex(config)}`,
        size: config.length,
      },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${hex(blob)}`, size: blob.length },
      ],
    }),
  );
  // On this store an image's ID is its manifest's digest: the base image's ID names the manifest.
  const blobs = new Map([
    [baseId.slice(7), manifest],
    [hex(config), config],
    [hex(blob), blob],
  ]);
  const dir = '/var/lib/docker-c/containerd/daemon/io.containerd.content.v1.content/blobs/sha256';
  const shell = fakeShell((argv) => {
    const script = argv[2] ?? '';
    if (script === LOCATE) return Buffer.from(`${dir}\n${[...blobs].map(([h, b]) => `${h} ${b.length}`).join('\n')}\n`);
    // READ: `<hex> <size>\n<bytes>\n` for each blob asked for.
    const out: Buffer[] = [];
    for (const h of argv.slice(5)) {
      const b = blobs.get(h);
      if (b) out.push(Buffer.from(`${h} ${b.length}\n`), b, Buffer.from('\n'));
    }
    return Buffer.concat(out);
  });
  const access: HostAccess = {
    volumes: { use: false, reason: 'not asked' },
    layers: { use: false, reason: 'not asked' },
    contentStore: { use: true, reason: 'root on the engine host' },
    shell,
  };
  return { target, access, shell };
}

function recording(): Progress & { warnings: string[]; infos: string[] } {
  const warnings: string[] = [];
  const infos: string[] = [];
  return { ...silentProgress, warnings, infos, warn: (m) => warnings.push(m), info: (m) => infos.push(m) };
}

describe('shipImage to a containerd image store', () => {
  it('sends the whole image again, saying so once, when the target refuses the archive without its layers', async () => {
    const source = await sourceEngine();
    const { target, access, shell } = await containerdTarget();
    target.failOn(
      'loadImage',
      1,
      new EngineError('load image: failed to resolve layers: content digest sha256:0a1b: not found'),
    );
    const progress = recording();
    const res = await shipImage(source, target, 'shop/app:1', progress, { access: ENGINE_ONLY }, { access });

    // The plan was the content store's: its host was read, and the first layer found there.
    expect(shell.runs.length).toBeGreaterThanOrEqual(2);
    expect(progress.infos.some((m) => /1 of 2 layers already in the content store/.test(m))).toBe(true);
    // Two loads: the partial one refused, then the whole image.
    expect(target.calls.filter((c) => c.method === 'loadImage')).toHaveLength(2);
    expect(target.loaded).toHaveLength(1);
    expect(target.loaded[0]!.filter((f) => f.endsWith('/layer.tar'))).toHaveLength(2);
    expect(res.carried.target).toEqual({
      path: 'engine-load',
      fallback: {
        from: 'content-store',
        reason: expect.stringMatching(/^the load without the layers there failed: .*failed to resolve layers/),
      },
    });
    expect(res.skippedLayers).toBe(0);
    expect(res.totalLayers).toBe(2);
    expect(res.bytes).toBeGreaterThan(0);
    expect(await target.imageExists('shop/app:1')).toBe(true);
    const said = progress.warnings.filter((m) => /sending the whole image/.test(m));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(
      /^image shop\/app:1 on unix:\/\/\/var\/run\/docker-c.sock: the load without the layers there failed/,
    );
  });

  it('does not resend when the whole load fails too: the error is the second load’s', async () => {
    const source = await sourceEngine();
    const { target, access } = await containerdTarget();
    target.failOn('loadImage', undefined, new EngineError('load image: no space left on device'), { times: 2 });
    const err = await shipImage(source, target, 'shop/app:1', recording(), { access: ENGINE_ONLY }, { access }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EngineError);
    expect((err as Error).message).toMatch(/no space left on device/);
    expect(target.calls.filter((c) => c.method === 'loadImage')).toHaveLength(2);
    expect(await target.imageExists('shop/app:1')).toBe(false);
  });

  it('an abort during the partial load is not turned into a resend', async () => {
    const source = await sourceEngine();
    const { target, access } = await containerdTarget();
    const abort = Object.assign(new Error('The operation was aborted'), { name: 'AbortError' });
    target.failOn('loadImage', 1, abort);
    const err = await shipImage(source, target, 'shop/app:1', recording(), { access: ENGINE_ONLY }, { access }).catch(
      (e: unknown) => e,
    );
    expect((err as Error).name).toBe('AbortError');
    expect(target.calls.filter((c) => c.method === 'loadImage')).toHaveLength(1);
  });
});

describe('shipImage to a classic image store (Docker 20.10)', () => {
  it('sends the whole image again when a layer the target had is gone by the load', async () => {
    // The fault matrix's concurrent migrations from engine C: a row's rollback removed the image
    // whose layer another row had just left out of its archive, and engine B's load failed with
    // "open …/docker-import-…/blobs/sha256/…: no such file or directory".
    const source = await sourceEngine();
    const target = new FakeEngine({ endpoint: 'unix:///var/run/docker-b.sock' });
    await target.addImage('shop/base:1', [{ 'app/main.js': 'serve()\n' }]);
    target.failOn(
      'loadImage',
      1,
      new EngineError(
        'load image: open /var/lib/docker-b/tmp/docker-import-1/blobs/sha256/0996b8: no such file or directory',
      ),
    );
    const progress = recording();
    const res = await shipImage(source, target, 'shop/app:1', progress, { access: ENGINE_ONLY });
    expect(target.calls.filter((c) => c.method === 'loadImage')).toHaveLength(2);
    expect(target.loaded).toHaveLength(1);
    expect(target.loaded[0]!.filter((f) => f.endsWith('/layer.tar'))).toHaveLength(2);
    expect(res.carried.target).toEqual({
      path: 'engine-load',
      fallback: { from: 'engine-load', reason: expect.stringMatching(/^the load without the layers there failed: /) },
    });
    expect(res.skippedLayers).toBe(0);
    expect(await target.imageExists('shop/app:1')).toBe(true);
    expect(progress.warnings.filter((m) => /sending the whole image/.test(m))).toHaveLength(1);
  });

  it('a load that fails when nothing was left out is not retried', async () => {
    const source = await sourceEngine();
    const target = new FakeEngine({ endpoint: 'unix:///var/run/docker-b.sock' });
    target.failOn('loadImage', 1, new EngineError('load image: no space left on device'));
    const err = await shipImage(source, target, 'shop/app:1', recording(), { access: ENGINE_ONLY }).catch(
      (e: unknown) => e,
    );
    expect((err as Error).message).toMatch(/no space left on device/);
    expect(target.calls.filter((c) => c.method === 'loadImage')).toHaveLength(1);
  });
});
