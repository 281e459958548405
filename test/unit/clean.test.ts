/** `ferry clean` (src/ops/clean.ts) against the engine fake: what goes, what stays, and why. */
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeEngine } from '../helpers/engine-fake.js';
import { clean, helperOwner, SNAPSHOT_TAG, type CleanJournals } from '../../src/ops/clean.js';
import { HOLDER_IMAGE, LABEL_OWNER, LABEL_ROLE } from '../../src/engine/engine.js';
import { MadeJournal, QuiesceJournal } from '../../src/util/state.js';
import { silentProgress } from '../../src/context.js';
import { snapshotRef } from '../../src/ops/steps/capture.js';
import { cleanJson, cleanText } from '../../src/cli/commands/clean.js';
import { FERRY_JSON_SCHEMA, validate } from '../helpers/json-schema.js';

const DEAD_PID = 4_194_305; // above Linux's pid_max: never a live process
let dir = '';
let journals: CleanJournals;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-clean-'));
  journals = {
    quiesce: new QuiesceJournal(path.join(dir, 'quiesced.json')),
    made: new MadeJournal(path.join(dir, 'made')),
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const ctx = { progress: silentProgress, signal: new AbortController().signal };
const NOW = new Date('2026-12-07T12:00:00Z');
const OLD = new Date('2026-12-01T00:00:00Z');
const opts = { dryRun: false, minAgeSeconds: 3600, now: NOW };

/** An engine with the app image, and `tags` each on an image of its own made at `when`. */
async function engineWith(tags: string[], when = OLD) {
  const e = new FakeEngine();
  await e.addImage('app:1', [{ '/app': 'v1' }]);
  for (const t of tags) {
    const id = await e.addImage(t, [{ '/snap': t }]);
    e.imageCreated.set(id, when);
  }
  return e;
}
const tagsOf = (e: FakeEngine) => [...e.images.values()].flatMap((i) => i.repoTags).sort();
const names = (items: { name: string }[]) => items.map((i) => i.name).sort();

describe('ferry clean', () => {
  it('removes unused snapshot images and keeps one a container (even stopped) was created from', async () => {
    const e = await engineWith([
      'ferry/web:20261201T000000Z',
      'ferry/db:20261201T000000Z',
      'ferry/old:20261101T000000Z',
    ]);
    e.addContainer('web', { image: 'ferry/web:20261201T000000Z', status: 'exited' });
    const r = await clean(e, ctx, opts, journals);
    expect(names(r.removed)).toEqual(['ferry/db:20261201T000000Z', 'ferry/old:20261101T000000Z']);
    expect(r.kept).toEqual([
      expect.objectContaining({ name: 'ferry/web:20261201T000000Z', reason: expect.stringContaining('web') }),
    ]);
    expect(r.failed).toEqual([]);
    expect(tagsOf(e)).toEqual(['app:1', 'ferry/web:20261201T000000Z']);
  });

  it('--dry-run lists the same and removes nothing', async () => {
    const e = await engineWith(['ferry/db:20261201T000000Z']);
    await e.ensureHolderImage();
    const before = tagsOf(e);
    const r = await clean(e, ctx, { ...opts, dryRun: true }, journals);
    expect(names(r.removed)).toEqual([HOLDER_IMAGE, 'ferry/db:20261201T000000Z'].sort());
    expect(tagsOf(e)).toEqual(before);
    expect(cleanText(r)).toMatch(/^would remove +image +ferry-holder:empty +ferry’s empty holder image/m);
    expect(cleanText(r)).toMatch(/2 objects would be removed, 0 kept\n$/);
    expect(e.calls.filter((c) => /^remove/.test(c.method))).toEqual([]);
  });

  it('never touches images that only look alike, and only untags a snapshot that has another name', async () => {
    const e = await engineWith(['ferry/tool:latest', 'ferry/web:nightly', 'other/web:20261201T000000Z']);
    const appId = [...e.images.values()].find((i) => i.repoTags.includes('app:1'))!.id;
    await e.addImage('ferry/app:20261201T000000Z', [{ '/app': 'v1' }]); // the same image as app:1
    e.imageCreated.set(appId, OLD);
    const r = await clean(e, ctx, opts, journals);
    expect(names(r.removed)).toEqual(['ferry/app:20261201T000000Z']);
    expect(tagsOf(e)).toEqual(['app:1', 'ferry/tool:latest', 'ferry/web:nightly', 'other/web:20261201T000000Z']);
    expect(e.images.has(appId)).toBe(true);
  });

  it('keeps snapshots younger than --min-age; --min-age 0 removes them', async () => {
    const e = await engineWith(['ferry/web:20261207T115500Z'], new Date(NOW.getTime() - 5 * 60_000));
    const r = await clean(e, ctx, { ...opts, dryRun: true }, journals);
    expect(r.removed).toEqual([]);
    expect(r.kept[0]!.reason).toMatch(/5 min ago.*--min-age 3600s/);
    const r0 = await clean(e, ctx, { ...opts, minAgeSeconds: 0 }, journals);
    expect(names(r0.removed)).toEqual(['ferry/web:20261207T115500Z']);
  });

  it('keeps what a live run recorded, and the newest snapshot of each container and the holder image while it runs', async () => {
    const e = await engineWith([
      'ferry/web:20261201T000000Z',
      'ferry/web:20261202T000000Z',
      'ferry/db:20261201T000000Z',
      'ferry/cache:20261201T000000Z',
    ]);
    await e.ensureHolderImage();
    const db = [...e.images.values()].find((i) => i.repoTags.includes('ferry/db:20261201T000000Z'))!;
    // A live backup (this very process stands for it) committed db's snapshot: the journal says so.
    journals.quiesce.add({
      engine: e.facts.endpoint,
      containerId: db.id,
      name: 'ferry/db:20261201T000000Z',
      action: 'snapshot',
    });
    const r = await clean(e, ctx, opts, journals);
    expect(names(r.removed)).toEqual(['ferry/web:20261201T000000Z']);
    const why = Object.fromEntries(r.kept.map((k) => [k.name, k.reason]));
    expect(why['ferry/db:20261201T000000Z']).toMatch(/still running/);
    expect(why['ferry/web:20261202T000000Z']).toMatch(/newest snapshot of web/);
    expect(why['ferry/cache:20261201T000000Z']).toMatch(/newest snapshot of cache/);
    expect(why[HOLDER_IMAGE]).toMatch(/may be about to use it/);
  });

  it('keeps an image a live restore loaded (made journal), removes it once that run is dead', async () => {
    const e = await engineWith(['ferry/web:20261201T000000Z']);
    const made = path.join(dir, 'made');
    journals.made.add(e.facts.endpoint, 'run1', { kind: 'image', name: 'ferry/web:20261201T000000Z' });
    const r = await clean(e, ctx, { ...opts, dryRun: true }, journals);
    expect(r.kept[0]).toMatchObject({
      name: 'ferry/web:20261201T000000Z',
      reason: expect.stringMatching(/loaded by a ferry run/),
    });
    journals.made.drop(e.facts.endpoint, 'run1');
    const r2 = await clean(e, ctx, opts, { ...journals, made: new MadeJournal(made) });
    expect(names(r2.removed)).toEqual(['ferry/web:20261201T000000Z']);
  });

  it('removes helpers of dead runs on this host, then the holder image they used; keeps live and foreign ones', async () => {
    const e = await engineWith([]);
    await e.ensureHolderImage();
    const helper = (name: string, owner: string) =>
      e.addContainer(name, {
        image: HOLDER_IMAGE,
        status: 'created',
        labels: { [LABEL_ROLE]: 'holder', [LABEL_OWNER]: owner },
      });
    helper('ferry-holder-dead', `${hostname()}/${DEAD_PID}`);
    const r = await clean(e, ctx, opts, journals);
    expect(r.removed.map((i) => `${i.kind} ${i.name}`)).toEqual([
      'container ferry-holder-dead',
      `image ${HOLDER_IMAGE}`,
    ]);
    expect(e.containers.size).toBe(0);
    expect(tagsOf(e)).toEqual(['app:1']);

    await e.ensureHolderImage();
    helper('ferry-holder-live', `${hostname()}/1`); // pid 1 always runs
    helper('ferry-holder-elsewhere', `other-host/${DEAD_PID}`);
    const r2 = await clean(e, ctx, opts, journals);
    expect(r2.removed).toEqual([]);
    expect(Object.fromEntries(r2.kept.map((k) => [k.name, k.reason]))).toEqual({
      'ferry-holder-live': expect.stringMatching(/pid 1\) is still running/),
      'ferry-holder-elsewhere': expect.stringMatching(/host other-host/),
      [HOLDER_IMAGE]: expect.stringMatching(/used by container/),
    });
    expect(e.containers.size).toBe(2);
  });

  it('with containers named, only their snapshots; never the holder image', async () => {
    const e = await engineWith(['ferry/web:20261201T000000Z', 'ferry/db:20261201T000000Z']);
    await e.ensureHolderImage();
    const r = await clean(e, ctx, { ...opts, containers: ['Web'] }, journals);
    expect(names(r.removed)).toEqual(['ferry/web:20261201T000000Z']);
    expect(tagsOf(e)).toEqual(['app:1', 'ferry/db:20261201T000000Z', HOLDER_IMAGE].sort());
  });

  it('a removal the engine refuses is reported as failed, the rest go on', async () => {
    const e = await engineWith(['ferry/a:20261201T000000Z', 'ferry/b:20261201T000000Z']);
    e.failOn('removeImage', (ref: string) => ref === 'ferry/a:20261201T000000Z');
    const r = await clean(e, ctx, opts, journals);
    expect(names(r.removed)).toEqual(['ferry/b:20261201T000000Z']);
    expect(r.failed.map((f) => f.name)).toEqual(['ferry/a:20261201T000000Z']);
    const j = {
      schemaVersion: 1,
      command: 'clean',
      ok: false,
      error: { code: 'ENGINE', exitCode: 4, message: 'm', hint: null },
      ...cleanJson(r),
    };
    expect(validate(FERRY_JSON_SCHEMA, j)).toEqual([]);
    expect(cleanText(r)).toMatch(/1 object removed, 1 could not be removed, 0 kept/);
  });
});

describe('helpers of clean', () => {
  it('SNAPSHOT_TAG matches what snapshotRef makes, and nothing looser', () => {
    const r = snapshotRef('My_App.1', new Date('2026-12-07T10:11:12.345Z'));
    expect(SNAPSHOT_TAG.test(`${r.repo}:${r.tag}`)).toBe(true);
    for (const t of ['ferry/x:latest', 'ferry/x:20261207T101112', 'x/ferry/x:20261207T101112Z', 'ferry-holder:empty'])
      expect(SNAPSHOT_TAG.test(t), t).toBe(false);
  });

  it('helperOwner: dead only when on this host and the process is gone', () => {
    const me = { host: 'h1', pid: 10 };
    const l = (o: string) => ({ [LABEL_OWNER]: o });
    expect(helperOwner(l('h1/20'), me, () => false)).toEqual({ dead: true, pid: 20 });
    expect(helperOwner(l('h1/20'), me, () => true).dead).toBe(false);
    expect(helperOwner(l('h1/10'), me, () => false).dead).toBe(false);
    expect(helperOwner(l('h2/20'), me, () => false).dead).toBe(false);
    expect(helperOwner({}, me, () => false).dead).toBe(false);
    expect(helperOwner(l('h1/x'), me, () => false).dead).toBe(false);
  });
});
