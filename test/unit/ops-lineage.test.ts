/**
 * Generations against the engine fake: a container restored by ferry runs on its snapshot image,
 * and its next backup records the same settings as the first (it is diffed against the image the
 * first generation ran on, which the snapshot's lineage names), so a restore of any generation
 * creates the same container.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../../src/ops/backup.js';
import { restore } from '../../src/ops/restore.js';
import { parseLineage } from '../../src/model/spec.js';
import type { Manifest } from '../../src/bundle/manifest.js';
import { LocalTransport } from '../../src/store/local.js';
import { redactManifest } from '../../src/store/catalog.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import { runContext, sourceEngine, tempDir, useTempStateDir } from '../helpers/ops-fixtures.js';

let cleanup: () => Promise<void>;
let dir: string;
beforeAll(async () => {
  cleanup = await useTempStateDir();
  dir = await tempDir();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await cleanup();
});

async function backupOf(engine: FakeEngine, gen: number): Promise<{ manifest: Manifest; file: string }> {
  const res = await backup(
    engine,
    new LocalTransport(path.join(dir, `gen${gen}.tar`)),
    { containers: ['app'], codec: 'gzip', includeBinds: false },
    runContext().ctx,
  );
  return { manifest: res.manifest, file: res.location };
}

describe('generations against the fake', () => {
  it('gen-2 and gen-3 record the settings, env and labels gen-1 did, and the same origin image', async () => {
    const source = await sourceEngine();
    const base = [...source.images.values()].find((i) => i.repoTags.includes('shop/app:1'))!;
    base.config.Labels = { 'org.example.vendor': 'shop' };
    source.containerByName('app')!.config.Labels = { 'org.example.vendor': 'shop', team: 'ops' };
    const gens: Manifest[] = [];
    let engine = source;
    for (let gen = 1; gen <= 3; gen++) {
      const { manifest, file } = await backupOf(engine, gen);
      gens.push(manifest);
      const target = new FakeEngine({ endpoint: `tcp://gen${gen}:2375` });
      await restore(
        target,
        new LocalTransport(file),
        { start: true, dryRun: false, onConflict: 'fail' },
        runContext().ctx,
      );
      // the restored container runs on the snapshot, which names the origin image
      const c = target.containerByName('app')!;
      const snap = await target.inspectImage(c.image);
      expect(snap.Comment).toBe('ferry snapshot of app');
      expect(parseLineage(snap.Author)).toEqual(manifest.containers[0]!.spec.origin);
      engine = target;
    }
    const first = gens[0]!.containers[0]!.spec;
    expect(first.config.Env).toEqual(['MODE=prod']);
    expect(first.config.Labels).toEqual({ team: 'ops' });
    expect(first.origin).toMatchObject({ ref: 'shop/app:1', id: base.id });
    // env values stay out of what ferry shows (inspect --json, catalog), the origin's too
    const shown = redactManifest(gens[1]!).containers[0]!.spec;
    expect(shown.config.Env).toEqual(['MODE']);
    expect(shown.origin?.config.Env).toEqual(['PATH']);
    for (const [i, m] of gens.entries()) {
      const spec = m.containers[0]!.spec;
      expect(spec.config, `generation ${i + 1}`).toEqual(first.config);
      expect(spec.origin, `generation ${i + 1}`).toEqual(first.origin);
      // it runs on the previous generation's snapshot from gen-2 on
      if (i > 0) expect(spec.baseImage.ref).toMatch(/^ferry\/app:/);
    }
  });
});
