/**
 * Path excludes (--exclude-path, the ferry.exclude-paths label) through the real ops against the
 * engine fake (no host access: the engine's archive, filtered): what is left out, what is kept
 * byte for byte, what the manifest records, and that verify calls the bundle whole.
 */
import { rm } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { backup, type BackupOptions } from '../../src/ops/backup.js';
import { migrate, type MigrateOptions } from '../../src/ops/migrate.js';
import { verifyFile } from '../../src/ops/verify.js';
import { LocalTransport } from '../../src/store/local.js';
import { UsageError } from '../../src/errors.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import {
  APP_FILES,
  listDir,
  readBundle,
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

/** `app` again, with labels (the engine fixes a container's labels at creation). */
function relabel(labels: Record<string, string>) {
  const app = fake.containerByName('app')!;
  app.config.Labels = { ...(app.config.Labels as Record<string, string>), ...labels };
}

describe('path excludes in a backup through the engine', () => {
  it('leaves out what --exclude-path and the label name, keeps the rest byte for byte, records both', async () => {
    relabel({ 'ferry.exclude-paths': 'README.txt' });
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), { ...OPTS, excludePaths: ['db/index'] }, ctx);
    expect(res.dataPaths.volumes).toEqual([expect.objectContaining({ name: 'appdata', path: 'engine-archive' })]);
    const { manifest, members } = await readBundle(res.location);
    expect(manifest.volumes[0]!.excludePaths).toEqual(['db/index', 'README.txt']);
    const entries = await untar(members.get(manifest.volumes[0]!.member)!);
    expect([...entries.keys()].sort()).toEqual(['./', './db/', './db/records.txt']);
    expect(entries.get('./db/records.txt')!.data.toString()).toBe(APP_FILES['db/records.txt']);
    // the root keeps its attributes
    expect(entries.get('./')!.header).toMatchObject({ mode: 0o700, uid: 999, gid: 999 });
    // what was left out on purpose is not damage
    const report = await verifyFile(res.location, ctx);
    expect(report.ok).toBe(true);
  });

  it('without excludes, the volume is whole and the manifest says nothing of them', async () => {
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), OPTS, ctx);
    const { manifest, members } = await readBundle(res.location);
    expect(manifest.volumes[0]!.excludePaths).toBeUndefined();
    const entries = await untar(members.get(manifest.volumes[0]!.member)!);
    for (const f of Object.keys(APP_FILES)) expect(entries.has(`./${f}`), f).toBe(true);
  });

  it('a volume archive that breaks half-way fails the backup through the filter too: no bundle', async () => {
    fake.addVolume('appdata', { ...APP_FILES, 'big.bin': 'x'.repeat(200_000) });
    fake.failStream('getArchive', undefined, 3000);
    const { ctx } = runContext();
    await expect(
      backup(fake, new LocalTransport(dir), { ...OPTS, excludePaths: ['README.txt'] }, ctx),
    ).rejects.toThrow();
    expect(await listDir(dir)).toEqual([]);
    expect(fake.containerByName('app')!.status).toBe('running');
  });

  it('a label pattern ferry cannot take is a usage error before anything is paused', async () => {
    relabel({ 'ferry.exclude-paths': 'cache,../etc' });
    const { ctx } = runContext();
    await expect(backup(fake, new LocalTransport(dir), OPTS, ctx)).rejects.toThrow(UsageError);
    expect(fake.callsTo('pause')).toEqual([]);
  });
});

describe('path excludes in a migration through the engine', () => {
  it('the target volume lacks exactly what is excluded', async () => {
    const target = new FakeEngine({ endpoint: 'tcp://target:2375', run: fake.run });
    relabel({ 'ferry.exclude-paths': 'db/index/*' });
    const opts: MigrateOptions = {
      containers: ['app'],
      onConflict: 'fail',
      start: true,
      stopSource: false,
      excludePaths: ['README.txt'],
    };
    await migrate(fake, target, opts, runContext().ctx);
    expect(target.volumeFiles('appdata')).toEqual({ 'db/records.txt': APP_FILES['db/records.txt'] });
    // the directory db/index itself is kept (only its content matched)
    expect(target.volumes.get('appdata')!.files.has('db/index')).toBe(true);
  });
});
