/**
 * The S3 store's pure parts: its URLs, where it sends requests and how, the part sizes of an
 * upload of unknown length, and what its failures become. (The store itself is tested against a
 * real S3 server in test/e2e/store-s3.test.ts.)
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { collect } from '../helpers/tar.js';
import { EXIT, NotFoundError, UsageError } from '../../src/errors.js';
import { openStore } from '../../src/store/registry.js';
import {
  MAX_PARTS,
  parseS3Url,
  partSize,
  readWindows,
  FIRST_READ_WINDOW,
  resolveEndpoint,
  s3Error,
  S3Store,
  splitS3Url,
  wantsPathStyle,
} from '../../src/store/s3.js';

describe('s3 URLs', () => {
  it('s3://bucket/prefix, s3+http(s)://host:port/bucket/prefix', () => {
    expect(parseS3Url('s3://b/x/y/')).toEqual({ bucket: 'b', prefix: 'x/y' });
    expect(parseS3Url('s3://b')).toEqual({ bucket: 'b', prefix: '' });
    expect(parseS3Url('s3+http://127.0.0.1:7480/b/p')).toEqual({
      bucket: 'b',
      prefix: 'p',
      endpoint: 'http://127.0.0.1:7480',
    });
    expect(parseS3Url('s3+https://minio.lan/b')).toEqual({ bucket: 'b', prefix: '', endpoint: 'https://minio.lan' });
  });

  it('refuses URLs that name no bucket', () => {
    expect(() => parseS3Url('s3+http://127.0.0.1:7480/')).toThrow(UsageError);
    expect(() => openStore('s3+https://host:1/')).toThrow(/names no bucket/);
  });

  it('a bundle URL splits into its store and name', () => {
    expect(splitS3Url('s3://b/p/q/x.tar')).toEqual({ store: 's3://b/p/q', name: 'x.tar' });
    expect(splitS3Url('s3://b/x.tar')).toEqual({ store: 's3://b', name: 'x.tar' });
    expect(splitS3Url('s3+http://h:1/b/p/x.tar')).toEqual({ store: 's3+http://h:1/b/p', name: 'x.tar' });
    expect(() => splitS3Url('s3+http://h:1/x.tar')).toThrow(UsageError); // x.tar would be the bucket
  });

  it('describe() names the store as given, without credentials', () => {
    const s = new S3Store('s3+http://key:secret@127.0.0.1:7480/b/p', {}, {}, {});
    expect(s.describe()).toBe('s3+http://127.0.0.1:7480/b/p');
    expect(s.describe('x.tar')).toBe('s3+http://127.0.0.1:7480/b/p/x.tar');
    expect(new S3Store('s3://b', {}, {}, {}).describe('x.tar')).toBe('s3://b/x.tar');
  });
});

describe('s3 endpoint and addressing', () => {
  const loc = { bucket: 'b', prefix: '' };
  it('the URL, then --s3-endpoint, then AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL', () => {
    const env = { AWS_ENDPOINT_URL_S3: 'http://s3only', AWS_ENDPOINT_URL: 'http://all' };
    expect(resolveEndpoint({ ...loc, endpoint: 'http://url' }, { endpoint: 'http://flag' }, env)).toBe('http://url');
    expect(resolveEndpoint(loc, { endpoint: 'http://flag' }, env)).toBe('http://flag');
    expect(resolveEndpoint(loc, {}, env)).toBe('http://s3only');
    expect(resolveEndpoint(loc, {}, { AWS_ENDPOINT_URL: 'http://all' })).toBe('http://all');
    expect(resolveEndpoint(loc, {}, {})).toBeUndefined();
  });

  it('path-style for an IP address or localhost, or when asked', () => {
    expect(wantsPathStyle('http://127.0.0.1:7480')).toBe(true);
    expect(wantsPathStyle('http://[::1]:9000')).toBe(true);
    expect(wantsPathStyle('http://localhost:9000')).toBe(true);
    expect(wantsPathStyle('https://s3.example.com')).toBe(false);
    expect(wantsPathStyle('https://s3.example.com', true)).toBe(true);
    expect(wantsPathStyle(undefined)).toBe(false);
  });
});

describe('s3 part sizes', () => {
  it('parts grow so that 10,000 of them hold 5 TiB, each within S3 limits', () => {
    const sizes = Array.from({ length: MAX_PARTS }, (_, i) => partSize(i + 1));
    const total = sizes.reduce((a, b) => a + b, 0);
    expect(Math.min(...sizes)).toBeGreaterThanOrEqual(5 << 20);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(5 * 1024 ** 3);
    expect(Math.max(...sizes)).toBeLessThan(2 ** 32); // one Buffer
    expect(total).toBeGreaterThanOrEqual(5 * 1024 ** 4);
  });

  it('parts stay small for the usual sizes: 8 MiB up to 7.8 GiB, then 16 MiB', () => {
    expect(partSize(1)).toBe(8 << 20);
    expect(partSize(1000)).toBe(8 << 20);
    expect(partSize(1001)).toBe(16 << 20);
  });
});

describe('s3 errors', () => {
  const where = { bucket: 'b', endpoint: 'http://h:1' };
  const err = (name: string, status?: number, code?: string) =>
    Object.assign(new Error(name), { name, code, $metadata: { httpStatusCode: status } });

  it('maps each failure to a documented exit code, with what to do', () => {
    const nb = s3Error(err('NoSuchBucket', 404), 'list s3://b', where);
    expect(nb).toBeInstanceOf(NotFoundError);
    expect(nb.message).toMatch(/no bucket b at http:\/\/h:1/);
    expect(nb.hint).toMatch(/endpoint/);
    for (const n of ['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'CredentialsProviderError'])
      expect(s3Error(err(n, 403), 'x', where)).toMatchObject({ code: 'STORE_CREDENTIALS', exitCode: EXIT.IO });
    expect(s3Error(err('AccessDenied', 403), 'x', where)).toMatchObject({ code: 'STORE_DENIED', exitCode: EXIT.IO });
    expect(s3Error(err('Unknown', 403), 'x', where)).toMatchObject({ code: 'STORE_DENIED' });
    const net = s3Error(err('Error', undefined, 'ECONNREFUSED'), 'x', where);
    expect(net).toMatchObject({ code: 'STORE_NETWORK', exitCode: EXIT.IO });
    expect(net.hint).toMatch(/--s3-endpoint/);
    expect(s3Error(err('NoSuchKey', 404), 'x', where)).toBeInstanceOf(NotFoundError);
    expect(s3Error(err('InternalError', 500), 'x', where)).toMatchObject({ code: 'IO', exitCode: EXIT.IO });
  });
});

describe('s3 reads', () => {
  const data = Buffer.from(Array.from({ length: 5 * FIRST_READ_WINDOW + 123 }, (_, i) => i % 251));

  it('reads in growing windows, and asks again from where a window was cut off', async () => {
    const asked: [number, number][] = [];
    let cut = true;
    const fetch = async (pos: number, win: number) => {
      asked.push([pos, win]);
      const bytes = data.subarray(pos, Math.min(data.length, pos + win));
      if (cut && asked.length === 1) {
        cut = false; // the connection drops early in the second window
        return Readable.from(
          (async function* () {
            yield bytes.subarray(0, 1000);
            throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
          })(),
        );
      }
      return Readable.from([bytes]);
    };
    const first = Readable.from([data.subarray(0, FIRST_READ_WINDOW)]);
    const got = await collect(readWindows(first, 0, data.length - 1, fetch));
    expect(got.equals(data)).toBe(true);
    expect(asked[0]).toEqual([FIRST_READ_WINDOW, 2 * FIRST_READ_WINDOW]);
    expect(asked[1]).toEqual([FIRST_READ_WINDOW + 1000, 2 * FIRST_READ_WINDOW]); // the rest of that window
    expect(asked[2]![1]).toBe(4 * FIRST_READ_WINDOW);
  });

  it('a reader that stops after the first window costs no second request', async () => {
    let asked = 0;
    const g = readWindows(Readable.from([data.subarray(0, FIRST_READ_WINDOW)]), 0, data.length - 1, async () => {
      asked++;
      return Readable.from([]);
    });
    const { value } = await g.next();
    expect(value!.length).toBe(FIRST_READ_WINDOW);
    await g.return(undefined);
    expect(asked).toBe(0);
  });

  it('gives up after a few failures in a row', async () => {
    const fetch = async () => {
      throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
    };
    await expect(collect(readWindows(Readable.from([Buffer.alloc(10)]), 0, 100, fetch))).rejects.toThrow(/refused/);
  });
});
