/**
 * backup --precopy (ops/steps/stage.ts) against the engine fake: where the pre-copy cannot run
 * the backup is today's single paused pass and the result says why; a pre-copy that fails or is
 * stopped leaves no staging volume and the container running; a killed run's staging volume is
 * removed by the next run and by `ferry clean`. And the pure parts: names, room, refusals.
 * (The passes themselves run on real hosts: test/e2e/precopy.test.ts.)
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { backup, type BackupOptions } from '../../src/ops/backup.js';
import { clean } from '../../src/ops/clean.js';
import { recoverDeadRuns } from '../../src/ops/steps/recover.js';
import {
  BACKUP_STAGING_ROLE,
  backupStagingName,
  containerStageRefusal,
  roomRefusal,
  StagingVolumes,
} from '../../src/ops/steps/stage.js';
import { LocalTransport } from '../../src/store/local.js';
import { LABEL_OWNER, LABEL_ROLE, LABEL_RUN } from '../../src/engine/engine.js';
import { createRunIdentity } from '../../src/engine/run.js';
import { parseDfFree } from '../../src/data/host-volume.js';
import { listingDiskBytes, type Entry } from '../../src/data/delta.js';
import type { HostAccess } from '../../src/hostaccess/access.js';
import type { HostShell } from '../../src/hostaccess/shell.js';
import { MadeJournal, QuiesceJournal } from '../../src/util/state.js';
import type { Progress, RunContext } from '../../src/context.js';
import type { FakeEngine } from '../helpers/engine-fake.js';
import { readBundle, runContext, sourceEngine, tempDir, untar, useTempStateDir } from '../helpers/ops-fixtures.js';

const OPTS: BackupOptions = { containers: ['app'], codec: 'gzip', includeBinds: false, precopy: true };
/** A pid no process has (above the kernel's pid_max). */
const DEAD_PID = 4_194_305;

let restoreState: () => Promise<void>;
beforeAll(async () => {
  restoreState = await useTempStateDir();
});
afterAll(async () => restoreState());

let fake: FakeEngine;
let dir: string;
beforeEach(async () => {
  fake = await sourceEngine();
  await fake.ensureHolderImage();
  dir = await tempDir();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const stagingVolumes = () => [...fake.volumes.values()].filter((v) => v.labels?.[LABEL_ROLE] === BACKUP_STAGING_ROLE);

/** A host that the volumes seem reachable on (local driver, root), whose every command `run` answers. */
function reachableHost(run: HostShell['run']): RunContext['hostAccess'] {
  const access: HostAccess = {
    volumes: { use: true, reason: 'root on the host' },
    layers: { use: false, reason: 'not in this test' },
    shell: { where: 'the test host', run },
  };
  return async () => access;
}

describe('backup --precopy where it cannot run: one paused pass, and why', () => {
  it('no way onto the engine host: the bundle as without it, the refusal in the result, no staging volume', async () => {
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), OPTS, ctx);
    expect(res.dataPaths.volumes).toEqual([
      expect.objectContaining({ name: 'appdata', path: 'engine-archive', precopy: { refused: expect.any(String) } }),
    ]);
    expect(stagingVolumes()).toEqual([]);
    expect(fake.calls.filter((c) => c.method === 'createVolume')).toEqual([]);
    // The volume was read once, while paused: today's backup.
    expect(fake.methods(['pause', 'getArchive', 'unpause'])).toEqual(['pause', 'getArchive', 'unpause']);
    const { members } = await readBundle(res.location);
    const data = await untar(members.get(res.manifest.volumes[0]!.member)!);
    expect(data.get('./README.txt')!.data.toString()).toBe('hello from the volume\n');
    expect(fake.containerByName('app')!.status).toBe('running');
  });

  it('--consistency none and a stopped container: said, not attempted', async () => {
    const { ctx } = runContext();
    const none = await backup(fake, new LocalTransport(dir), { ...OPTS, consistency: 'none' }, ctx);
    expect(none.dataPaths.volumes[0]!.precopy).toEqual({ refused: expect.stringMatching(/--consistency none/) });
    fake.containerByName('app')!.status = 'exited';
    const stopped = await backup(fake, new LocalTransport(dir), OPTS, ctx);
    expect(stopped.dataPaths.volumes[0]!.precopy).toEqual({ refused: 'the container is not running' });
    expect(stagingVolumes()).toEqual([]);
  });

  it('without --precopy: no precopy field at all', async () => {
    const { ctx } = runContext();
    const res = await backup(fake, new LocalTransport(dir), { ...OPTS, precopy: false }, ctx);
    expect(res.dataPaths.volumes[0]!.precopy).toBeUndefined();
  });
});

describe('backup --precopy that fails or is stopped during the pre-copy', () => {
  it('a failing host: the staging volume is removed, the container was never paused and runs', async () => {
    const { ctx } = runContext();
    ctx.hostAccess = reachableHost(async () => {
      throw new Error('the host went away');
    });
    await expect(backup(fake, new LocalTransport(dir), OPTS, ctx)).rejects.toThrow(/the host went away/);
    // It was made (labelled as ferry's, this run's), then removed.
    const made = fake.calls.find((c) => c.method === 'createVolume')!.args[0] as {
      Name: string;
      Labels: Record<string, string>;
    };
    expect(made.Name).toBe(backupStagingName('appdata', fake.run.id));
    expect(made.Labels).toEqual({
      [LABEL_ROLE]: BACKUP_STAGING_ROLE,
      [LABEL_RUN]: fake.run.id,
      [LABEL_OWNER]: fake.run.owner,
    });
    expect(stagingVolumes()).toEqual([]);
    expect(fake.methods(['pause', 'unpause'])).toEqual([]);
    expect(fake.containerByName('app')!.status).toBe('running');
    expect(readdirSync(dir)).toEqual([]); // no bundle, not even a partial one
  });

  it('stopped (the signal) mid-pre-copy: the staging volume is removed', async () => {
    const { ctx, abort } = runContext();
    let reached!: () => void;
    const there = new Promise<void>((r) => (reached = r));
    ctx.hostAccess = reachableHost(
      () =>
        new Promise((_, reject) => {
          reached();
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true });
        }),
    );
    const running = backup(fake, new LocalTransport(dir), OPTS, ctx);
    running.catch(() => {});
    await there;
    expect(stagingVolumes()).toHaveLength(1);
    abort.abort(new Error('interrupted'));
    await expect(running).rejects.toThrow(/interrupted/);
    expect(stagingVolumes()).toEqual([]);
    expect(fake.containerByName('app')!.status).toBe('running');
  });
});

describe('staging volumes left by a killed run', () => {
  const said: string[] = [];
  const progress: Progress = { step() {}, info: (m) => said.push(m), warn: (m) => said.push(m), bytes() {} };

  it('the next run on the engine removes them (made journal)', async () => {
    const staging = new StagingVolumes(fake, progress);
    const name = await staging.create('appdata');
    expect(fake.volumes.has(name)).toBe(true);
    // SIGKILL: nothing removed it; its journal is now a dead process's.
    const made = path.join(process.env.FERRY_STATE_DIR!, 'made');
    for (const f of existsSync(made) ? readdirSync(made) : []) {
      const file = path.join(made, f);
      writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), pid: DEAD_PID }));
    }
    (fake as { run: FakeEngine['run'] }).run = createRunIdentity();
    await recoverDeadRuns(fake, progress);
    expect(fake.volumes.has(name)).toBe(false);
    expect(said.join('\n')).toContain(`volume ${name}`);
  });

  it('ferry clean removes those of dead runs on this host, keeps a live or foreign one', async () => {
    const vol = (name: string, owner: string) =>
      fake.addVolume(
        name,
        {},
        { labels: { [LABEL_ROLE]: BACKUP_STAGING_ROLE, [LABEL_RUN]: 'r', [LABEL_OWNER]: owner } },
      );
    vol('appdata-ferry-stage-dead', `${hostname()}/${DEAD_PID}`);
    vol('appdata-ferry-stage-live', `${hostname()}/1`);
    vol('appdata-ferry-stage-elsewhere', `other-host/${DEAD_PID}`);
    const journals = {
      quiesce: new QuiesceJournal(path.join(dir, 'q.json')),
      made: new MadeJournal(path.join(dir, 'made')),
    };
    const opts = { dryRun: false, minAgeSeconds: 3600 };
    const r = await clean(fake, runContext().ctx, opts, journals);
    expect(r.removed.filter((i) => i.kind === 'volume').map((i) => i.name)).toEqual(['appdata-ferry-stage-dead']);
    expect(fake.volumes.has('appdata-ferry-stage-dead')).toBe(false);
    expect(r.kept.filter((i) => i.kind === 'volume').map((i) => i.name)).toEqual([
      'appdata-ferry-stage-live',
      'appdata-ferry-stage-elsewhere',
    ]);
    expect(fake.volumes.has('appdata')).toBe(true);
  });
});

describe('stage: pure parts', () => {
  it('names a staging volume after its volume and run', () => {
    expect(backupStagingName('pgdata', '20261207T1700-ab12')).toBe('pgdata-ferry-stage-20261207T1700-ab12');
  });

  it('room: the copy and a margin (256 MiB, or a tenth of a big copy) must fit', () => {
    const MiB = 2 ** 20;
    expect(roomRefusal(100 * MiB, 400 * MiB)).toBeUndefined();
    expect(roomRefusal(100 * MiB, 300 * MiB)).toMatch(/needs 100.0 MiB and a margin of 256.0 MiB, 300.0 MiB is free/);
    expect(roomRefusal(10_000 * MiB, 10_900 * MiB)).toMatch(/needs 10000 MiB and a margin of 1000.0 MiB/);
    expect(roomRefusal(10_000 * MiB, 11_000 * MiB)).toBeUndefined();
  });

  it('refuses before looking at volumes: none, not running, paused, --together', () => {
    const base = { mode: 'pause' as const, running: true, paused: false, together: false };
    expect(containerStageRefusal(base)).toBeUndefined();
    expect(containerStageRefusal({ ...base, mode: 'stop' })).toBeUndefined();
    expect(containerStageRefusal({ ...base, mode: 'none' })).toMatch(/--consistency none/);
    expect(containerStageRefusal({ ...base, running: false })).toMatch(/not running/);
    expect(containerStageRefusal({ ...base, paused: true })).toMatch(/paused already/);
    expect(containerStageRefusal({ ...base, together: true })).toMatch(/--together/);
  });

  it('reads df -P: the available column, in KiB', () => {
    const out =
      'Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda        263174212 66060348 40675772      62% /\n';
    expect(parseDfFree(out)).toBe(40675772 * 1024);
    expect(parseDfFree('Filesystem\n')).toBeUndefined();
    expect(parseDfFree('')).toBeUndefined();
  });

  it('sizes a listing by 4 KiB blocks', () => {
    const e = (path: string, type: string, size: number): Entry => ({
      path,
      type,
      ino: path,
      size,
      mtimeNs: 0n,
      ctimeNs: 0n,
      mode: 0o644,
      uid: 0,
      gid: 0,
      link: '',
    });
    const entries = new Map(
      [e('.', 'd', 4096), e('./a', 'f', 1), e('./b', 'f', 8192), e('./l', 'l', 3)].map((x) => [x.path, x]),
    );
    expect(listingDiskBytes({ takenAtNs: 0n, entries })).toBe(4096 + 4096 + 8192 + 4096);
  });
});
