/**
 * ferry prune on a real local store whose newest bundle verify marked damaged: the mark is read,
 * the damaged bundle counts towards no rule and stays, older good ones are kept in its stead.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { BundleWriter } from '../../src/bundle/writer.js';
import { silentProgress } from '../../src/context.js';
import { prune } from '../../src/ops/prune.js';
import { LocalStore } from '../../src/store/local.js';
import { recordDamaged } from '../../src/store/marks.js';
import { IMAGE_MEMBER, makeManifest, VOLUME_MEMBER } from './bundle-fixtures.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A store with bundles a.tar, b.tar, ... created a day apart, oldest first. */
async function storeWith(n: number): Promise<{ dir: string; store: LocalStore; names: string[] }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-prune-damaged-'));
  dirs.push(dir);
  const store = new LocalStore(dir);
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${String.fromCharCode(97 + i)}.tar`;
    const manifest = { ...makeManifest(), createdAt: new Date(Date.UTC(2026, 10, 1 + i, 2)).toISOString() };
    const w = new BundleWriter(await store.create(name, { replace: true }), manifest);
    await w.begin();
    await w.addMember(VOLUME_MEMBER, Readable.from([Buffer.from('volume data')]), 'none');
    await w.addMember(IMAGE_MEMBER, Readable.from([Buffer.from('image data')]), 'gzip');
    await w.finish();
    names.push(name);
  }
  return { dir, store, names };
}

const ctx = () => ({ progress: silentProgress, signal: new AbortController().signal });
const tars = (dir: string) =>
  readdirSync(dir)
    .filter((n) => n.endsWith('.tar'))
    .sort();

describe('prune reads the damage marks verify left', () => {
  it('keep-last 2 with the newest marked: the two good ones before it stay, the damaged one too, only the oldest goes', async () => {
    const { dir, names } = await storeWith(4);
    const store = new LocalStore(dir);
    await recordDamaged(store, 'd.tar', {
      at: '2026-11-05T03:00:00.000Z',
      reason: 'bad volumes/webdata.tar: checksum',
    });
    const dry = await prune(dir, { policy: { last: 2 }, dryRun: true, lock: {} }, ctx());
    expect(dry.damaged.map((x) => path.basename(x.bundle))).toEqual(['d.tar']);
    expect(dry.damaged[0]!.mark.reason).toContain('checksum');
    expect(dry.removed.map((x) => path.basename(x.bundle))).toEqual(['a.tar']);
    expect(tars(dir)).toEqual(names);

    const res = await prune(dir, { policy: { last: 2 }, dryRun: false, lock: {} }, ctx());
    expect(res.kept.map((x) => path.basename(x.bundle)).sort()).toEqual(['b.tar', 'c.tar']);
    expect(res.removed.map((x) => path.basename(x.bundle))).toEqual(['a.tar']);
    expect(tars(dir)).toEqual(['b.tar', 'c.tar', 'd.tar']);
    expect(existsSync(path.join(dir, 'd.tar.damaged'))).toBe(true); // prune leaves marks alone
  });

  it('every bundle damaged: nothing is removed', async () => {
    const { dir, store, names } = await storeWith(3);
    for (const n of names) await recordDamaged(store, n, { at: '2026-11-05T03:00:00.000Z', reason: 'bad' });
    const res = await prune(dir, { policy: { last: 1 }, dryRun: false, lock: {} }, ctx());
    expect(res.removed).toEqual([]);
    expect(res.kept).toEqual([]);
    expect(res.damaged).toHaveLength(3);
    expect(tars(dir)).toEqual(names);
  });

  it('a mark that is not JSON still marks its bundle', async () => {
    const { dir, store } = await storeWith(2);
    const sink = await store.create('b.tar.damaged', { replace: true });
    await sink.write(Buffer.from('by hand'));
    await sink.commit();
    const res = await prune(dir, { policy: { last: 1 }, dryRun: true, lock: {} }, ctx());
    expect(res.damaged.map((x) => path.basename(x.bundle))).toEqual(['b.tar']);
    expect(res.kept.map((x) => path.basename(x.bundle))).toEqual(['a.tar']);
    expect(res.removed).toEqual([]);
  });
});
