/**
 * ferry migrate from one in-memory engine to another: the target ends with the container, its
 * image and its volume data; the source runs again afterwards, after a success and after a
 * failure at each target step; and the target is rolled back on failure.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { migrate, type MigrateOptions } from '../../src/ops/migrate.js';
import { ConflictError, EngineError } from '../../src/errors.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import { APP_FILES, runContext, sourceEngine, useTempStateDir } from '../helpers/ops-fixtures.js';

const OPTS: MigrateOptions = { containers: ['app'], onConflict: 'fail', start: true, stopSource: false };

let cleanup: () => Promise<void>;
beforeAll(async () => {
  cleanup = await useTempStateDir();
});
afterAll(async () => cleanup());

let source: FakeEngine;
let target: FakeEngine;
let sourceBefore: ReturnType<FakeEngine['state']>;
let targetBefore: ReturnType<FakeEngine['state']>;
beforeEach(async () => {
  source = await sourceEngine();
  // One run's engines share its identity, as the CLI connects them (openEndpoint).
  target = new FakeEngine({ endpoint: 'tcp://target:2375', run: source.run });
  // The holder image, which ferry imports once and keeps, is there already.
  await target.ensureHolderImage();
  target.calls.length = 0;
  sourceBefore = source.state();
  targetBefore = target.state();
});

function run(opts: Partial<MigrateOptions> = {}, ctx = runContext().ctx) {
  return migrate(source, target, { ...OPTS, ...opts }, ctx);
}

async function failing(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.unreachable('the migration should have failed'),
    (err: unknown) => err,
  );
}

describe('migrate between two fake engines', () => {
  it('leaves the container, its image and its volume data on the target, and the source running', async () => {
    const res = await run();
    const moved = target.containerByName('app')!;
    expect(moved.status).toBe('running');
    expect(moved.mounts).toEqual([{ Type: 'volume', Source: 'appdata', Destination: '/data', RW: true }]);
    expect(Object.keys(moved.networks)).toEqual(['appnet']);
    expect(target.volumeFiles('appdata')).toEqual(APP_FILES);
    expect(target.volumes.get('appdata')!.root).toEqual(source.volumes.get('appdata')!.root);
    expect(target.images.get(moved.image)!.repoTags).toEqual([expect.stringMatching(/^ferry\/app:\d{8}T\d{6}Z$/)]);
    // The image holds the source container's layers: the base image's two and its own.
    expect(target.images.get(moved.image)!.diffIds).toHaveLength(3);
    expect(res.containers).toEqual([{ name: 'app', id: moved.id, started: true }]);
    expect(res.volumes).toEqual(['appdata']);
    expect(res.totalLayers).toBe(3);
    expect(res.skippedLayers).toBe(0);
    // A copy: a pause, no downtime.
    expect(res.downtimeMs).toBeUndefined();
    expect(res.pausedMs).toBeGreaterThanOrEqual(0);
    expect(res.pausedMs).toBeLessThanOrEqual(res.durationMs);

    // The source: paused for the snapshot and the volume read, then running again, its snapshot gone.
    expect(source.methods(['pause', 'commit', 'getArchive', 'unpause'])).toEqual([
      'pause',
      'commit',
      'getArchive',
      'unpause',
    ]);
    expect(source.timeline.indexOf('end:getArchive')).toBeLessThan(source.timeline.indexOf('call:unpause'));
    expect(source.state()).toEqual(sourceBefore);
    // Nothing but the container itself was added to the target besides what it needs.
    expect(target.state().containers.map((c) => c.name)).toEqual(['app']);
  });

  it('creates the network and the volume before the data, and the container after it', async () => {
    await run({ start: false });
    const idx = (m: string) => target.calls.findIndex((c) => c.method === m);
    const createApp = target.calls.findIndex((c) => c.method === 'createContainer' && c.args[0] === 'app');
    expect(idx('createNetwork')).toBeLessThan(idx('createVolume'));
    expect(idx('createVolume')).toBeLessThan(idx('putArchive'));
    expect(idx('putArchive')).toBeLessThan(createApp);
    expect(idx('loadImage')).toBeLessThan(createApp);
    expect(target.containerByName('app')!.status).toBe('created');
    expect(source.containerByName('app')!.status).toBe('running');
  });

  it('does not send the layers the target already has', async () => {
    const base = await target.addImage(
      'shop/app:1',
      [{ 'app/main.js': 'serve()\n' }, { 'etc/app.conf': 'port=80\n' }],
      {
        Cmd: ['node', '/app/main.js'],
        Env: ['PATH=/usr/bin'],
      },
    );
    const res = await run({ start: false });
    expect(res.skippedLayers).toBe(2);
    expect(res.totalLayers).toBe(3);
    const moved = target.containerByName('app')!;
    const img = target.images.get(moved.image)!;
    expect(img.diffIds.slice(0, 2)).toEqual(target.images.get(base)!.diffIds);
    expect(img.layers).toHaveLength(3);
    // The archive the target loaded held only the layer it lacked.
    expect(target.loaded).toHaveLength(1);
    expect(target.loaded[0]!.filter((f) => f.endsWith('/layer.tar'))).toHaveLength(1);
  });

  it('--stop-source: the source is stopped for the cutover and stays stopped', async () => {
    const res = await run({ stopSource: true });
    // The downtime is measured from the stop to the end of the watch, and it is the pause.
    expect(res.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(res.downtimeMs).toBeLessThanOrEqual(res.durationMs);
    expect(res.pausedMs).toBe(res.downtimeMs);
    // No host access here: no pre-copy, and the result says why.
    expect(res.dataPaths.volumes[0]!.precopy).toEqual({ refused: expect.stringMatching(/host access/) });
    expect(source.containerByName('app')!.status).toBe('exited');
    expect(source.methods(['pause', 'stop', 'start', 'unpause'])).toEqual(['stop']);
    expect(target.containerByName('app')!.status).toBe('running');
  });

  it('--on-conflict fail: refuses before touching either side when the target has the container', async () => {
    await target.addImage('other:1', [{ f: 'x' }]);
    target.addContainer('app', { image: 'other:1' });
    const before = target.state();
    const err = await failing(run());
    expect(err).toBeInstanceOf(ConflictError);
    expect(target.state()).toEqual(before);
    expect(source.methods(['pause', 'commit'])).toEqual([]);
  });
});

describe('migrate rollback: the target as it was, the source running again', () => {
  function expectRolledBack(err: unknown, kind: new (...a: never[]) => Error = EngineError) {
    expect(err).toBeInstanceOf(kind);
    expect(target.state()).toEqual(targetBefore);
    // The source runs again (and was put back once), its snapshot image removed.
    expect(source.state()).toEqual(sourceBefore);
    expect(source.containerByName('app')!.status).toBe('running');
  }

  it('when the network cannot be created on the target', async () => {
    target.failOn('createNetwork');
    expectRolledBack(await failing(run()));
    // Nothing was quiesced yet.
    expect(source.methods(['pause', 'unpause'])).toEqual([]);
  });

  it('when the volume cannot be created on the target (made before the pause, for a pre-copy)', async () => {
    target.failOn('createVolume');
    expectRolledBack(await failing(run()));
    expect(source.methods(['pause', 'unpause'])).toEqual([]);
  });

  it('when the volume cannot be created on the target, --no-precopy', async () => {
    target.failOn('createVolume');
    expectRolledBack(await failing(run({ precopy: false })));
    expect(source.methods(['pause', 'unpause'])).toEqual(['pause', 'unpause']);
  });

  it('when the volume data is refused by the target', async () => {
    target.failOn('putArchive');
    expectRolledBack(await failing(run()));
    expect(source.methods(['pause', 'unpause'])).toEqual(['pause', 'unpause']);
  });

  it('when the volume stream from the source breaks half-way', async () => {
    source.addVolume('appdata', { ...APP_FILES, 'big.bin': 'y'.repeat(200_000) });
    sourceBefore = source.state();
    source.failStream('getArchive', undefined, 50_000);
    const err = await failing(run());
    expect(err).toBeInstanceOf(Error);
    expect(target.state()).toEqual(targetBefore);
    expect(source.state()).toEqual(sourceBefore);
  });

  it('when the image load fails on the target', async () => {
    target.failOn('loadImage');
    expectRolledBack(await failing(run()));
  });

  it('when the save fails on the source', async () => {
    source.failOn('saveImages');
    expectRolledBack(await failing(run()));
  });

  it('when the container cannot be created on the target', async () => {
    target.failOn('createContainer', (name) => name === 'app');
    expectRolledBack(await failing(run()));
  });

  it('when the container does not start on the target', async () => {
    target.failOn('start', (id) => id === target.containerByName('app')?.id);
    expectRolledBack(await failing(run()));
  });

  it('--stop-source: the source is started again after a failure on the target', async () => {
    target.failOn('start', (id) => id === target.containerByName('app')?.id);
    expectRolledBack(await failing(run({ stopSource: true })));
    expect(source.methods(['stop', 'start'])).toEqual(['stop', 'start']);
  });

  it('when the run is aborted while the image loads on the target: the load stops, it is not waited for', async () => {
    const { ctx, abort } = runContext();
    target.onCall('loadImage', 1, () => abort.abort(new Error('interrupted by SIGINT')));
    const err = await failing(run({}, ctx));
    expect((err as Error).message).toMatch(/SIGINT/);
    expect(target.loaded).toEqual([]); // no image arrived whole
    expect(target.state()).toEqual(targetBefore);
    expect(source.state()).toEqual(sourceBefore);
  });

  for (const [side, point] of [
    ['target', 'createVolume'],
    ['target', 'putArchive'],
    ['source', 'commit'],
    ['target', 'createContainer'],
  ] as const)
    it(`when the run is aborted at ${point} on the ${side}`, async () => {
      const { ctx, abort } = runContext();
      (side === 'source' ? source : target).onCall(point, 1, () => abort.abort(new Error('interrupted by SIGINT')));
      const err = await failing(run({}, ctx));
      expect(err).toBeInstanceOf(Error);
      expect(target.state()).toEqual(targetBefore);
      expect(source.state()).toEqual(sourceBefore);
    });
});

describe('migrate --on-conflict replace: the target keeps its old service until the new one ran', () => {
  let old: ReturnType<FakeEngine['addContainer']>;
  beforeEach(async () => {
    await target.addImage('old/app:0', [{ 'old.txt': 'old' }]);
    target.addVolume('appdata', { 'old.txt': 'the target data' });
    old = target.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    target.calls.length = 0;
    targetBefore = target.state();
  });

  function expectTargetIntact(err: unknown) {
    expect(err).toBeInstanceOf(Error);
    expect(target.state()).toEqual(targetBefore);
    const back = target.containerByName('app')!;
    expect(back.id).toBe(old.id);
    expect(back.status).toBe('running');
    expect(target.volumeFiles('appdata')).toEqual({ 'old.txt': 'the target data' });
    expect(source.state()).toEqual(sourceBefore);
  }

  it('replaces the container and the volume data once the new one runs', async () => {
    const res = await run({ onConflict: 'replace' });
    expect(target.containers.has(old.id)).toBe(false);
    const moved = target.containerByName('app')!;
    expect(moved.status).toBe('running');
    expect(res.containers).toEqual([{ name: 'app', id: moved.id, started: true }]);
    expect(target.volumeFiles('appdata')).toEqual(APP_FILES);
    expect([...target.volumes.keys()]).toEqual(['appdata']);
    // Nothing was removed on the target before the volume data had arrived.
    const firstRemove = target.calls.findIndex((c) => c.method === 'removeContainer' && c.args[0] === old.id);
    const lastPut = target.calls.map((c) => c.method).lastIndexOf('putArchive');
    const stagedPut = target.calls.findIndex((c) => c.method === 'putArchive');
    expect(stagedPut).toBeLessThan(firstRemove);
    expect(firstRemove).toBeLessThan(lastPut); // the move into the real volume comes after
  });

  it('when the target refuses the image after the volume was sent', async () => {
    target.failOn('loadImage');
    expectTargetIntact(await failing(run({ onConflict: 'replace' })));
  });

  it('when the new container does not start on the target', async () => {
    target.failOn('start', (id) => target.containers.get(id)?.name === 'app' && id !== old.id);
    expectTargetIntact(await failing(run({ onConflict: 'replace' })));
  });

  it('when the run is aborted while the volume is sent', async () => {
    const { ctx, abort } = runContext();
    target.onCall('putArchive', 1, () => abort.abort(new Error('interrupted by SIGINT')));
    expectTargetIntact(await failing(run({ onConflict: 'replace' }, ctx)));
  });

  it('--stop-source: the source runs again when the new container stops right after its start', async () => {
    target.onCall(
      'inspectContainer',
      (ref) => target.containers.get(ref)?.name === 'app' && ref !== old.id,
      (args) => {
        const c = target.containers.get(args[0] as string)!;
        c.status = 'exited';
        c.exitCode = 1;
      },
    );
    const err = await failing(run({ onConflict: 'replace', stopSource: true }));
    expect(err).toBeInstanceOf(ConflictError);
    expectTargetIntact(err);
    expect(source.containerByName('app')!.status).toBe('running');
  });
});
