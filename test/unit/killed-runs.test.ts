/**
 * A run killed with SIGKILL at each step of backup, restore and migrate, against the engine
 * fake: the run is held for ever at a fault point (src/util/fault.ts), its journal entries are
 * made those of a process that no longer exists, and the next run's recovery
 * (ops/steps/recover.ts) must leave each engine as it was before, or, past the point of no
 * return, with the complete result (and never bring back a source a finished move stopped).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../../src/ops/backup.js';
import { restore, type RestoreOptions } from '../../src/ops/restore.js';
import { migrate, type MigrateOptions } from '../../src/ops/migrate.js';
import { recoverDeadRuns } from '../../src/ops/steps/recover.js';
import { LocalTransport } from '../../src/store/local.js';
import { createRunIdentity } from '../../src/engine/run.js';
import { faultHook, faults, type FaultPoint } from '../../src/util/fault.js';
import { MadeJournal } from '../../src/util/state.js';
import type { Progress } from '../../src/context.js';
import { ReplaceUnfinishedError } from '../../src/errors.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import { APP_FILES, runContext, sourceEngine, tempDir, useTempStateDir } from '../helpers/ops-fixtures.js';

/** A pid no process has (above the kernel's pid_max). */
const DEAD_PID = 4_194_305;

let cleanup: () => Promise<void>;
let dir: string;
let bundle: string;
beforeAll(async () => {
  cleanup = await useTempStateDir();
  dir = await tempDir();
  const { ctx } = runContext();
  const res = await backup(
    await sourceEngine(),
    new LocalTransport(dir),
    { containers: ['app'], codec: 'gzip', includeBinds: false },
    ctx,
  );
  bundle = res.location;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await cleanup();
});
afterEach(() => {
  faults.hook = undefined;
});

const said: string[] = [];
const progress: Progress = { step() {}, info: (m) => said.push(m), warn: (m) => said.push(m), bytes() {} };

/**
 * Start `op`, hold it for ever at `point` (as a SIGKILL there would leave it), then make its
 * journal entries those of a dead process and give its engines a new run's identity.
 */
async function killedAt(point: FaultPoint, engines: FakeEngine[], op: () => Promise<unknown>): Promise<void> {
  let reached!: () => void;
  const there = new Promise<void>((r) => (reached = r));
  faults.hook = async (p) => {
    if (p !== point) return;
    reached();
    await new Promise(() => {}); // never: the process is gone
  };
  const running = op();
  running.catch(() => {});
  await Promise.race([
    there,
    running.then(
      () => expect.unreachable(`the run finished without passing ${point}`),
      (err: unknown) => expect.unreachable(`the run failed before ${point}: ${(err as Error).message}`),
    ),
  ]);
  faults.hook = undefined;
  const stateDir = process.env.FERRY_STATE_DIR!;
  const deadPid = <T extends { pid: number }>(r: T) => (r.pid === process.pid ? { ...r, pid: DEAD_PID } : r);
  for (const f of readdirSync(stateDir).filter((n) => n.endsWith('.json'))) {
    const file = path.join(stateDir, f);
    writeFileSync(file, JSON.stringify((JSON.parse(readFileSync(file, 'utf8')) as { pid: number }[]).map(deadPid)));
  }
  for (const sub of ['holds', 'made']) {
    const d = path.join(stateDir, sub);
    for (const f of existsSync(d) ? readdirSync(d).filter((n) => n.endsWith('.json')) : []) {
      const file = path.join(d, f);
      writeFileSync(file, JSON.stringify(deadPid(JSON.parse(readFileSync(file, 'utf8')) as { pid: number })));
    }
  }
  // The helpers it made are a dead process's too; the next run is another one.
  const dead = { ...engines[0]!.run, pid: DEAD_PID, owner: `${engines[0]!.run.host}/${DEAD_PID}` };
  for (const e of engines) {
    for (const c of e.containers.values()) {
      const labels = c.config.Labels as Record<string, string> | null | undefined;
      if (labels?.['io.ferry.owner'] === e.run.owner) labels['io.ferry.owner'] = dead.owner;
    }
    (e as { run: FakeEngine['run'] }).run = createRunIdentity();
  }
}

async function target(): Promise<FakeEngine> {
  const t = new FakeEngine({ endpoint: 'tcp://target:2375' });
  await t.ensureHolderImage();
  return t;
}

async function failing(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.unreachable('it should have failed'),
    (err: unknown) => err,
  );
}

const RESTORE: RestoreOptions = { start: true, dryRun: false, onConflict: 'fail' };
const MIGRATE: MigrateOptions = { containers: ['app'], onConflict: 'fail', start: true, stopSource: false };

describe('the fault hook', () => {
  it('waits at its point until the run is stopped, once, and lets every other point pass', async () => {
    const abort = new AbortController();
    const lines: string[] = [];
    const hook = faultHook('create', abort.signal, (t) => lines.push(t), { tickMs: 5 });
    await hook('quiesced');
    expect(lines).toEqual([]);
    let passed = false;
    const waiting = hook('create').then(() => (passed = true));
    await new Promise((r) => setTimeout(r, 30));
    expect(passed).toBe(false);
    expect(lines[0]).toMatch(/^ferry: fault point create \(pid \d+\)\n$/);
    expect(lines.length).toBeGreaterThan(1); // it goes on writing, so that a closed stderr is seen
    abort.abort(new Error('stop'));
    await waiting;
    expect(passed).toBe(true);
    const n = lines.length;
    await hook('create'); // the second arrival passes
    expect(lines.length).toBe(n);
  });

  it('goes on by itself when nobody stops the run', async () => {
    const hook = faultHook('watch', new AbortController().signal, () => {}, { waitMs: 20, tickMs: 5 });
    await hook('watch');
  });
});

describe('backup killed at each step: the next run puts the container back and removes its snapshot', () => {
  it.each<FaultPoint>(['quiesced', 'committed', 'volume-read', 'image-save', 'finish'])('at %s', async (point) => {
    const source = await sourceEngine();
    const before = source.state();
    const out = await tempDir();
    try {
      await killedAt(point, [source], () =>
        backup(
          source,
          new LocalTransport(out),
          { containers: ['app'], codec: 'gzip', includeBinds: false },
          runContext().ctx,
        ),
      );
      // paused until its volumes are read; then the snapshot image is what is left
      expect(source.containerByName('app')!.status).toBe(
        ['image-save', 'finish'].includes(point) ? 'running' : 'paused',
      );
      expect(source.state()).not.toEqual(before);
      await recoverDeadRuns(source, progress);
      expect(source.state()).toEqual(before);
      expect(readdirSync(out).filter((f) => f.endsWith('.tar'))).toEqual([]);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});

describe('restore killed at each step: the next run removes what it made', () => {
  it.each<FaultPoint>(['volume-fill', 'image-load', 'create'])('at %s', async (point) => {
    const t = await target();
    const before = t.state();
    await killedAt(point, [t], () => restore(t, new LocalTransport(bundle), RESTORE, runContext().ctx));
    expect(t.state()).not.toEqual(before);
    said.length = 0;
    await recoverDeadRuns(t, progress);
    expect(t.state()).toEqual(before);
    expect(said.join('\n')).toMatch(/removed .*volume appdata.*: left half-made by a ferry run \(pid 4194305\)/);
    expect(new MadeJournal().stale(t.facts.endpoint)).toEqual([]);
  });

  it('at the watch (started: past the point of no return): the restored service stays', async () => {
    const t = await target();
    await killedAt('watch', [t], () => restore(t, new LocalTransport(bundle), RESTORE, runContext().ctx));
    const after = t.state();
    await recoverDeadRuns(t, progress);
    expect(t.state()).toEqual(after);
    expect(t.containerByName('app')!.status).toBe('running');
  });

  it.each<FaultPoint>(['volume-fill', 'image-load', 'replace-aside', 'create', 'watch'])(
    '--on-conflict replace, at %s: the old container and its data are back, running',
    async (point) => {
      const t = await target();
      await t.addImage('old/app:0', [{ 'old.txt': 'old' }]);
      t.addVolume('appdata', { 'old.txt': 'the old data' });
      t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
      const before = t.state();
      await killedAt(point, [t], () =>
        restore(t, new LocalTransport(bundle), { ...RESTORE, onConflict: 'replace' }, runContext().ctx),
      );
      await recoverDeadRuns(t, progress);
      expect(t.state()).toEqual(before);
    },
  );
});

describe('restore --on-conflict replace killed in its commit: the next run finishes it', () => {
  // a test that fails leaves its record: never another test's to finish
  afterEach(() => rm(path.join(process.env.FERRY_STATE_DIR!, 'replacing.json'), { force: true }));
  /** The target with the old service: app on appdata, which holds the old data. */
  async function oldService(): Promise<{ t: FakeEngine; oldId: string }> {
    const t = await target();
    await t.addImage('old/app:0', [{ 'old.txt': 'old' }]);
    t.addVolume('appdata', { 'old.txt': 'the old data' });
    const old = t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    return { t, oldId: old.id };
  }

  /** The replace records of this process made those of one that exited. */
  function recordsOfDeadRuns(): void {
    const f = path.join(process.env.FERRY_STATE_DIR!, 'replacing.json');
    const recs = JSON.parse(readFileSync(f, 'utf8')) as { pid: number }[];
    writeFileSync(f, JSON.stringify(recs.map((r) => ({ ...r, pid: DEAD_PID }))));
  }

  function replaceJournal(): unknown[] {
    const f = path.join(process.env.FERRY_STATE_DIR!, 'replacing.json');
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as unknown[]) : [];
  }

  /** The new service stands as a finished replace leaves it: on the real volume, with the bundle's data, nothing else. */
  function expectFinished(t: FakeEngine, oldId: string) {
    const app = t.containerByName('app')!;
    expect(app.id).not.toBe(oldId);
    expect(app.status).toBe('running');
    expect(app.mounts.map((m) => `${m.Source}:${m.Destination}`)).toEqual(['appdata:/data']);
    expect(t.images.get(app.image)!.repoTags[0]).toMatch(/^ferry\/app:/);
    expect(t.volumeFiles('appdata')).toEqual(APP_FILES);
    expect([...t.volumes.keys()]).toEqual(['appdata']);
    expect(t.state().containers.map((c) => c.name)).toEqual(['app']);
    expect(replaceJournal()).toEqual([]);
  }

  it.each<FaultPoint>([
    'replace-commit',
    'commit-trial',
    'commit-volume',
    'commit-fill',
    'commit-filled',
    'commit-create',
    'commit-start',
  ])('at %s', async (point) => {
    const { t, oldId } = await oldService();
    await killedAt(point, [t], () =>
      restore(t, new LocalTransport(bundle), { ...RESTORE, onConflict: 'replace' }, runContext().ctx),
    );
    expect(t.containers.has(oldId)).toBe(false); // past the point of no return
    said.length = 0;
    await recoverDeadRuns(t, progress);
    expectFinished(t, oldId);
    const text = said.join('\n');
    expect(text).toMatch(/finished the --on-conflict replace of app left by a ferry run \(pid 4194305\)/);
    if (!['commit-filled', 'commit-create', 'commit-start'].includes(point))
      expect(text).toMatch(/made volume appdata again and filled it from appdata-ferry-new-\S+ \(\d+ entries/);
    expect(text).toMatch(/removed the staging volume appdata-ferry-new-/);
    // once is enough: a further run finds nothing to do
    said.length = 0;
    const after = t.state();
    await recoverDeadRuns(t, progress);
    expect(t.state()).toEqual(after);
    expect(said).toEqual([]);
  });

  it('a real volume half-filled when the run died is made again, not topped up', async () => {
    const { t, oldId } = await oldService();
    await killedAt('commit-fill', [t], () =>
      restore(t, new LocalTransport(bundle), { ...RESTORE, onConflict: 'replace' }, runContext().ctx),
    );
    // what a copy cut short leaves: a file written in part, and one the bundle does not have
    const half = t.volumes.get('appdata')!;
    const file = { type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtime: new Date(0) };
    half.files.set('README.txt', { ...file, data: Buffer.from('hel') });
    half.files.set('junk.tmp', { ...file, data: Buffer.from('x') });
    await recoverDeadRuns(t, progress);
    expectFinished(t, oldId);
  });

  it("a container created whose answer was lost is taken as the commit's own, not made twice", async () => {
    const { t, oldId } = await oldService();
    const creates = () => t.callsTo('createContainer').filter((a) => a[0] === 'app').length;
    await killedAt('commit-filled', [t], () =>
      restore(t, new LocalTransport(bundle), { ...RESTORE, onConflict: 'replace' }, runContext().ctx),
    );
    expect(creates()).toBe(1); // the trial
    // the create goes through, but the answer is lost (then the run dies before it records an id)
    t.failOn('createContainer', (name) => name === 'app', undefined, { after: true });
    expect(await failing(recoverDeadRuns(t, progress))).toBeInstanceOf(ReplaceUnfinishedError);
    expect(t.containerByName('app')!.status).toBe('created');
    expect(creates()).toBe(2);
    await recoverDeadRuns(t, progress);
    expect(creates()).toBe(2); // found by its name, made after the commit began: its own
    expectFinished(t, oldId);
  });

  it('a real volume that does not read back as its staging volume: staging and journal kept, exit 14, then finished', async () => {
    const { t, oldId } = await oldService();
    await killedAt('replace-commit', [t], () =>
      restore(t, new LocalTransport(bundle), { ...RESTORE, onConflict: 'replace' }, runContext().ctx),
    );
    // the copy loses a file on its way (a full disk the engine did not report, say)
    t.onCall(
      'getArchive',
      (id) => !!t.containers.get(id)?.mounts.some((m) => m.Source === 'appdata'),
      () => t.volumes.get('appdata')!.files.delete('db/index/keys.bin'),
    );
    const err = await failing(recoverDeadRuns(t, progress));
    expect(err).toBeInstanceOf(ReplaceUnfinishedError);
    expect((err as ReplaceUnfinishedError).exitCode).toBe(14);
    expect((err as ReplaceUnfinishedError).message).toMatch(/volume appdata does not read back as appdata-ferry-new-/);
    expect((err as ReplaceUnfinishedError).hint).toMatch(
      /the new data is whole in appdata-ferry-new-\S+ \(for appdata\)/,
    );
    const staging = [...t.volumes.keys()].find((v) => v.startsWith('appdata-ferry-new-'))!;
    expect(t.volumeFiles(staging)).toEqual(APP_FILES);
    expect(replaceJournal()).toHaveLength(1);
    // the next run (its cause gone, this one exited) finishes it
    recordsOfDeadRuns();
    await recoverDeadRuns(t, progress);
    expectFinished(t, oldId);
  });

  it('a replace run that fails in its own commit ends with exit 14, and the next run finishes it', async () => {
    const { t, oldId } = await oldService();
    t.failOn('createVolume', (spec) => (spec as { Name?: string }).Name === 'appdata');
    const err = await failing(
      restore(t, new LocalTransport(bundle), { ...RESTORE, onConflict: 'replace' }, runContext().ctx),
    );
    expect(err).toBeInstanceOf(ReplaceUnfinishedError);
    expect([...t.volumes.keys()].some((v) => v.startsWith('appdata-ferry-new-'))).toBe(true);
    // this process is the run that failed: its record becomes a dead process's when it exits
    recordsOfDeadRuns();
    await recoverDeadRuns(t, progress);
    expectFinished(t, oldId);
  });
});

describe('restore --on-conflict replace of a container with an anonymous volume (image VOLUME)', () => {
  afterEach(() => rm(path.join(process.env.FERRY_STATE_DIR!, 'replacing.json'), { force: true }));

  /** A bundle of `cache`: named volume cachedata at /data, and its image's VOLUME /cache holding warm.txt. */
  async function cacheBundle(out: string): Promise<string> {
    const source = await sourceEngine();
    await source.addImage('shop/cache:1', [{ 'bin/cache': 'x' }], { Cmd: ['cache'], Volumes: { '/cache': {} } });
    source.addVolume('cachedata', { 'named.txt': 'named' });
    const id = await source.createContainer('cache', {
      Image: 'shop/cache:1',
      HostConfig: { NetworkMode: 'bridge', Mounts: [{ Type: 'volume', Source: 'cachedata', Target: '/data' }] },
    });
    await source.start(id);
    const anon = source.containers.get(id)!.mounts.find((m) => m.Destination === '/cache')!.Source;
    source.volumes.get(anon)!.files.set('warm.txt', {
      type: 'file',
      data: Buffer.from('warm'),
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtime: new Date(0),
    });
    const res = await backup(
      source,
      new LocalTransport(out),
      { containers: ['cache'], codec: 'gzip', includeBinds: false },
      runContext().ctx,
    );
    return res.location;
  }

  async function oldCache(): Promise<FakeEngine> {
    const t = await target();
    await t.addImage('old/cache:0', [{ 'old.txt': 'old' }]);
    t.addVolume('cachedata', { 'old.txt': 'the old data' });
    t.addContainer('cache', { image: 'old/cache:0', volumes: { cachedata: '/data' } });
    return t;
  }

  function cacheOf(t: FakeEngine): Record<string, string> | undefined {
    const c = t.containerByName('cache')!;
    return t.volumeFiles(c.mounts.find((m) => m.Destination === '/cache')!.Source);
  }

  for (const point of [undefined, 'commit-trial', 'commit-volume', 'commit-create'] as const)
    it(point ? `killed at ${point}: the next run keeps its data` : 'its data comes through the commit', async () => {
      const out = await tempDir();
      try {
        const b = await cacheBundle(out);
        const t = await oldCache();
        const opts = { ...RESTORE, onConflict: 'replace' as const };
        if (point) {
          await killedAt(point, [t], () => restore(t, new LocalTransport(b), opts, runContext().ctx));
          await recoverDeadRuns(t, progress);
        } else await restore(t, new LocalTransport(b), opts, runContext().ctx);
        expect(t.containerByName('cache')!.status).toBe('running');
        expect(t.volumeFiles('cachedata')).toEqual({ 'named.txt': 'named' });
        expect(cacheOf(t)).toEqual({ 'warm.txt': 'warm' });
        // no volume but the two the container mounts
        expect([...t.volumes.keys()].sort()).toEqual(
          t
            .containerByName('cache')!
            .mounts.map((m) => m.Source)
            .sort(),
        );
      } finally {
        await rm(out, { recursive: true, force: true });
      }
    });
});

describe('migrate --on-conflict replace killed in its commit on the target: the next run finishes it', () => {
  it('at commit-volume', async () => {
    const source = await sourceEngine();
    const t = new FakeEngine({ endpoint: 'tcp://target:2375', run: source.run });
    await t.ensureHolderImage();
    await t.addImage('old/app:0', [{ 'old.txt': 'old' }]);
    t.addVolume('appdata', { 'old.txt': 'the old data' });
    const old = t.addContainer('app', { image: 'old/app:0', volumes: { appdata: '/data' } });
    await killedAt('commit-volume', [source, t], () =>
      migrate(source, t, { ...MIGRATE, onConflict: 'replace' }, runContext().ctx),
    );
    for (const e of [source, t]) await recoverDeadRuns(e, progress);
    const app = t.containerByName('app')!;
    expect(app.id).not.toBe(old.id);
    expect(app.status).toBe('running');
    expect(app.mounts.map((m) => m.Source)).toEqual(['appdata']);
    expect(t.volumeFiles('appdata')).toEqual(APP_FILES);
    expect([...t.volumes.keys()]).toEqual(['appdata']);
    expect(source.containerByName('app')!.status).toBe('running');
  });
});

describe('migrate killed at each step: the next runs put the source back and clear the target', () => {
  for (const stopSource of [false, true])
    it.each<FaultPoint>(['quiesced', 'committed', 'volume-read', 'volume-fill', 'image-load', 'create'])(
      `${stopSource ? '--stop-source, ' : ''}at %s`,
      async (point) => {
        const source = await sourceEngine();
        const t = new FakeEngine({ endpoint: 'tcp://target:2375', run: source.run });
        await t.ensureHolderImage();
        const before = { source: source.state(), target: t.state() };
        await killedAt(point, [source, t], () =>
          migrate(source, t, { ...MIGRATE, stopSource, stopTimeout: 1 }, runContext().ctx),
        );
        for (const e of [source, t]) await recoverDeadRuns(e, progress);
        expect(source.state()).toEqual(before.source);
        expect(t.state()).toEqual(before.target);
      },
    );

  it('--stop-source, at the watch (started on the target): the source stays stopped', async () => {
    const source = await sourceEngine();
    const t = new FakeEngine({ endpoint: 'tcp://target:2375', run: source.run });
    await t.ensureHolderImage();
    await killedAt('watch', [source, t], () =>
      migrate(source, t, { ...MIGRATE, stopSource: true, stopTimeout: 1 }, runContext().ctx),
    );
    for (const e of [source, t]) await recoverDeadRuns(e, progress);
    expect(t.containerByName('app')!.status).toBe('running');
    expect(source.containerByName('app')!.status).toBe('exited'); // never both running
  });
});

describe('the made journal', () => {
  it('is empty once a restore has started its containers, and after a rollback', async () => {
    const t = await target();
    await restore(t, new LocalTransport(bundle), RESTORE, runContext().ctx);
    expect(new MadeJournal().stale(t.facts.endpoint)).toEqual([]);
    const made = path.join(process.env.FERRY_STATE_DIR!, 'made');
    expect(existsSync(made) ? readdirSync(made) : []).toEqual([]);
  });

  it('leaves alone a container recorded without its id that is older than the run', async () => {
    const t = await target();
    await t.addImage('other:1', [{ f: 'x' }]);
    t.addContainer('app', { image: 'other:1' });
    const before = t.state();
    mkdirSync(path.join(process.env.FERRY_STATE_DIR!, 'made'), { recursive: true });
    const file = path.join(process.env.FERRY_STATE_DIR!, 'made', 'dead.json');
    writeFileSync(
      file,
      JSON.stringify({
        engine: t.facts.endpoint,
        run: 'dead',
        made: [{ kind: 'container', name: 'app' }],
        pid: DEAD_PID,
        host: t.run.host,
        at: new Date(Date.now() + 60_000).toISOString(),
      }),
    );
    await recoverDeadRuns(t, progress);
    expect(t.state()).toEqual(before);
  });
});
