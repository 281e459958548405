/** The encrypting store, over a local directory, passes the store conformance suite. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGE_MAGIC, readAgeHeader } from '../../src/bundle/age.js';
import { BundleError } from '../../src/errors.js';
import { EncryptedStore } from '../../src/store/encrypted.js';
import { openStore } from '../../src/store/registry.js';
import { describeStoreConformance, readAll, writeBundle } from './store-conformance.js';
import { LOCAL_CAPABILITIES, localFixture } from './store-fixtures.js';

const PASS = 'conformance passphrase';

async function encryptedFixture() {
  const f = await localFixture();
  return { ...f, store: openStore(f.dir, {}, { encrypt: { passphrase: PASS } }), transformsBytes: true };
}

describeStoreConformance('encrypted over local', encryptedFixture, {
  // What the local store has, but for what cannot be done to a stream of ciphertext.
  capabilities: { ...LOCAL_CAPABILITIES, seekable: false, rewindable: false, rangeReads: false },
});

describe('encrypted store', () => {
  it('stores an age file (scrypt), and reads back the plaintext only with the passphrase', async () => {
    const f = await encryptedFixture();
    try {
      expect(f.store).toBeInstanceOf(EncryptedStore);
      const plain = Buffer.from('a bundle that must not be readable in the store '.repeat(5000));
      const meta = { createdAt: '2026-12-07T03:00:00.000Z', containers: ['web'] };
      await writeBundle(await f.store.create('e.tar', { meta }), plain);
      const raw = await fs.readFile(path.join(f.dir, 'e.tar'));
      expect(raw.includes(plain.subarray(0, 40))).toBe(false);
      // age: the scrypt stanza must be alone in the header, so a passphrase bundle has no clear meta
      expect(raw.subarray(0, AGE_MAGIC.length).equals(AGE_MAGIC)).toBe(true);
      expect(readAgeHeader(raw)).toEqual({ kind: 'passphrase' });
      expect(raw.includes(JSON.stringify(meta.containers))).toBe(false);
      expect((await readAll((await f.store.open('e.tar')).stream)).equals(plain)).toBe(true);
      // through the plain store: the ciphertext, as written
      expect((await readAll((await openStore(f.dir).open('e.tar')).stream)).equals(raw)).toBe(true);
      // another passphrase: refused, not garbage
      const wrong = openStore(f.dir, {}, { encrypt: { passphrase: 'other' } });
      await expect((async () => readAll((await wrong.open('e.tar')).stream))()).rejects.toThrow(/wrong passphrase/);
    } finally {
      await f.cleanup();
    }
  });

  it('damage to the ciphertext fails the read', async () => {
    const f = await encryptedFixture();
    try {
      await writeBundle(await f.store.create('d.tar'), Buffer.alloc(200_000, 7));
      const p = path.join(f.dir, 'd.tar');
      const raw = await fs.readFile(p);
      raw[raw.length - 100]! ^= 1;
      await fs.writeFile(p, raw);
      await expect(readAll((await f.store.open('d.tar')).stream)).rejects.toBeInstanceOf(BundleError);
    } finally {
      await f.cleanup();
    }
  });
});
