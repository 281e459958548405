/**
 * ferry backup against the in-memory engine: the order of its steps, the bundle it writes
 * (read back with the real BundleReader), and that the container is running again and no
 * snapshot image is left after a failure at each point.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { backup, type BackupOptions } from '../../src/ops/backup.js';
import { LocalTransport } from '../../src/store/local.js';
import { faults } from '../../src/util/fault.js';
import { EngineError, NotFoundError } from '../../src/errors.js';
import type { FakeEngine } from '../helpers/engine-fake.js';
import {
  APP_FILES,
  listDir,
  readBundle,
  recordingProgress,
  runContext,
  sourceEngine,
  tempDir,
  untar,
  useTempStateDir,
} from '../helpers/ops-fixtures.js';

const OPTS: BackupOptions = { containers: ['app'], codec: 'gzip', includeBinds: false };

let restoreState: () => Promise<void>;
beforeAll(async () => {
  restoreState = await useTempStateDir();
});
afterAll(async () => restoreState());

let fake: FakeEngine;
let dir: string;
beforeEach(async () => {
  fake = await sourceEngine();
  dir = await tempDir();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Index of the first timeline entry equal to `what` (must be there). */
function at(what: string, from = 0): number {
  const i = fake.timeline.indexOf(what, from);
  expect(i, `${what} in ${fake.timeline.join(' ')}`).toBeGreaterThanOrEqual(0);
  return i;
}

function expectPutBack() {
  const app = fake.containerByName('app')!;
  expect(app.status).toBe('running');
  const pauses = fake.methods(['pause', 'unpause']);
  expect(pauses).toEqual(['pause', 'unpause']);
}

describe('extended attributes through the engine', () => {
  it('a volume read through the engine says that its user.* and trusted.* xattrs are not carried', async () => {
    const said: string[] = [];
    const { ctx } = runContext();
    ctx.progress = { ...ctx.progress, info: (m) => said.push(m) };
    const res = await backup(fake, new LocalTransport(dir), OPTS, ctx);
    // The fake is an engine over TCP: no host access, so the engine's archive read the volume.
    expect(res.dataPaths.volumes).toEqual([
      expect.objectContaining({ name: 'appdata', path: 'engine-archive', xattrsUnread: ['user.*', 'trusted.*'] }),
    ]);
    expect(said).toContain(
      "volume appdata: read through the engine (engine-archive), which does not carry user.* or trusted.* extended attributes; where the data uses them, run ferry as root on the engine's host",
    );
  });
});

describe('backup against a fake engine', () => {
  it('inspects, pauses, commits, reads the volume, resumes, then writes the image', async () => {
    const before = fake.state();
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), OPTS, ctx);

    const inspect = at('call:inspectContainer');
    const pause = at('call:pause');
    const commit = at('call:commit');
    const save = at('call:saveImages');
    const volumeEnd = at('end:getArchive');
    const unpause = at('call:unpause');
    const imageRead = at('read:saveImages');
    const removeSnapshot = at('call:removeImage');
    expect(inspect).toBeLessThan(pause);
    expect(pause).toBeLessThan(commit);
    // The engine's save is asked for once committed (it stages the archive while the volumes are
    // read); the volume is read whole while paused, the image only once the container runs again.
    expect(commit).toBeLessThan(save);
    expect(commit).toBeLessThan(at('call:getArchive'));
    expect(volumeEnd).toBeLessThan(unpause);
    expect(unpause).toBeLessThan(imageRead);
    expect(imageRead).toBeLessThan(removeSnapshot);
    // Commit without its own pause: the container is paused already.
    expect(fake.callsTo('commit')[0]![3]).toMatchObject({ pause: false });
    // The volume is read in place from the paused container, not through a helper.
    const app = fake.containerByName('app')!;
    expect(fake.callsTo('getArchive')).toEqual([[app.id, '/data/.']]);
    expect(fake.callsTo('createContainer')).toEqual([]);

    // Put back, and the snapshot image gone again.
    expect(app.status).toBe('running');
    expect(fake.state()).toEqual(before);

    expect(path.dirname(res.location)).toBe(dir);
    expect(await listDir(dir)).toEqual([path.basename(res.location)]);
    expect(res.containers).toEqual(['app']);
    expect(res.volumes).toEqual(['appdata']);
  });

  it('writes a bundle the real reader accepts, holding the manifest, the volume and the image', async () => {
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), OPTS, ctx);
    const { manifest, members, trailer } = await readBundle(res.location);

    expect(manifest.containers.map((c) => c.spec.name)).toEqual(['app']);
    const entry = manifest.containers[0]!;
    expect(entry.volumes).toEqual(['appdata']);
    expect(entry.spec.state).toEqual({ running: true, paused: false });
    expect(entry.spec.config.Env).toEqual(['MODE=prod']);
    expect(entry.spec.endpoints.map((e) => e.network)).toEqual(['appnet']);
    expect(manifest.networks.map((n) => n.name)).toEqual(['appnet']);
    expect(manifest.networks[0]!.ipam?.Config).toEqual([{ Subnet: '10.42.0.0/24' }]);
    expect(manifest.volumes.map((v) => [v.name, v.anonymous])).toEqual([['appdata', false]]);
    expect(manifest.source.engine).toBe('tcp://source:2375');
    expect(manifest.members.map((m) => m.kind)).toEqual(['volume', 'image']);

    // The volume member: the volume's files, its root (owner, mode) as the `./` entry.
    const vol = await untar(members.get(manifest.volumes[0]!.member)!);
    expect([...vol.keys()]).toEqual([
      './',
      './README.txt',
      './db/',
      './db/index/',
      './db/index/keys.bin',
      './db/records.txt',
    ]);
    for (const [p, text] of Object.entries(APP_FILES)) expect(vol.get(`./${p}`)!.data.toString()).toBe(text);
    expect(vol.get('./')!.header).toMatchObject({ uid: 999, gid: 999, mode: 0o700 });

    // The image member: a docker-save archive of the committed image, tagged as the manifest says.
    const img = await untar(members.get(entry.image.member!)!);
    const saved = JSON.parse(img.get('manifest.json')!.data.toString()) as { RepoTags: string[]; Layers: string[] }[];
    expect(saved[0]!.RepoTags).toEqual([entry.image.ref]);
    expect(entry.image.ref).toMatch(/^ferry\/app:\d{8}T\d{6}Z$/);
    // Base layers and the container's writable layer.
    expect(saved[0]!.Layers).toHaveLength(3);
    expect(trailer.images).toHaveLength(1);
    expect(trailer.images[0]!.ref).toBe(entry.image.ref);
    expect(trailer.images[0]!.layers).toHaveLength(3);
    expect(trailer.members.map((m) => m.name)).toEqual(manifest.members.map((m) => m.name));
  });

  it('gives the progress line a total: the size of the volume from the engine, of the image', async () => {
    const { progress, bytes } = recordingProgress();
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), OPTS, { ...ctx, progress });
    const { manifest } = await readBundle(res.location);
    // No host access on the fake (TCP): the engine's count of the volume's bytes.
    expect(fake.callsTo('volumeSize')).toEqual([['appdata']]);
    const files = Object.values(APP_FILES).reduce((a, t) => a + Buffer.byteLength(t), 0);
    const vol = bytes.filter((b) => b.label === manifest.volumes[0]!.member);
    expect(vol.length).toBeGreaterThan(0);
    expect(vol.at(-1)!.total).toBe(files);
    // The archive holds the files and their headers: a little more than the total (shown as 100%).
    expect(vol.at(-1)!.n).toBeGreaterThan(files);
    const img = bytes.filter((b) => b.label === manifest.containers[0]!.image.member);
    expect(img.length).toBeGreaterThan(0);
    expect(img.at(-1)!.total).toBeGreaterThan(0);
    expect(img.at(-1)!.n).toBeGreaterThanOrEqual(img.at(-1)!.total!);
    expect(img.at(-1)!.n).toBeLessThan(img.at(-1)!.total! * 2 + 64 * 1024);
  });

  it('reads a volume through a helper when another mount lies inside it, and removes the helper', async () => {
    fake.addVolume('cache', { 'c.txt': 'cached' });
    const app = fake.containerByName('app')!;
    app.mounts.push({ Type: 'volume', Source: 'cache', Destination: '/data/cache', RW: true });
    const before = fake.state();
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), OPTS, ctx);

    const creates = fake.callsTo('createContainer');
    expect(creates).toHaveLength(1);
    const body = creates[0]![1] as { Image: string; HostConfig: { Mounts: unknown[] } };
    // From the container's own image, with the volume mounted read-only.
    expect(body.Image).toBe(app.image);
    expect(body.HostConfig.Mounts).toEqual([expect.objectContaining({ Source: 'appdata', ReadOnly: true })]);
    expect(fake.state()).toEqual(before);
    const { manifest, members } = await readBundle(res.location);
    const data = await untar(members.get(manifest.volumes.find((v) => v.name === 'appdata')!.member)!);
    expect(data.get('./db/records.txt')!.data.toString()).toBe(APP_FILES['db/records.txt']);
    const cache = await untar(members.get(manifest.volumes.find((v) => v.name === 'cache')!.member)!);
    expect(cache.get('./c.txt')!.data.toString()).toBe('cached');
  });
});

describe('backup --consistency stop', () => {
  const STOP: BackupOptions = { ...OPTS, consistency: 'stop', stopTimeout: 7 };

  it('stops the container for the snapshot and starts it again before the image is written', async () => {
    const before = fake.state();
    const { ctx } = runContext();
    await backup(fake, new LocalTransport(dir), STOP, ctx);
    expect(fake.methods(['pause', 'stop', 'commit', 'getArchive', 'start', 'unpause'])).toEqual([
      'stop',
      'commit',
      'getArchive',
      'start',
    ]);
    expect(fake.callsTo('stop')[0]![1]).toBe(7);
    expect(at('call:start')).toBeLessThan(at('read:saveImages'));
    expect(fake.state()).toEqual(before);
  });

  it('starts the container again when the volume read fails', async () => {
    const before = fake.state();
    fake.failOn('getArchive');
    const { ctx } = runContext();
    await expect(backup(fake, new LocalTransport(dir), STOP, ctx)).rejects.toBeInstanceOf(EngineError);
    expect(fake.methods(['stop', 'start'])).toEqual(['stop', 'start']);
    expect(fake.state()).toEqual(before);
    expect(await listDir(dir)).toEqual([]);
  });

  it('leaves a container that was stopped before the backup stopped', async () => {
    fake.containerByName('app')!.status = 'exited';
    const before = fake.state();
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), STOP, ctx);
    expect(fake.methods(['stop', 'start', 'pause', 'unpause'])).toEqual([]);
    expect(fake.state()).toEqual(before);
    expect(res.manifest.containers[0]!.spec.state.running).toBe(false);
  });
});

describe('backup rollback: the container runs again, no snapshot, no bundle', () => {
  async function failingBackup(): Promise<unknown> {
    const { ctx } = runContext();
    return backup(fake, new LocalTransport(dir), OPTS, ctx).then(
      () => expect.unreachable('the backup should have failed'),
      (err: unknown) => err,
    );
  }

  async function expectRolledBack(before: ReturnType<FakeEngine['state']>) {
    expectPutBack();
    // Snapshot image removed: the engine holds what it held before.
    expect(fake.state()).toEqual(before);
    // Nothing at a final name, no temporary left behind.
    expect(await listDir(dir)).toEqual([]);
  }

  it('when the commit fails', async () => {
    const before = fake.state();
    const boom = new EngineError('commit container app: the engine answered 500: disk full');
    fake.failOn('commit', undefined, boom);
    expect(await failingBackup()).toBe(boom);
    await expectRolledBack(before);
    expect(fake.methods(['commit', 'getArchive', 'saveImages'])).toEqual(['commit']);
  });

  // commitContainer inspects the image it committed; when that fails, it removes the snapshot
  // itself (the id never reached the op's list of snapshots to remove).
  it('when the image inspect after the commit fails (snapshot made, then removed)', async () => {
    const before = fake.state();
    fake.failOn('inspectImage', (ref) => ref.startsWith('sha256:') && fake.methods().includes('commit'));
    expect(await failingBackup()).toBeInstanceOf(EngineError);
    await expectRolledBack(before);
    expect(fake.methods(['removeImage'])).toEqual(['removeImage']);
  });

  it('when the volume read is refused', async () => {
    const before = fake.state();
    fake.failOn('getArchive', undefined, new NotFoundError('read /data/. from container app: no such path'));
    expect(await failingBackup()).toBeInstanceOf(NotFoundError);
    await expectRolledBack(before);
    // Resumed before anything else happened (the image was never read).
    expect(fake.timeline).not.toContain('read:saveImages');
  });

  it('when the volume stream breaks half-way', async () => {
    // A bigger volume, so that the archive is cut in the middle of a file.
    fake.addVolume('appdata', { ...APP_FILES, 'big.bin': 'x'.repeat(300_000) });
    const before = fake.state();
    fake.failStream('getArchive', undefined, 100_000);
    const err = await failingBackup();
    expect(err).toBeInstanceOf(Error);
    await expectRolledBack(before);
  });

  it('when the helper for a volume cannot be created (and none is left)', async () => {
    fake.addVolume('cache', {});
    fake.containerByName('app')!.mounts.push({ Type: 'volume', Source: 'cache', Destination: '/data/c', RW: true });
    const before = fake.state();
    fake.failOn('getArchive', (id) => id !== fake.containerByName('app')!.id);
    expect(await failingBackup()).toBeInstanceOf(EngineError);
    await expectRolledBack(before);
    expect(fake.methods(['createContainer', 'removeContainer'])).toEqual(['createContainer', 'removeContainer']);
  });

  it('when the save is refused', async () => {
    const before = fake.state();
    fake.failOn('saveImages');
    expect(await failingBackup()).toBeInstanceOf(EngineError);
    await expectRolledBack(before);
  });

  it('when the image stream breaks half-way', async () => {
    const before = fake.state();
    fake.failStream('saveImages', undefined, 700);
    expect(await failingBackup()).toBeInstanceOf(Error);
    await expectRolledBack(before);
    // The volume had been read, and the container resumed, before the image was written.
    expect(at('call:unpause')).toBeLessThan(at('read:saveImages'));
  });

  it('when the pause is refused (nothing was paused, nothing to resume)', async () => {
    const before = fake.state();
    fake.failOn('pause');
    expect(await failingBackup()).toBeInstanceOf(EngineError);
    expect(fake.methods(['pause', 'unpause', 'commit'])).toEqual(['pause']);
    expect(fake.state()).toEqual(before);
    expect(await listDir(dir)).toEqual([]);
  });

  // A signal while the containers go back, every member written: the bundle is not finished.
  it('when the run is aborted once every member is written, before the bundle is finished', async () => {
    const before = fake.state();
    const { ctx, abort } = runContext();
    faults.hook = async (p) => {
      if (p === 'finish') abort.abort(new Error('interrupted by SIGINT'));
    };
    try {
      const err = await backup(fake, new LocalTransport(dir), OPTS, ctx).then(
        () => expect.unreachable('the backup should have been interrupted'),
        (e: unknown) => e,
      );
      expect((err as Error).message).toMatch(/SIGINT/);
    } finally {
      faults.hook = undefined;
    }
    await expectRolledBack(before);
  });

  for (const point of ['commit', 'getArchive', 'saveImages'] as const)
    it(`when the run is aborted at ${point}`, async () => {
      const before = fake.state();
      const { ctx, abort } = runContext();
      fake.onCall(point, undefined, () => abort.abort(new Error('interrupted by SIGINT')));
      const err = await backup(fake, new LocalTransport(dir), OPTS, ctx).then(
        () => expect.unreachable('the backup should have been interrupted'),
        (e: unknown) => e,
      );
      expect((err as Error).message).toMatch(/SIGINT|aborted/);
      await expectRolledBack(before);
    });
});
