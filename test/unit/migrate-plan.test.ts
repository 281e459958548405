/**
 * `ferry migrate --dry-run` (ops/migrate-plan.ts) between two in-memory engines: the plan names
 * what would move and where, with sizes, data paths and conflicts, and neither engine changes
 * (no pause, no commit, no create, no helper, no image).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { planMigrate } from '../../src/ops/migrate-plan.js';
import type { MigrateOptions } from '../../src/ops/migrate.js';
import { envelope } from '../../src/cli/json.js';
import { migratePlanText } from '../../src/cli/commands/migrate.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import { APP_FILES, runContext, sourceEngine, useTempStateDir } from '../helpers/ops-fixtures.js';
import { schemaChecked } from '../helpers/json-schema.js';

const OPTS: MigrateOptions = { containers: ['app'], onConflict: 'fail', start: true, stopSource: false };

let cleanup: () => Promise<void>;
beforeAll(async () => {
  cleanup = await useTempStateDir();
});
afterAll(async () => cleanup());

let source: FakeEngine;
let target: FakeEngine;
beforeEach(async () => {
  source = await sourceEngine();
  target = new FakeEngine({ endpoint: 'tcp://target:2375', run: source.run });
});

const CHANGES = [
  'pause',
  'unpause',
  'stop',
  'start',
  'commit',
  'createContainer',
  'removeContainer',
  'createVolume',
  'removeVolume',
  'createNetwork',
  'loadImage',
  'ensureHolderImage',
  'putArchive',
  'getArchive',
  'saveImages',
];

function plan(opts: Partial<MigrateOptions> = {}) {
  return planMigrate(source, target, { ...OPTS, ...opts }, runContext().ctx);
}

describe('migrate --dry-run', () => {
  it('names what would move, where and how much, and changes neither engine', async () => {
    const before = [source.state(), target.state()];
    const p = await plan({ stopSource: true });
    expect([source.state(), target.state()]).toEqual(before);
    expect(source.methods(CHANGES)).toEqual([]);
    expect(target.methods(CHANGES)).toEqual([]);
    const files = Object.values(APP_FILES).reduce((a, t) => a + Buffer.byteLength(t), 0);
    expect(p).toMatchObject({
      source: 'tcp://source:2375',
      target: 'tcp://target:2375',
      containers: [
        {
          name: 'app',
          to: 'app',
          state: 'running',
          consistency: 'stop',
          stopSource: true,
          targetHasImage: false,
          start: true,
          replace: false,
        },
      ],
      // A TCP engine: no host path, the engine's archive on both sides; the engine's count of bytes.
      volumes: [
        {
          name: 'appdata',
          to: 'appdata',
          rawBytes: files,
          exists: false,
          read: 'engine-archive',
          write: 'engine-archive',
        },
      ],
      networks: [{ name: 'appnet', exists: false }],
      conflicts: [],
      volumeBytes: files,
    });
    expect(p.containers[0]!.imageBytes).toBeGreaterThan(0);
    expect(p.imageBytes).toBe(p.containers[0]!.imageBytes);
    const j = schemaChecked(
      envelope('migrate', {
        ok: true,
        dryRun: true,
        source: p.source,
        target: p.target,
        containers: ['app'],
        plan: p,
      }),
    );
    expect(j.plan).toEqual(JSON.parse(JSON.stringify(p)));
    expect(migratePlanText(p)).toMatch(/app \(running\): stopped, and left stopped \(--stop-source\)/);
  });

  it('lists what is on the target already as conflicts (fail), new names (rename) or replacements', async () => {
    await target.createVolume({ Name: 'appdata' });
    await target.ensureHolderImage();
    const id = await target.createContainer('app', { Image: (await target.ensureHolderImage()) as string });
    expect(id).toBeTruthy();
    target.calls.length = 0;
    const before = target.state();
    const fail = await plan();
    expect(fail.conflicts).toEqual([
      'container app exists on the target (--on-conflict fail)',
      'volume appdata exists on the target (--on-conflict fail)',
    ]);
    expect(migratePlanText(fail)).toMatch(/conflicts \(the real run would stop here/);
    const rename = await plan({ onConflict: 'rename' });
    expect(rename.conflicts).toEqual([]);
    expect(rename.containers[0]!.to).toBe('app-restored');
    expect(rename.volumes[0]!.to).toBe('appdata-restored');
    const replace = await plan({ onConflict: 'replace' });
    expect(replace.containers[0]!.replace).toBe(true);
    expect(replace.volumes[0]).toMatchObject({ exists: true, replace: true, to: 'appdata' });
    expect(target.state()).toEqual(before);
    expect(target.methods(CHANGES)).toEqual([]);
  });
});
