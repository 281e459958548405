/** The local directory store passes the store conformance suite. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalStore } from '../../src/store/local.js';
import { describeStoreConformance } from './store-conformance.js';
import { LOCAL_CAPABILITIES, localFixture, plantDeadLock } from './store-fixtures.js';

describeStoreConformance('local directory', localFixture, { capabilities: LOCAL_CAPABILITIES });

describe('local store', () => {
  it('the registry opens a path as a local store', async () => {
    const f = await localFixture();
    try {
      expect(f.store).toBeInstanceOf(LocalStore);
      expect(f.store.describe()).toBe(f.dir);
      expect(f.store.describe('a.tar')).toBe(path.join(f.dir, 'a.tar'));
    } finally {
      await f.cleanup!();
    }
  });

  it('lists neither hidden files, temporaries, the lock, directories nor files that are not *.tar', async () => {
    const f = await localFixture();
    try {
      await fs.mkdir(f.dir);
      for (const n of ['.hidden.tar', '.ferry-1-a.tar.partial', 'notes.txt', 'a.tar.corrupt', 'b.tar'])
        await fs.writeFile(path.join(f.dir, n), 'x');
      await fs.mkdir(path.join(f.dir, 'dir.tar'));
      await plantDeadLock(f.dir);
      expect((await f.store.list()).map((b) => b.name)).toEqual(['b.tar']);
    } finally {
      await f.cleanup!();
    }
  });
});
