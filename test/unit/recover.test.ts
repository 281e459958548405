/**
 * A run killed with SIGKILL cannot put back what it paused, stopped or committed; the next run on
 * that engine does (src/ops/steps/recover.ts), from the journal the dead run left.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recoverDeadRuns } from '../../src/ops/steps/recover.js';
import { QuiesceJournal, ReplaceJournal, type QuiesceRecord, type ReplaceRecord } from '../../src/util/state.js';
import type { Progress } from '../../src/context.js';
import { sourceEngine, tempDir } from '../helpers/ops-fixtures.js';
import type { FakeEngine } from '../helpers/engine-fake.js';

/** A pid no process has (above the kernel's pid_max). */
const DEAD_PID = 4_194_305;

let dir = '';
let fake: FakeEngine;
let journal: QuiesceJournal;
const said: string[] = [];
const progress: Progress = { step() {}, info: (m) => said.push(m), warn: (m) => said.push(m), bytes() {} };

function leftByDeadRun(r: Pick<QuiesceRecord, 'containerId' | 'name' | 'action'>, pid = DEAD_PID) {
  const file = path.join(dir, 'quiesced.json');
  let recs: QuiesceRecord[] = [];
  try {
    recs = JSON.parse(readFileSync(file, 'utf8')) as QuiesceRecord[];
  } catch {
    /* none yet */
  }
  recs.push({ engine: fake.facts.endpoint, ...r, pid, host: hostname(), at: '2026-12-07T02:00:00.000Z' });
  writeFileSync(file, JSON.stringify(recs));
}

beforeEach(async () => {
  dir = await tempDir('ferry-recover-');
  journal = new QuiesceJournal(path.join(dir, 'quiesced.json'));
  fake = await sourceEngine();
  said.length = 0;
});
afterEach(async () => {
  const { rm } = await import('node:fs/promises');
  await rm(dir, { recursive: true, force: true });
});

describe("recoverDeadRuns: the next run finishes a killed run's undo", () => {
  it('resumes a container the dead run left paused, and says so', async () => {
    const app = fake.containerByName('app')!;
    await fake.pause(app.id);
    leftByDeadRun({ containerId: app.id, name: 'app', action: 'paused' });
    await recoverDeadRuns(fake, progress, journal);
    expect((await fake.inspectContainer('app')).State.Paused).toBe(false);
    expect(said.join('\n')).toMatch(
      /resumed container app: a ferry run \(pid 4194305\) that was killed at .* had left it paused/,
    );
    expect(journal.stale(fake.facts.endpoint)).toEqual([]);
  });

  it('starts again a container the dead run left stopped', async () => {
    const app = fake.containerByName('app')!;
    await fake.stop(app.id);
    leftByDeadRun({ containerId: app.id, name: 'app', action: 'stopped' });
    await recoverDeadRuns(fake, progress, journal);
    expect((await fake.inspectContainer('app')).State.Running).toBe(true);
    expect(said.join('\n')).toMatch(/started container app again/);
  });

  it('removes the snapshot image the dead run committed', async () => {
    const id = await fake.commit(fake.containerByName('app')!.id, 'ferry/app', '20261207T020000Z', {});
    leftByDeadRun({ containerId: id, name: 'ferry/app:20261207T020000Z', action: 'snapshot' });
    await recoverDeadRuns(fake, progress, journal);
    expect(await fake.imageExists(id)).toBe(false);
    expect(said.join('\n')).toMatch(/removed the snapshot image ferry\/app:20261207T020000Z/);
  });

  it('leaves alone what a live run holds, and only forgets what was put right by hand', async () => {
    const app = fake.containerByName('app')!;
    await fake.pause(app.id);
    leftByDeadRun({ containerId: app.id, name: 'app', action: 'paused' }, process.pid); // this very process: alive
    await recoverDeadRuns(fake, progress, journal);
    expect((await fake.inspectContainer('app')).State.Paused).toBe(true);
    await fake.unpause(app.id);
    leftByDeadRun({ containerId: app.id, name: 'app', action: 'paused' });
    await recoverDeadRuns(fake, progress, journal);
    expect(said).toEqual([]);
    expect(journal.stale(fake.facts.endpoint)).toEqual([]);
  });
});

describe('recoverDeadRuns: a replace cut by SIGKILL is put right', () => {
  let replaces: ReplaceJournal;
  beforeEach(() => {
    replaces = new ReplaceJournal(path.join(dir, 'replacing.json'));
  });
  function leftReplace(r: Pick<ReplaceRecord, 'phase' | 'staging' | 'aside' | 'created'>) {
    const rec: ReplaceRecord = {
      engine: fake.facts.endpoint,
      run: 'dead-run',
      ...r,
      pid: DEAD_PID,
      host: hostname(),
      at: '2026-12-07T02:00:00.000Z',
    };
    writeFileSync(path.join(dir, 'replacing.json'), JSON.stringify([rec]));
  }

  it('killed during the fill: removes the staging volume, leaves the old service alone', async () => {
    fake.addVolume('appdata-ferry-new-dead-run', { half: 'written' });
    leftReplace({ phase: 'staging', staging: ['appdata-ferry-new-dead-run'], aside: [], created: [] });
    const app = fake.containerByName('app')!;
    await recoverDeadRuns(fake, progress, journal, replaces);
    expect(fake.volumes.has('appdata-ferry-new-dead-run')).toBe(false);
    expect(fake.containerByName('app')).toBe(app);
    expect(said.join('\n')).toMatch(/removed the staging volume appdata-ferry-new-dead-run/);
    expect(replaces.stale(fake.facts.endpoint)).toEqual([]);
  });

  it('killed with the old set aside: removes the new container, puts the old back and starts it', async () => {
    const app = fake.containerByName('app')!;
    await fake.stop(app.id);
    await fake.renameContainer(app.id, 'app-ferry-old-dead-run');
    const image = app.image;
    const made = fake.addContainer('app', { image, volumes: { appdata: '/data' } });
    fake.addVolume('appdata-ferry-new-dead-run', { new: 'data' });
    leftReplace({
      phase: 'aside',
      staging: ['appdata-ferry-new-dead-run'],
      aside: [{ name: 'app', aside: 'app-ferry-old-dead-run', id: app.id, running: true, paused: false }],
      created: [made.id],
    });
    await recoverDeadRuns(fake, progress, journal, replaces);
    expect(fake.containers.has(made.id)).toBe(false);
    const back = fake.containerByName('app')!;
    expect(back.id).toBe(app.id);
    expect(back.status).toBe('running');
    expect(fake.volumes.has('appdata-ferry-new-dead-run')).toBe(false);
    expect(said.join('\n')).toMatch(/put back container app/);
  });

  it('leaves a replace another live run is putting right alone; takes over the claim of a dead one', async () => {
    fake.addVolume('appdata-ferry-new-dead-run', { half: 'written' });
    leftReplace({ phase: 'staging', staging: ['appdata-ferry-new-dead-run'], aside: [], created: [] });
    const release = new ReplaceJournal(path.join(dir, 'replacing.json')).claim(fake.facts.endpoint, 'dead-run')!;
    expect(release).toBeTypeOf('function');
    await recoverDeadRuns(fake, progress, journal, replaces); // claimed by this (live) process
    expect(fake.volumes.has('appdata-ferry-new-dead-run')).toBe(true);
    expect(replaces.stale(fake.facts.endpoint)).toHaveLength(1);
    // the claim of a run that died holding it is taken over
    const claim = readdirSync(dir).find((f) => f.endsWith('.claim'))!;
    writeFileSync(path.join(dir, claim), `${DEAD_PID}\n`);
    await recoverDeadRuns(fake, progress, journal, replaces);
    expect(fake.volumes.has('appdata-ferry-new-dead-run')).toBe(false);
    expect(replaces.stale(fake.facts.endpoint)).toEqual([]);
    expect(readdirSync(dir).filter((f) => f.endsWith('.claim'))).toEqual([]);
  });
});
