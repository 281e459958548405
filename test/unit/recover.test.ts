/**
 * A run killed with SIGKILL cannot put back what it paused, stopped or committed; the next run on
 * that engine does (src/ops/steps/recover.ts), from the journal the dead run left.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recoverDeadRuns } from '../../src/ops/steps/recover.js';
import { QuiesceJournal, type QuiesceRecord } from '../../src/util/state.js';
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
