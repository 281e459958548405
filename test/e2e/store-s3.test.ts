/**
 * The S3 store (s3://, s3+http://) passes the store conformance suite against the lab's S3
 * server (Ceph RadosGW), and keeps its promises beyond it: an aborted upload leaves no parts,
 * a lock is a conditional PUT, errors say what went wrong.
 */
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { NotFoundError } from '../../src/errors.js';
import { LockedError } from '../../src/store/lock.js';
import { openBundleAt, openStore } from '../../src/store/registry.js';
import { S3Store } from '../../src/store/s3.js';
import { describeStoreConformance, readAll, writeBundle } from '../unit/store-conformance.js';
import { S3, s3Env, s3Url, uid } from '../helpers/lab.js';
import { s3Admin, s3Clean, s3Objects, s3Put, s3Uploads } from '../helpers/s3.js';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';

Object.assign(process.env, s3Env());
const ROOT = uid('store-s3');
afterAll(() => s3Clean(ROOT));

async function s3Fixture() {
  const prefix = `${ROOT}/${uid('s')}`;
  return {
    prefix,
    store: openStore(s3Url(prefix)),
    residue: async () => [...(await s3Objects(prefix)), ...(await s3Uploads(prefix)).map((u) => `upload:${u.key}`)],
    plantStaleLock: async () => {
      const dead = spawnSync('true').pid!;
      const info = { pid: dead, hostname: os.hostname(), token: 'dead', since: new Date(0).toISOString() };
      await s3Put(`${prefix}/.ferry.lock`, JSON.stringify(info) + '\n');
    },
    cleanup: () => s3Clean(prefix),
  };
}

describeStoreConformance('s3', s3Fixture, {
  capabilities: {
    seekable: false,
    rangeReads: true,
    rereadable: true,
    rewindable: false,
    lockable: true,
    listable: true,
    atomicCommit: true,
    durableCommit: true,
  },
});

describe('s3 store', () => {
  it('the registry opens s3:// and s3+http:// URLs; a bundle URL splits into its prefix and name', async () => {
    const f = await s3Fixture();
    try {
      expect(f.store).toBeInstanceOf(S3Store);
      expect(f.store.describe()).toBe(`s3+http://127.0.0.1:7480/${S3.bucket}/${f.prefix}`);
      await writeBundle(await f.store.create('a.tar'), Buffer.from('bundle bytes'));
      const at = openBundleAt(`${s3Url(f.prefix)}/a.tar`);
      expect(at.name).toBe('a.tar');
      expect((await readAll((await at.store.open(at.name)).stream)).toString()).toBe('bundle bytes');
      // s3:// with the endpoint from the SDK's standard variable
      const viaEnv = openStore(`s3://${S3.bucket}/${f.prefix}`, {}, {});
      process.env.AWS_ENDPOINT_URL_S3 = S3.endpoint;
      try {
        expect((await viaEnv.list()).map((b) => b.name)).toEqual(['a.tar']);
      } finally {
        delete process.env.AWS_ENDPOINT_URL_S3;
        await viaEnv.close();
      }
      // ... or from --s3-endpoint
      const viaFlag = openStore(`s3://${S3.bucket}/${f.prefix}`, { s3: () => ({ endpoint: S3.endpoint }) });
      expect((await viaFlag.list()).map((b) => b.name)).toEqual(['a.tar']);
      await viaFlag.close();
    } finally {
      await f.cleanup();
    }
  });

  it('an aborted upload of several parts leaves no upload in progress and no object', async () => {
    const f = await s3Fixture();
    try {
      await writeBundle(await f.store.create('keep.tar'), Buffer.from('x'));
      const sink = await f.store.create('big.tar');
      const chunk = Buffer.alloc(1 << 20, 7);
      for (let i = 0; i < 40; i++) await sink.write(chunk); // two parts sent, a third being filled
      expect((await s3Uploads(f.prefix)).map((u) => u.key)).toEqual(['big.tar']);
      await sink.abort();
      expect(await s3Uploads(f.prefix)).toEqual([]);
      expect(await s3Objects(f.prefix)).toEqual(['keep.tar']);
    } finally {
      await f.cleanup();
    }
  });

  it('an upload in progress holds its name: a second backup chooses another', async () => {
    const f = await s3Fixture();
    try {
      const a = await f.store.create('x.tar');
      const other = openStore(s3Url(f.prefix)); // another run
      const b = await other.create('x.tar');
      expect([a.name, b.name]).toEqual(['x.tar', 'x-2.tar']);
      await writeBundle(b, Buffer.from('b'));
      await writeBundle(a, Buffer.from('a'));
      expect((await f.store.list()).map((x) => x.name)).toEqual(['x-2.tar', 'x.tar']);
      await other.close();
    } finally {
      await f.cleanup();
    }
  });

  it('the lock is an object created with If-None-Match: another run (another store object) is refused', async () => {
    const f = await s3Fixture();
    try {
      await writeBundle(await f.store.create('a.tar'), Buffer.from('x'));
      const held = await f.store.lock({ timeoutMs: 0, purpose: 'test' });
      expect(await s3Objects(f.prefix)).toContain('.ferry.lock');
      const other = openStore(s3Url(f.prefix));
      await expect(other.lock({ timeoutMs: 300, pollMs: 50 })).rejects.toBeInstanceOf(LockedError);
      await held.release();
      expect(await s3Objects(f.prefix)).not.toContain('.ferry.lock');
      await (await other.lock({ timeoutMs: 0 })).release();
      await other.close();
    } finally {
      await f.cleanup();
    }
  });

  it('a held lock is refreshed (re-written only while it is still ours); release leaves a lock taken over', async () => {
    const f = await s3Fixture();
    try {
      await writeBundle(await f.store.create('a.tar'), Buffer.from('x'));
      const head = () => s3Admin().send(new HeadObjectCommand({ Bucket: S3.bucket, Key: `${f.prefix}/.ferry.lock` }));
      const held = await f.store.lock({ timeoutMs: 0, refreshMs: 300 });
      const t0 = (await head()).LastModified!.getTime();
      await new Promise((r) => setTimeout(r, 2200));
      expect((await head()).LastModified!.getTime()).toBeGreaterThan(t0); // refreshed
      // another run took it over (as after 15 minutes without a refresh)
      const theirs = JSON.stringify({ pid: 1, hostname: 'elsewhere', token: 'theirs', since: 'now' }) + '\n';
      await s3Put(`${f.prefix}/.ferry.lock`, theirs);
      await new Promise((r) => setTimeout(r, 1000)); // several refreshes come and fail
      await held.release();
      const left = await s3Admin().send(new GetObjectCommand({ Bucket: S3.bucket, Key: `${f.prefix}/.ferry.lock` }));
      expect(await left.Body!.transformToString()).toBe(theirs);
    } finally {
      await f.cleanup();
    }
  });

  it('errors name the cause: no bucket, bad keys, no rights, no server', async () => {
    const noBucket = openStore(`s3+http://127.0.0.1:7480/no-such-bucket-${uid('b')}/x`);
    await expect(noBucket.list()).rejects.toMatchObject({ code: 'NOT_FOUND', message: /no bucket/ });
    await expect(noBucket.create('a.tar')).rejects.toBeInstanceOf(NotFoundError);
    const saved = { ...process.env };
    try {
      process.env.AWS_SECRET_ACCESS_KEY = 'wrong';
      await expect(openStore(s3Url(ROOT)).list()).rejects.toMatchObject({ code: 'STORE_CREDENTIALS', exitCode: 8 });
      process.env.AWS_ACCESS_KEY_ID = S3.other.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = S3.other.secretAccessKey;
      await expect(openStore(s3Url(ROOT)).list()).rejects.toMatchObject({ code: 'STORE_DENIED', exitCode: 8 });
    } finally {
      Object.assign(process.env, saved);
    }
    process.env.AWS_MAX_ATTEMPTS = '1';
    try {
      await expect(openStore(`s3+http://127.0.0.1:1/${S3.bucket}/x`).list()).rejects.toMatchObject({
        code: 'STORE_NETWORK',
        exitCode: 8,
      });
    } finally {
      delete process.env.AWS_MAX_ATTEMPTS;
    }
  });
});
