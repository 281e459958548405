/**
 * The conformance suite every Store passes (after restic's internal/backend/test/suite.go): call
 * describeStoreConformance() from a test file with a factory of fresh, empty stores and the
 * capabilities the store declares. The suite checks that the store declares exactly those, runs
 * the cases of each capability it has, and, for each it has not, checks that the store refuses
 * the operation (a case that cannot apply is reported as skipped, by name, never passed).
 * Not a test file itself.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { NotFoundError, UsageError } from '../../src/errors.js';
import { LockedError } from '../../src/store/lock.js';
import { clearDamaged, readDamaged, recordDamaged } from '../../src/store/marks.js';
import type { BundleSink, Store, StoreCapabilities } from '../../src/store/store.js';
import { collect } from '../helpers/tar.js';

/** A stream's bytes (the store tests' name for the shared collect). */
export { collect as readAll };

export interface StoreFixture {
  /** A fresh, empty store (its directory may or may not exist yet). */
  store: Store;
  /** Every name in the store's backend, hidden files and temporaries included: what a run left behind. */
  residue?: () => Promise<string[]>;
  /** Put a lock left by a run that died into the store (lockable stores). */
  plantStaleLock?: () => Promise<void>;
  /** A credential that is part of the store's location: describe() must not show it. */
  secret?: string;
  /** The store keeps other bytes than it is given (it encrypts them): stored sizes are not compared. */
  transformsBytes?: boolean;
  cleanup?: () => Promise<void>;
}

/** Write `data` in uneven chunks (through writev where the sink has it) and commit. */
export async function writeBundle(sink: BundleSink, data: Buffer, commit = true): Promise<void> {
  let off = 0;
  let i = 0;
  while (off < data.length) {
    const n = Math.min(data.length - off, [1, 511, 4096, 65_537, 1 << 20][i++ % 5]!);
    const chunk = data.subarray(off, off + n);
    if (sink.writev && i % 2) await sink.writev([chunk.subarray(0, n >> 1), chunk.subarray(n >> 1)]);
    else await sink.write(chunk);
    off += n;
  }
  expect(sink.position).toBe(data.length);
  if (commit) await sink.commit();
}

const payload = (n: number) => randomBytes(n);

export function describeStoreConformance(
  name: string,
  makeStore: () => Promise<StoreFixture>,
  declared: { capabilities: StoreCapabilities },
): void {
  const caps = declared.capabilities;
  const fixtures: StoreFixture[] = [];
  const fresh = async () => {
    const f = await makeStore();
    fixtures.push(f);
    return f;
  };
  const names = async (s: Store) => (await s.list()).map((b) => b.name);

  describe(`store conformance: ${name}`, () => {
    afterEach(async () => {
      for (const f of fixtures.splice(0)) {
        await f.store.close();
        await f.cleanup?.();
      }
    });

    it('declares exactly the capabilities given', async () => {
      const { store } = await fresh();
      expect({ ...store.capabilities }).toEqual(caps);
    });

    it('describe() leaves credentials out', async () => {
      const f = await fresh();
      const all = [f.store.describe(), f.store.describe('x.tar')];
      for (const d of all) {
        expect(d).toBeTruthy();
        if (f.secret) expect(d).not.toContain(f.secret);
      }
    });

    it('writes a bundle and reads it back byte-identical', async () => {
      const { store } = await fresh();
      const data = payload((5 << 20) + 12_345);
      const sink = await store.create('a.tar');
      expect(sink.name).toBe('a.tar');
      // The writer asks the sink: it must agree with what the store declares.
      expect(sink.seekable).toBe(caps.seekable);
      expect(typeof sink.rewind === 'function').toBe(caps.rewindable);
      await writeBundle(sink, data);
      const got = await store.open(sink.name);
      const back = await collect(got.stream);
      expect(back.length).toBe(data.length);
      expect(back.equals(data)).toBe(true);
      expect(got.location).toBeTruthy();
    });

    it('an empty bundle round-trips', async () => {
      const { store } = await fresh();
      const sink = await store.create('empty.tar');
      await sink.commit();
      expect((await collect((await store.open(sink.name)).stream)).length).toBe(0);
    });

    describe('listable', () => {
      it.runIf(caps.listable)('lists only complete bundles, in name order, with their sizes', async () => {
        const f = await fresh();
        const s = f.store;
        const b = await s.create('b.tar');
        await writeBundle(b, payload(1000));
        const a = await s.create('a.tar');
        await writeBundle(a, payload(2000), false);
        expect(await names(s)).toEqual(['b.tar']); // a.tar is still being written
        expect(await s.stat('a.tar')).toBeUndefined();
        await a.commit();
        const list = await s.list();
        expect(list.map((x) => x.name)).toEqual(['a.tar', 'b.tar']);
        const st = await s.stat('a.tar');
        expect(st?.name).toBe('a.tar');
        expect(st?.location).toBe(list[0]!.location);
        expect(st?.location).toBe(s.describe('a.tar'));
        if (f.transformsBytes) return;
        expect(list.map((x) => x.size)).toEqual([2000, 1000]);
        expect(st?.size).toBe(2000);
      });

      it.runIf(caps.listable)('abort leaves nothing listed, nothing at the final name, no temporary', async () => {
        const f = await fresh();
        const s = f.store;
        const keep = await s.create('keep.tar');
        await writeBundle(keep, payload(10));
        const before = (await f.residue?.()) ?? [];
        const sink = await s.create('gone.tar');
        await writeBundle(sink, payload(300_000), false);
        await sink.abort();
        await sink.abort(); // twice is fine
        expect(await names(s)).toEqual(['keep.tar']);
        expect(await s.stat('gone.tar')).toBeUndefined();
        await expect(s.open('gone.tar')).rejects.toBeInstanceOf(NotFoundError);
        if (f.residue) expect((await f.residue()).sort()).toEqual(before.sort());
        // abort after commit changes nothing
        await keep.abort();
        expect(await names(s)).toEqual(['keep.tar']);
      });

      it.runIf(caps.listable)('an existing name is never overwritten: a free one near it is chosen', async () => {
        const { store: s } = await fresh();
        const first = payload(4000);
        await writeBundle(await s.create('x.tar'), first);
        const second = await s.create('x.tar');
        expect(second.name).not.toBe('x.tar');
        expect(second.name).toBe('x-2.tar');
        await writeBundle(second, payload(10));
        expect((await collect((await s.open('x.tar')).stream)).equals(first)).toBe(true);
        // several at once, none committed yet: each gets its own
        const sinks = await Promise.all([s.create('y.tar'), s.create('y.tar'), s.create('y.tar')]);
        expect(new Set(sinks.map((k) => k.name)).size).toBe(3);
        for (const k of sinks) await writeBundle(k, Buffer.from(k.name));
        for (const k of sinks) expect((await collect((await s.open(k.name)).stream)).toString()).toBe(k.name);
        expect(await names(s)).toEqual(['x-2.tar', 'x.tar', 'y-2.tar', 'y-3.tar', 'y.tar']);
      });

      it.runIf(caps.listable && caps.atomicCommit)(
        'replace writes at exactly that name; the old bundle stays until commit',
        async () => {
          const { store: s } = await fresh();
          const old = payload(1000);
          await writeBundle(await s.create('r.tar'), old);
          const sink = await s.create('r.tar', { replace: true });
          expect(sink.name).toBe('r.tar');
          const now = payload(3000);
          await writeBundle(sink, now, false);
          expect((await collect((await s.open('r.tar')).stream)).equals(old)).toBe(true);
          await sink.commit();
          expect((await collect((await s.open('r.tar')).stream)).equals(now)).toBe(true);
          expect(await names(s)).toEqual(['r.tar']);
        },
      );

      it.runIf(caps.listable)('remove and rename', async () => {
        const { store: s } = await fresh();
        const data = payload(500);
        await writeBundle(await s.create('a.tar'), data);
        await writeBundle(await s.create('b.tar'), payload(5));
        await s.rename('a.tar', 'a.tar.corrupt');
        expect(await names(s)).toEqual(['b.tar']); // not a bundle name any more
        expect((await collect((await s.open('a.tar.corrupt')).stream)).equals(data)).toBe(true);
        await s.remove('b.tar');
        expect(await names(s)).toEqual([]);
        expect(await s.stat('b.tar')).toBeUndefined();
        await expect(s.open('b.tar')).rejects.toBeInstanceOf(NotFoundError);
        await expect(s.remove('b.tar')).rejects.toBeInstanceOf(NotFoundError);
        // a name ever quarantined is not chosen again
        const again = await s.create('a.tar');
        expect(again.name).toBe('a-2.tar');
        await again.abort();
      });

      it.runIf(caps.listable)(
        'a damage mark sits beside its bundle: read back, never listed as a bundle, removed',
        async () => {
          const { store: s } = await fresh();
          const data = payload(300);
          await writeBundle(await s.create('a.tar'), data);
          expect(await readDamaged(s, 'a.tar')).toBeUndefined();
          const mark = { at: '2026-12-07T18:00:00.000Z', reason: 'bad volume-data: checksum mismatch', bytes: 300 };
          await recordDamaged(s, 'a.tar', mark);
          expect(await readDamaged(s, 'a.tar')).toEqual(mark);
          expect(await names(s)).toEqual(['a.tar']); // the mark is not a bundle
          expect((await collect((await s.open('a.tar')).stream)).equals(data)).toBe(true);
          // recorded again (a later verify): replaced, not a second one
          await recordDamaged(s, 'a.tar', { ...mark, reason: 'again' });
          expect((await readDamaged(s, 'a.tar'))?.reason).toBe('again');
          // a backup never chooses the name of a bundle that has a mark
          await s.remove('a.tar');
          const sink = await s.create('a.tar');
          expect(sink.name).toBe('a-2.tar');
          await sink.abort();
          expect(await clearDamaged(s, 'a.tar')).toBe(true);
          expect(await readDamaged(s, 'a.tar')).toBeUndefined();
          expect(await clearDamaged(s, 'a.tar')).toBe(false);
        },
      );

      it.runIf(caps.listable)('a name is one name in the store, never a path out of it', async () => {
        const f = await fresh();
        await writeBundle(await f.store.create('a.tar'), payload(1));
        for (const bad of ['../out.tar', 'sub/x.tar', '..', ''])
          await expect(f.store.create(bad), bad).rejects.toBeInstanceOf(UsageError);
        await expect(f.store.remove('../a.tar')).rejects.toBeInstanceOf(UsageError);
        await expect(f.store.rename('a.tar', '../a.tar')).rejects.toBeInstanceOf(UsageError);
        expect(await names(f.store)).toEqual(['a.tar']);
      });

      it.runIf(caps.listable)('a store that is not there: list() says so, exists() is false', async () => {
        const { store: s } = await fresh();
        expect(await s.exists()).toBe(false);
        await expect(s.list()).rejects.toBeInstanceOf(NotFoundError);
        await writeBundle(await s.create('a.tar'), payload(1)); // created by the first write
        expect(await s.exists()).toBe(true);
      });

      it.skipIf(caps.listable)('not listable: list, stat, remove and rename are refused', async () => {
        const { store: s } = await fresh();
        await expect(s.list()).rejects.toBeInstanceOf(UsageError);
        await expect(s.stat('a.tar')).rejects.toBeInstanceOf(UsageError);
        await expect(s.remove('a.tar')).rejects.toBeInstanceOf(UsageError);
        await expect(s.rename('a.tar', 'b.tar')).rejects.toBeInstanceOf(UsageError);
        expect(await s.exists()).toBe(false);
      });
    });

    describe('lockable', () => {
      const lockOpts = { timeoutMs: 0, pollMs: 20 };

      it.runIf(caps.lockable)('the lock is exclusive until released', async () => {
        const { store: s } = await fresh();
        await writeBundle(await s.create('a.tar'), payload(1)); // the store exists
        const held = await s.lock({ ...lockOpts, purpose: 'conformance' });
        await expect(s.lock(lockOpts)).rejects.toBeInstanceOf(LockedError);
        await held.release();
        const again = await s.lock(lockOpts);
        await again.release();
      });

      it.runIf(caps.lockable)('create() chooses its name under the lock: it waits while another holds it', async () => {
        const { store: s } = await fresh();
        await writeBundle(await s.create('a.tar'), payload(1));
        const held = await s.lock(lockOpts);
        let created = false;
        const pending = s.create('b.tar').then((k) => ((created = true), k));
        await new Promise((r) => setTimeout(r, 400));
        expect(created).toBe(false);
        await held.release();
        const sink = await pending;
        expect(sink.name).toBe('b.tar');
        await sink.abort();
      });

      it.runIf(caps.lockable)('a lock left by a run that died is taken over', async () => {
        const f = await fresh();
        expect(f.plantStaleLock, 'a lockable store needs plantStaleLock in its fixture').toBeTypeOf('function');
        await writeBundle(await f.store.create('a.tar'), payload(1));
        await f.plantStaleLock!();
        const lock = await f.store.lock(lockOpts);
        expect(lock.info.pid).toBe(process.pid);
        await lock.release();
      });

      it.skipIf(caps.lockable)('not lockable: lock() is refused', async () => {
        const { store: s } = await fresh();
        await expect(s.lock(lockOpts)).rejects.toBeInstanceOf(UsageError);
      });
    });

    describe('seekable', () => {
      it.runIf(caps.seekable)('writeAt() patches bytes already written', async () => {
        const { store: s } = await fresh();
        const data = payload(200_000);
        const sink = await s.create('p.tar');
        await writeBundle(sink, data, false);
        const patch = Buffer.from('PATCHED HEADER');
        await sink.writeAt(patch, 100);
        await sink.writeAt(patch, data.length - patch.length); // in the very last bytes
        await sink.commit();
        patch.copy(data, 100);
        patch.copy(data, data.length - patch.length);
        expect((await collect((await s.open(sink.name)).stream)).equals(data)).toBe(true);
      });

      it.skipIf(caps.seekable)('not seekable: writeAt() is refused', async () => {
        const { store: s } = await fresh();
        const sink = await s.create('p.tar');
        await sink.write(payload(1000));
        await expect(sink.writeAt(Buffer.from('x'), 10)).rejects.toThrow();
        await sink.abort();
      });
    });

    describe('rewindable', () => {
      it.runIf(caps.rewindable)('rewind() forgets what was written from a position on', async () => {
        const { store: s } = await fresh();
        const a = payload(3000);
        const b = payload((5 << 20) + 17); // past the first few MiB: some of it is on disk already
        const c = payload(700);
        const sink = await s.create('w.tar');
        expect(sink.rewind).toBeTypeOf('function');
        await writeBundle(sink, a, false);
        await sink.write(b);
        await sink.rewind!(a.length);
        expect(sink.position).toBe(a.length);
        await sink.write(c);
        await sink.commit();
        const back = await collect((await s.open(sink.name)).stream);
        expect(back.equals(Buffer.concat([a, c]))).toBe(true);
      });

      it.skipIf(caps.rewindable)('not rewindable: sinks have no rewind()', async () => {
        const { store: s } = await fresh();
        const sink = await s.create('w.tar');
        expect(sink.rewind).toBeUndefined();
        await sink.abort();
      });
    });

    describe('rangeReads', () => {
      it.runIf(caps.rangeReads)('open() with a range reads just those bytes', async () => {
        const { store: s } = await fresh();
        const data = payload(3 << 20);
        await writeBundle(await s.create('r.tar'), data);
        const part = async (offset: number, length?: number) =>
          collect((await s.open('r.tar', length === undefined ? { offset } : { offset, length })).stream);
        expect((await part(1000, 5000)).equals(data.subarray(1000, 6000))).toBe(true);
        expect((await part((2 << 20) + 3)).equals(data.subarray((2 << 20) + 3))).toBe(true);
        expect((await part(0, 1)).equals(data.subarray(0, 1))).toBe(true);
        expect((await part(data.length - 10, 10)).equals(data.subarray(-10))).toBe(true);
        expect((await part(500, 0)).length).toBe(0);
        expect((await part(data.length)).length).toBe(0);
      });

      it.skipIf(caps.rangeReads)('no range reads: open() with a range is refused', async () => {
        const { store: s } = await fresh();
        await writeBundle(await s.create('r.tar'), payload(100));
        await expect(s.open('r.tar', { offset: 10, length: 10 })).rejects.toThrow();
      });
    });

    describe('rereadable', () => {
      it.runIf(caps.rereadable)('a bundle can be read twice, at the same time', async () => {
        const { store: s } = await fresh();
        const data = payload(2 << 20);
        await writeBundle(await s.create('t.tar'), data);
        const [x, y] = await Promise.all([s.open('t.tar'), s.open('t.tar')]);
        const [bx, by] = await Promise.all([collect(x.stream), collect(y.stream)]);
        expect(bx.equals(data)).toBe(true);
        expect(by.equals(data)).toBe(true);
      });

      it.skipIf(caps.rereadable)('not rereadable: a second open() is refused, not given other bytes', async () => {
        const { store: s } = await fresh();
        await writeBundle(await s.create('t.tar'), payload(100));
        await collect((await s.open('t.tar')).stream);
        await expect(s.open('t.tar')).rejects.toBeInstanceOf(UsageError);
      });
    });
  });
}
