/** The store registry: one place that turns a location into a store, by URL scheme. */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { EncryptedStore } from '../../src/store/encrypted.js';
import { LocalStore } from '../../src/store/local.js';
import { openBundleAt, openStore, readTarget, registerStore, writeTarget } from '../../src/store/registry.js';
import { redactUrl, type Store } from '../../src/store/store.js';
import { StreamStore } from '../../src/store/stream.js';
import { readAll, writeBundle } from './store-conformance.js';

describe('store registry', () => {
  it('a path is a local store, - the stream, an unknown scheme a usage error naming the known ones', () => {
    expect(openStore('/backups')).toBeInstanceOf(LocalStore);
    expect(openStore('relative/dir')).toBeInstanceOf(LocalStore);
    expect(openStore('-')).toBeInstanceOf(StreamStore);
    let err: unknown;
    try {
      openStore('ftp://user:pw@host/x');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).message).toBe('unsupported bundle location ftp://user@host/x');
    expect((err as UsageError).hint).toBe(
      'use a local path, - for stdout/stdin, or ssh://host/path, or s3://bucket/prefix (s3+http://host:port/bucket/prefix for another S3 server)',
    );
  });

  it('a URL naming one bundle splits into its store and name', () => {
    const at = openBundleAt('/backups/web.tar');
    expect(at.name).toBe('web.tar');
    expect(at.store.describe()).toBe('/backups');
  });

  it('--encrypt wraps whatever store the location names', () => {
    const s = openStore('/backups', {}, { encrypt: { passphrase: 'p' } });
    expect(s).toBeInstanceOf(EncryptedStore);
    expect((s as EncryptedStore).inner).toBeInstanceOf(LocalStore);
    expect(s.capabilities.seekable).toBe(false);
  });

  it('a registered scheme is accepted everywhere a location is (write into the store, read one bundle back)', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-registry-'));
    try {
      const opened: string[] = [];
      // A toy "mem://" store: a local directory under another name, as an S3 store would register.
      registerStore('mem', {
        usage: 'mem://name',
        open: (url): Store => {
          opened.push(url);
          return new LocalStore(path.join(dir, new URL(url).pathname));
        },
        split: (url) => ({ store: url.slice(0, url.lastIndexOf('/')), name: url.slice(url.lastIndexOf('/') + 1) }),
      });
      const w = writeTarget('mem://x/store');
      expect(w.intoStore).toBe(true);
      const sink = await w.createBundle('b.tar');
      await writeBundle(sink, Buffer.from('in memory'));
      expect(w.created?.name).toBe('b.tar');
      const r = readTarget('mem://x/store/b.tar');
      expect((await readAll((await r.openBundle()).stream)).toString()).toBe('in memory');
      expect(r.rereadable).toBe(true);
      expect(opened).toEqual(['mem://x/store', 'mem://x/store']);
      const err = (() => {
        try {
          openStore('nope://x');
        } catch (e) {
          return e as UsageError;
        }
      })();
      expect(err?.hint).toBe(
        'use a local path, - for stdout/stdin, or ssh://host/path, or s3://bucket/prefix (s3+http://host:port/bucket/prefix for another S3 server), or mem://name',
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('a write target ending in .tar names one bundle, replaced; anything else is a store that chooses', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-registry-'));
    try {
      const file = path.join(dir, 'exact.tar');
      await fs.writeFile(file, 'old');
      const exact = writeTarget(file);
      expect(exact.intoStore).toBe(false);
      await writeBundle(await exact.createBundle('ignored.tar'), Buffer.from('new'));
      expect(await fs.readFile(file, 'utf8')).toBe('new');
      const store = writeTarget(path.join(dir, 'store'));
      expect(store.intoStore).toBe(true);
      expect(writeTarget('-').intoStore).toBe(false);
      const missing = writeTarget(path.join(dir, 'no', 'such', 'x.tar'));
      await expect(missing.createBundle('x.tar')).rejects.toThrow(/does not exist/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('credentials never reach messages', () => {
    expect(redactUrl('ssh://u:secret@host:22/srv?token=abc')).toBe('ssh://u@host:22/srv');
    expect(redactUrl('ssh://host/srv')).toBe('ssh://host/srv');
    expect(redactUrl('/a/path?x')).toBe('/a/path?x');
    expect(writeTarget('ssh://u:secret@host/srv', { ssh: () => ({}) as never }).describe()).toBe('ssh://u@host/srv');
  });
});
