/**
 * ferry restore against the in-memory engine, from a bundle the backup op wrote from another
 * fake: the order of its steps, what the target holds afterwards, the rollback at each failure
 * point (the target left exactly as it was), and --on-conflict as restore.ts implements it.
 */
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { backup } from '../../src/ops/backup.js';
import { restore, type RestoreOptions } from '../../src/ops/restore.js';
import { LocalTransport } from '../../src/store/local.js';
import { faults } from '../../src/util/fault.js';
import { HOLDER_IMAGE } from '../../src/engine/engine.js';
import { BundleError, ConflictError, EngineError } from '../../src/errors.js';
import { FakeEngine, type FakeVolume } from '../helpers/engine-fake.js';
import {
  APP_FILES,
  readBundle,
  recordingProgress,
  runContext,
  sourceEngine,
  tempDir,
  useTempStateDir,
} from '../helpers/ops-fixtures.js';

const OPTS: RestoreOptions = { start: true, dryRun: false, onConflict: 'fail' };

let cleanup: () => Promise<void>;
let dir: string;
let bundle: string;
let imageRef: string;
let sourceRoot: FakeVolume['root'];

beforeAll(async () => {
  cleanup = await useTempStateDir();
  dir = await tempDir();
  const source = await sourceEngine();
  sourceRoot = source.volumes.get('appdata')!.root;
  const { ctx } = runContext();
  const res = await backup(
    source,
    new LocalTransport(dir),
    { containers: ['app'], codec: 'gzip', includeBinds: false },
    ctx,
  );
  bundle = res.location;
  imageRef = res.manifest.containers[0]!.image.ref;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await cleanup();
});

/** A target engine with the holder image already imported (ferry keeps it there on purpose). */
async function target(): Promise<FakeEngine> {
  const t = new FakeEngine({ endpoint: 'tcp://target:2375' });
  await t.ensureHolderImage();
  t.calls.length = 0;
  t.timeline.length = 0;
  return t;
}

function run(t: FakeEngine, opts: Partial<RestoreOptions> = {}, ctx = runContext().ctx) {
  return restore(t, new LocalTransport(bundle), { ...OPTS, ...opts }, ctx);
}

async function failing(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.unreachable('the restore should have failed'),
    (err: unknown) => err,
  );
}

describe('restore against a fake engine', () => {
  let t: FakeEngine;
  beforeEach(async () => {
    t = await target();
  });

  it('creates the network, then the volume and fills it, loads the image, creates and starts the container', async () => {
    const res = await run(t);
    const order = t.methods(['createNetwork', 'createVolume', 'putArchive', 'loadImage', 'createContainer', 'start']);
    // createContainer/start pairs of the volume's helper come first, then the container's own.
    const own = t.containerByName('app')!;
    const createApp = t.calls.findIndex((c) => c.method === 'createContainer' && c.args[0] === 'app');
    const startApp = t.calls.findIndex((c) => c.method === 'start' && c.args[0] === own.id);
    const idx = (m: string) => t.calls.findIndex((c) => c.method === m);
    expect(order[0]).toBe('createNetwork');
    expect(idx('createNetwork')).toBeLessThan(idx('createVolume'));
    expect(idx('createVolume')).toBeLessThan(idx('putArchive'));
    expect(idx('putArchive')).toBeLessThan(idx('loadImage'));
    expect(idx('loadImage')).toBeLessThan(createApp);
    expect(createApp).toBeLessThan(startApp);

    expect(res.dryRun).toBe(false);
    expect(res.containers).toEqual([{ name: 'app', id: own.id, started: true }]);
    expect(own.status).toBe('running');
    expect(own.mounts).toEqual([{ Type: 'volume', Source: 'appdata', Destination: '/data', RW: true }]);
    expect(Object.keys(own.networks)).toEqual(['appnet']);
    expect(own.config.Env).toEqual(['MODE=prod', 'PATH=/usr/bin']);
    expect(t.images.get(own.image)!.repoTags).toEqual([imageRef]);
    expect(t.networks.get('appnet')!.ipam.Config).toEqual([{ Subnet: '10.42.0.0/24' }]);
    // Only the container itself is left: the volume's helper is gone.
    expect(t.state().containers.map((c) => c.name)).toEqual(['app']);
  });

  it('counts each member filled or loaded against its size from the manifest, to 100%', async () => {
    const { progress, bytes } = recordingProgress();
    await run(t, {}, { ...runContext().ctx, progress });
    const { manifest } = await readBundle(bundle);
    for (const m of manifest.members) {
      const seen = bytes.filter((b) => b.label === m.name);
      expect(seen.length, m.name).toBeGreaterThan(0);
      expect(m.rawBytes, m.name).toBeGreaterThan(0);
      expect(seen.every((b) => b.total === m.rawBytes)).toBe(true);
      expect(seen.at(-1)!.n).toBe(m.rawBytes);
    }
  });

  it('restores the volume with the same files, and its root with its owner and mode', async () => {
    await run(t, { start: false });
    expect(t.volumeFiles('appdata')).toEqual(APP_FILES);
    expect(t.volumes.get('appdata')!.root).toEqual(sourceRoot);
    // The root's attributes go in with a second, one-entry archive from one level up (the
    // engine does not apply `./` to the directory it extracts into).
    const puts = t.callsTo('putArchive').map((a) => a[1]);
    expect(puts).toEqual(['/.ferry-data/v', '/.ferry-data']);
    expect(t.containerByName('app')!.status).toBe('created');
  });

  it('imports the holder image when the target lacks it, and keeps it', async () => {
    const bare = new FakeEngine({ endpoint: 'tcp://bare:2375' });
    await run(bare, { start: false });
    expect(bare.images.size).toBe(2);
    expect([...bare.images.values()].some((i) => i.repoTags.includes(HOLDER_IMAGE))).toBe(true);
  });

  it('plans without changing anything in a dry run', async () => {
    const before = t.state();
    const res = await run(t, { dryRun: true });
    expect(res.dryRun).toBe(true);
    expect(res.plan.containers).toEqual([
      expect.objectContaining({ from: 'app', to: 'app', image: imageRef, start: true, replace: false }),
    ]);
    expect(res.plan.volumes).toEqual([{ from: 'appdata', to: 'appdata', replace: false }]);
    expect(res.plan.networks).toEqual([{ name: 'appnet', exists: false }]);
    expect(t.state()).toEqual(before);
    expect(t.methods(['createNetwork', 'createVolume', 'createContainer', 'loadImage', 'putArchive'])).toEqual([]);
  });
});

describe('restore rollback: the target is left exactly as it was', () => {
  let t: FakeEngine;
  let before: ReturnType<FakeEngine['state']>;
  beforeEach(async () => {
    t = await target();
    before = t.state();
  });

  async function expectUntouched(err: unknown, kind: new (...a: never[]) => Error = EngineError) {
    expect(err).toBeInstanceOf(kind);
    expect(t.state()).toEqual(before);
    // What it had made, it made (the failure was not before the first change).
    expect(t.methods(['createNetwork']).length).toBe(1);
  }

  it('when the container create fails', async () => {
    t.failOn('createContainer', (name) => name === 'app');
    await expectUntouched(await failing(run(t)));
    // Reverse order: the image, the volume, then the network.
    expect(t.methods(['removeImage', 'removeVolume', 'removeNetwork'])).toEqual([
      'removeImage',
      'removeVolume',
      'removeNetwork',
    ]);
  });

  // The engine made the container but its answer was lost: the rollback finds it by its name
  // (free before the create) and removes it, so the volume and image can go too.
  it('when the container create fails after the engine made it (answer lost)', async () => {
    t.failOn('createContainer', (name) => name === 'app', undefined, { after: true });
    await expectUntouched(await failing(run(t)));
  });

  it('when the start fails', async () => {
    t.failOn('start', (id) => id === t.containerByName('app')?.id);
    await expectUntouched(await failing(run(t)));
    expect(t.methods(['removeContainer']).length).toBeGreaterThanOrEqual(1);
  });

  it('when filling the volume fails', async () => {
    t.failOn('putArchive', (_id, path) => path === '/.ferry-data/v');
    await expectUntouched(await failing(run(t)));
    expect(t.methods(['loadImage', 'createContainer'])).toEqual(['createContainer']);
    // The helper went first (a volume in use cannot be removed), then the volume.
    const removeHelper = t.calls.findIndex((c) => c.method === 'removeContainer');
    const removeVolume = t.calls.findIndex((c) => c.method === 'removeVolume');
    expect(removeHelper).toBeGreaterThanOrEqual(0);
    expect(removeHelper).toBeLessThan(removeVolume);
  });

  it('when the load of the image fails', async () => {
    t.failOn('loadImage');
    await expectUntouched(await failing(run(t)));
  });

  it('when the volume cannot be created', async () => {
    t.failOn('createVolume');
    await expectUntouched(await failing(run(t)));
    expect(t.methods(['putArchive', 'loadImage', 'createContainer'])).toEqual([]);
  });

  it('when the run is aborted while the volume is filled', async () => {
    const { ctx, abort } = runContext();
    t.onCall('putArchive', 1, () => abort.abort(new Error('interrupted by SIGINT')));
    const err = await failing(run(t, {}, ctx));
    expect(t.state()).toEqual(before);
    expect(err).toBeInstanceOf(Error);
    expect(t.methods(['createContainer', 'start']).filter((m) => m === 'start')).toEqual([]);
  });

  // Told to stop once the container was created: it is not started (that would make the
  // restore stand, behind an exit status that says interrupted), and goes.
  it('when the run is aborted right after the container was created', async () => {
    const { ctx, abort } = runContext();
    faults.hook = async (p) => {
      if (p === 'create') abort.abort(new Error('interrupted by SIGINT'));
    };
    try {
      const err = await failing(run(t, {}, ctx));
      expect((err as Error).message).toMatch(/SIGINT/);
    } finally {
      faults.hook = undefined;
    }
    expect(t.state()).toEqual(before);
    expect(t.methods(['start'])).toEqual([]);
  });

  it('when the run is aborted at the image load', async () => {
    const { ctx, abort } = runContext();
    t.onCall('loadImage', 1, () => abort.abort(new Error('interrupted by SIGINT')));
    const err = await failing(run(t, {}, ctx));
    expect((err as Error).message).toMatch(/SIGINT/);
    expect(t.state()).toEqual(before);
    expect(t.containerByName('app')).toBeUndefined();
  });
});

describe('restore --on-conflict', () => {
  let t: FakeEngine;
  beforeEach(async () => {
    t = await target();
    await t.addImage('old/app:0', [{ 'old.txt': 'old' }]);
    t.addVolume('appdata', { 'old.txt': 'the old data' });
  });

  it('fail: refuses before changing anything when the container exists', async () => {
    t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    const before = t.state();
    const err = await failing(run(t, { onConflict: 'fail' }));
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as Error).message).toMatch(/container app.*volume appdata/);
    expect(t.state()).toEqual(before);
    expect(t.methods(['createNetwork', 'createVolume', 'createContainer', 'removeContainer'])).toEqual([]);
  });

  it('fail: refuses when only the volume exists', async () => {
    const before = t.state();
    const err = await failing(run(t, { onConflict: 'fail' }));
    expect(err).toBeInstanceOf(ConflictError);
    expect(t.state()).toEqual(before);
  });

  it('rename: restores beside what is there, under new names, leaving the old untouched', async () => {
    const old = t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    const res = await run(t, { onConflict: 'rename', start: false });
    expect(res.plan.containers[0]!.to).toBe('app-restored');
    expect(res.plan.volumes).toEqual([{ from: 'appdata', to: 'appdata-restored', replace: false }]);
    expect(t.volumeFiles('appdata')).toEqual({ 'old.txt': 'the old data' });
    expect(t.volumeFiles('appdata-restored')).toEqual(APP_FILES);
    const copy = t.containerByName('app-restored')!;
    expect(copy.mounts.map((m) => m.Source)).toEqual(['appdata-restored']);
    expect(t.containerByName('app')).toBe(old);
    expect(old.status).toBe('running');
  });

  it('replace: fills a staging volume while the old runs, proves the new container, then swaps', async () => {
    const old = t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    const res = await run(t, { onConflict: 'replace' });
    expect(t.containers.has(old.id)).toBe(false);
    expect(t.volumeFiles('appdata')).toEqual(APP_FILES);
    const fresh = t.containerByName('app')!;
    expect(fresh.image).not.toBe(old.image);
    expect(fresh.status).toBe('running');
    expect(fresh.mounts.map((m) => m.Source)).toEqual(['appdata']);
    expect(res.containers).toEqual([{ name: 'app', id: fresh.id, started: true }]);
    // Nothing of the swap is left: no staging volume, no container set aside.
    expect([...t.volumes.keys()].sort()).toEqual(['appdata']);
    expect(t.state().containers.map((c) => c.name)).toEqual(['app']);
    // The old is stopped only once the bundle was read whole (its image loaded), and the real
    // volume is made again only after the new container ran on the staging one.
    const idx = (m: string, f: (a: unknown[]) => boolean = () => true) =>
      t.calls.findIndex((c) => c.method === m && f(c.args));
    expect(idx('loadImage')).toBeLessThan(idx('stop', (a) => a[0] === old.id));
    expect(idx('renameContainer', (a) => a[0] === old.id)).toBeGreaterThan(idx('stop', (a) => a[0] === old.id));
    expect(idx('start')).toBeLessThan(idx('removeVolume', (a) => a[0] === 'appdata'));
  });

  it('replace: an interrupt once the old is being removed does not stop the new from standing', async () => {
    const old = t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    const { ctx, abort } = runContext();
    t.onCall(
      'removeContainer',
      (id) => id === old.id,
      () => abort.abort(new Error('interrupted by SIGINT')),
    );
    await run(t, { onConflict: 'replace' }, ctx);
    const fresh = t.containerByName('app')!;
    expect(fresh.status).toBe('running');
    expect(fresh.mounts.map((m) => m.Source)).toEqual(['appdata']);
    expect(t.volumeFiles('appdata')).toEqual(APP_FILES);
    expect([...t.volumes.keys()]).toEqual(['appdata']);
  });

  describe('replace: at each failure point the old container and its data are back as they were', () => {
    let old: ReturnType<FakeEngine['addContainer']>;
    let before: ReturnType<FakeEngine['state']>;
    beforeEach(() => {
      old = t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
      before = t.state();
    });
    function expectOldIntact() {
      expect(t.state()).toEqual(before);
      const back = t.containerByName('app')!;
      expect(back.id).toBe(old.id);
      expect(back.status).toBe('running');
      expect(t.volumeFiles('appdata')).toEqual({ 'old.txt': 'the old data' });
    }

    it('when filling the staging volume fails (the old was never stopped)', async () => {
      t.failOn('putArchive', (_id, path) => path === '/.ferry-data/v');
      expect(await failing(run(t, { onConflict: 'replace' }))).toBeInstanceOf(EngineError);
      expectOldIntact();
      expect(t.callsTo('stop').filter((a) => a[0] === old.id)).toEqual([]);
    });

    it('when the run is interrupted during the fill', async () => {
      const { ctx, abort } = runContext();
      t.onCall('putArchive', undefined, () => abort.abort(new Error('interrupted by SIGINT')));
      await failing(run(t, { onConflict: 'replace' }, ctx));
      expectOldIntact();
    });

    it('when the new container cannot be created', async () => {
      t.failOn('createContainer', (name) => name === 'app');
      expect(await failing(run(t, { onConflict: 'replace' }))).toBeInstanceOf(EngineError);
      expectOldIntact();
      expect(t.callsTo('renameContainer').map((a) => a[1])).toEqual([expect.stringMatching(/^app-ferry-old-/), 'app']);
    });

    it('when the new container is made but the answer is lost', async () => {
      t.failOn('createContainer', (name) => name === 'app', undefined, { after: true });
      await failing(run(t, { onConflict: 'replace' }));
      expectOldIntact();
    });

    it('when the new container does not start', async () => {
      t.failOn('start', (id) => t.containers.get(id)?.name === 'app' && id !== old.id);
      expect(await failing(run(t, { onConflict: 'replace' }))).toBeInstanceOf(EngineError);
      expectOldIntact();
    });

    it('when the new container stops right after its start (the watch fails)', async () => {
      t.onCall(
        'inspectContainer',
        (ref) => t.containers.get(ref)?.name === 'app' && ref !== old.id,
        (args) => {
          const c = t.containers.get(args[0] as string)!;
          c.status = 'exited';
          c.exitCode = 1;
        },
      );
      expect(await failing(run(t, { onConflict: 'replace' }))).toBeInstanceOf(ConflictError);
      expectOldIntact();
    });

    it('when the run is interrupted during the watch', async () => {
      const { ctx, abort } = runContext();
      t.onCall(
        'start',
        (id) => t.containers.get(id)?.name === 'app' && id !== old.id,
        () => setTimeout(() => abort.abort(new Error('interrupted by SIGTERM')), 50),
      );
      await failing(run(t, { onConflict: 'replace' }, ctx));
      expectOldIntact();
    });
  });

  it('replace: refuses, with nothing changed, when another container uses the volume', async () => {
    t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    t.addContainer('reporting', { image: 'old/app:0', volumes: { appdata: '/mnt' } });
    const before = t.state();
    const err = await failing(run(t, { onConflict: 'replace' }));
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as Error).message).toMatch(/reporting/);
    expect(t.state()).toEqual(before);
  });

  it('replace: a damaged bundle is refused before anything is replaced', async () => {
    const { readFile, writeFile } = await import('node:fs/promises');
    const damaged = `${dir}/damaged.tar`;
    const buf = await readFile(bundle);
    // Flip a byte inside the image member's data (found by walking the tar headers).
    let off = 0;
    for (;;) {
      const name = buf.toString('utf8', off, off + 100).replace(/\0.*$/s, '');
      const size = parseInt(
        buf
          .toString('ascii', off + 124, off + 136)
          .replace(/\0.*$/s, '')
          .trim(),
        8,
      );
      if (!name) throw new Error('no image member in the bundle');
      if (name.startsWith('images/')) {
        const at = off + 512 + Math.floor(size / 2);
        buf[at] = buf[at]! ^ 0xff;
        break;
      }
      off += 512 + Math.ceil(size / 512) * 512;
    }
    await writeFile(damaged, buf);
    t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    const before = t.state();
    const err = await restore(
      t,
      new LocalTransport(damaged),
      { ...OPTS, onConflict: 'replace' },
      runContext().ctx,
    ).then(
      () => expect.unreachable('a damaged bundle should be refused'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BundleError);
    expect(t.state()).toEqual(before);
    expect(t.methods(['removeContainer', 'removeVolume', 'createVolume'])).toEqual([]);
  });
});

describe('restore of a bundle with two containers, one in the network of the other', () => {
  let stackDir: string;
  let stack: string;
  beforeAll(async () => {
    stackDir = await tempDir();
    const source = await sourceEngine();
    const app = source.containerByName('app')!;
    const sidecar = source.addContainer('sidecar', { image: 'shop/app:1' });
    sidecar.hostConfig.NetworkMode = `container:${app.id}`;
    sidecar.networks = {};
    // Named first: the restore still creates and starts app before it.
    const res = await backup(
      source,
      new LocalTransport(stackDir),
      { containers: ['sidecar', 'app'], codec: 'none', includeBinds: false },
      runContext().ctx,
    );
    stack = res.location;
  });
  afterAll(async () => rm(stackDir, { recursive: true, force: true }));

  function runStack(t: FakeEngine, opts: Partial<RestoreOptions> = {}) {
    return restore(t, new LocalTransport(stack), { ...OPTS, ...opts }, runContext().ctx);
  }

  it('creates and starts the container another depends on first, and points the dependent at it', async () => {
    const t = await target();
    await runStack(t);
    const app = t.containerByName('app')!;
    const sidecar = t.containerByName('sidecar')!;
    const creates = t.callsTo('createContainer').map((a) => a[0]);
    expect(creates.filter((n) => n === 'app' || n === 'sidecar')).toEqual(['app', 'sidecar']);
    const starts = t.callsTo('start').map((a) => a[0]);
    expect(starts.filter((id) => id === app.id || id === sidecar.id)).toEqual([app.id, sidecar.id]);
    expect(sidecar.hostConfig.NetworkMode).toBe('container:app');
    expect([app.status, sidecar.status]).toEqual(['running', 'running']);
  });

  it('removes the first container again when the second cannot be created', async () => {
    const t = await target();
    const before = t.state();
    t.failOn('createContainer', (name) => name === 'sidecar');
    await expect(runStack(t)).rejects.toBeInstanceOf(EngineError);
    expect(t.methods(['createContainer']).length).toBeGreaterThanOrEqual(2);
    expect(t.state()).toEqual(before);
  });
});

describe('restore of an anonymous volume', () => {
  const ANON = 'c'.repeat(64);
  let anonBundle: string;
  let anonDir: string;
  beforeAll(async () => {
    anonDir = await tempDir();
    const source = new FakeEngine({ endpoint: 'tcp://source:2375' });
    await source.addImage('shop/cache:1', [{ 'srv/run.sh': 'run\n' }], {
      Cmd: ['sh', '/srv/run.sh'],
      Volumes: { '/cache': {} },
    });
    source.addVolume(ANON, { 'hits.txt': '42\n' });
    const c = source.addContainer('cache', { image: 'shop/cache:1', volumes: { [ANON]: '/cache' } });
    c.hostConfig.Mounts = null; // as the image's VOLUME line made it: mounted by no name
    const res = await backup(
      source,
      new LocalTransport(anonDir),
      { containers: ['cache'], codec: 'gzip', includeBinds: false },
      runContext().ctx,
    );
    expect(res.manifest.volumes.map((v) => v.anonymous)).toEqual([true]);
    anonBundle = res.location;
  });
  afterAll(async () => {
    await rm(anonDir, { recursive: true, force: true });
  });

  it('is recreated anonymous (declared, made by the engine at create) and holds the data', async () => {
    const t = await target();
    await restore(t, new LocalTransport(anonBundle), { ...OPTS, start: false }, runContext().ctx);
    const c = t.containerByName('cache')!;
    const create = t.callsTo('createContainer').find((a) => a[0] === 'cache')![1] as Record<string, any>;
    expect(create.HostConfig.Mounts).toBeUndefined();
    expect(create.Volumes).toEqual({ '/cache': {} });
    const m = c.mounts.find((x) => x.Destination === '/cache')!;
    expect(m.Source).toMatch(/^[0-9a-f]{64}$/);
    expect(m.Source).not.toBe(ANON);
    expect(t.volumeFiles(m.Source)).toEqual({ 'hits.txt': '42\n' });
    // the staged volume the data went into first is gone: only the container's own is left
    expect([...t.volumes.keys()]).toEqual([m.Source]);
  });
});

describe('--only volume:<name>', () => {
  it('restores one volume alone: its data, no container, no image', async () => {
    const t = await target();
    const res = await run(t, { only: ['volume:appdata'] });
    expect(t.volumeFiles('appdata')).toEqual(APP_FILES);
    expect(t.volumes.get('appdata')!.root).toEqual(sourceRoot);
    expect(t.containers.size).toBe(0);
    expect(t.methods(['loadImage', 'createContainer']).filter((c) => c.method === 'loadImage')).toEqual([]);
    expect(res.containers).toEqual([]);
    expect(res.plan.volumes).toEqual([{ from: 'appdata', to: 'appdata', replace: false }]);
  });

  it('an existing volume: fail refuses, rename restores beside it, the old data untouched', async () => {
    const t = await target();
    t.addVolume('appdata', { 'old.txt': 'the old data' });
    const before = t.state();
    expect(await failing(run(t, { only: ['volume:appdata'], onConflict: 'fail' }))).toBeInstanceOf(ConflictError);
    expect(t.state()).toEqual(before);
    const res = await run(t, { only: ['volume:appdata'], onConflict: 'rename' });
    expect(res.plan.volumes).toEqual([{ from: 'appdata', to: 'appdata-restored', replace: false }]);
    expect(t.volumeFiles('appdata-restored')).toEqual(APP_FILES);
    expect(t.volumeFiles('appdata')).toEqual({ 'old.txt': 'the old data' });
  });

  it("replace: the volume gets the bundle's data", async () => {
    const t = await target();
    t.addVolume('appdata', { 'old.txt': 'the old data' });
    await run(t, { only: ['volume:appdata'], onConflict: 'replace' });
    expect(t.volumeFiles('appdata')).toEqual(APP_FILES);
    expect([...t.volumes.keys()]).toEqual(['appdata']);
  });

  it('replace of a volume a container uses: refused, nothing changed (ferry does not stop it)', async () => {
    const t = await target();
    await t.addImage('old/app:0', [{ '/x': 'x' }]);
    const user = t.addContainer('user', { image: 'old/app:0', volumes: { appdata: '/data' } });
    const before = t.state();
    const err = await failing(run(t, { only: ['volume:appdata'], onConflict: 'replace' }));
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as Error).message).toMatch(/volume appdata is also used by user/);
    expect(t.state()).toEqual(before);
    expect(user.status).toBe('running');
  });

  it('a volume the bundle does not have is a usage error naming those it has', async () => {
    const t = await target();
    const err = await failing(run(t, { only: ['volume:nope'] }));
    expect((err as { exitCode: number }).exitCode).toBe(2);
    expect((err as { hint: string }).hint).toMatch(/appdata/);
  });
});
