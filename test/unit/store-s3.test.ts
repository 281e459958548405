/**
 * The S3 store's pure parts: its URLs, where it sends requests and how, the part sizes of an
 * upload of unknown length, and what its failures become. (The store itself is tested against a
 * real S3 server in test/e2e/store-s3.test.ts.)
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { collect } from '../helpers/tar.js';
import { BundleError, EXIT, NotFoundError, UsageError } from '../../src/errors.js';
import { openStore } from '../../src/store/registry.js';
import {
  MAX_PARTS,
  parseS3Url,
  partSize,
  readWindows,
  FIRST_READ_WINDOW,
  MAX_READ_WINDOW,
  READ_AHEAD,
  READ_CHUNK,
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
    expect(asked[1]).toEqual([3 * FIRST_READ_WINDOW, 2 * FIRST_READ_WINDOW + 123]); // asked for ahead, to the end
    // The rest of the window that was cut, and only that: the one after it was already asked for.
    expect(asked[2]).toEqual([FIRST_READ_WINDOW + 1000, 2 * FIRST_READ_WINDOW - 1000]);
    expect(asked).toHaveLength(3);
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

  /** An object of `size` bytes served by ranged GETs, with what was asked and what is open. */
  function server(size: number, opts: { delay?: (n: number) => number; hang?: (n: number) => boolean } = {}) {
    const bytes = Buffer.allocUnsafe(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 7) % 253;
    const asked: [number, number][] = [];
    const signals: AbortSignal[] = [];
    const bodies: Readable[] = [];
    const open = new Set<number>();
    let most = 0;
    const fetch = async (pos: number, win: number, signal: AbortSignal): Promise<Readable> => {
      const n = asked.push([pos, win]);
      signals.push(signal);
      if (opts.hang?.(n))
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error)));
      open.add(pos); // in flight from the request until its body is read
      most = Math.max(most, open.size);
      await new Promise((r) => setTimeout(r, opts.delay?.(n) ?? 0));
      const part = bytes.subarray(pos, Math.min(size, pos + win));
      const body = Readable.from(
        (async function* () {
          for (let i = 0; i < part.length; i += 65536) yield part.subarray(i, i + 65536); // as a socket gives them
          open.delete(pos);
        })(),
      );
      bodies.push(body);
      return body;
    };
    const first = () => Readable.from([bytes.subarray(0, FIRST_READ_WINDOW)]);
    return { bytes, asked, signals, bodies, fetch, first, most: () => most };
  }

  it.each([READ_AHEAD, 3])(
    'keeps %i windows in flight past the first, and gives their bytes in order',
    async (ahead) => {
      // Windows of 1, 2, 4, 8, 16, 29 MiB (and 77 bytes); later ones answer sooner.
      const s = server(60 * FIRST_READ_WINDOW + 77, { delay: (n) => Math.max(1, 20 - n * 3) });
      const chunks: Buffer[] = [];
      for await (const c of readWindows(s.first(), 0, s.bytes.length - 1, s.fetch, { ahead })) chunks.push(c);
      expect(Buffer.concat(chunks).equals(s.bytes)).toBe(true);
      expect(s.most()).toBe(ahead + 1); // the window read and `ahead` ahead of it, no more
      // The windows tile the object: each starts where the one before ended, none beyond MAX_READ_WINDOW.
      let at = FIRST_READ_WINDOW;
      for (const [pos, win] of s.asked) {
        expect(pos).toBe(at);
        expect(win).toBeLessThanOrEqual(MAX_READ_WINDOW);
        at += Math.min(win, s.bytes.length - pos);
      }
      expect(at).toBe(s.bytes.length);
      // Past the first window, the socket's 64 KiB pieces go on as READ_CHUNK bytes (the last one the rest).
      expect(chunks[0]!.length).toBe(FIRST_READ_WINDOW);
      const rest = chunks.slice(1);
      expect(rest.slice(0, -1).every((c) => c.length === READ_CHUNK)).toBe(true);
      expect(rest.at(-1)!.length).toBe(77);
    },
  );

  it('a window that fails ahead of the reader fails the read when its turn comes, after the bytes before it', async () => {
    const s = server(60 * FIRST_READ_WINDOW);
    const fetch = async (pos: number, win: number, signal: AbortSignal) => {
      if (pos >= 15 * FIRST_READ_WINDOW) throw new BundleError('the bundle was replaced while it was being read');
      return s.fetch(pos, win, signal);
    };
    let got = 0;
    const read = (async () => {
      for await (const c of readWindows(s.first(), 0, s.bytes.length - 1, fetch)) got += c.length;
    })();
    await expect(read).rejects.toThrow(/replaced/);
    expect(got).toBe(15 * FIRST_READ_WINDOW); // every byte before the failed window, none after
    expect(s.signals.every((sig) => sig.aborted)).toBe(true); // what was in flight is stopped
  });

  it('an abort stops the read: requests in flight are aborted, bodies destroyed, and none is made after', async () => {
    // The fourth window (the third asked for) never answers: the read waits there when aborted.
    const s = server(60 * FIRST_READ_WINDOW, { hang: (n) => n === 3 });
    const ac = new AbortController();
    let got = 0;
    const read = (async () => {
      for await (const c of readWindows(s.first(), 0, s.bytes.length - 1, s.fetch, { signal: ac.signal })) {
        got += c.length;
      }
    })();
    while (got < 7 * FIRST_READ_WINDOW) await new Promise((r) => setTimeout(r, 5)); // 1 + 2 + 4 MiB read
    await new Promise((r) => setTimeout(r, 20));
    const before = s.asked.length;
    ac.abort(new UsageError('interrupted'));
    await expect(read).rejects.toThrow(/interrupted/);
    await new Promise((r) => setTimeout(r, 30));
    expect(s.asked).toHaveLength(before); // no stray request after the abort
    expect(before).toBe(2 + 1 + READ_AHEAD); // the 2 windows read after the first, the one it waits for, READ_AHEAD after it
    expect(got).toBe(7 * FIRST_READ_WINDOW);
    expect(s.signals.every((sig) => sig.aborted)).toBe(true);
    expect(s.bodies.every((b) => b.destroyed)).toBe(true);
  });

  it('a reader that stops half-way leaves no request open', async () => {
    const s = server(60 * FIRST_READ_WINDOW);
    const g = readWindows(s.first(), 0, s.bytes.length - 1, s.fetch);
    await g.next(); // the first window
    await g.next(); // into the second: it and READ_AHEAD after it are asked for
    await g.return(undefined);
    await new Promise((r) => setTimeout(r, 10));
    expect(s.asked.length).toBe(1 + READ_AHEAD);
    expect(s.signals.every((sig) => sig.aborted)).toBe(true);
    expect(s.bodies.every((b) => b.destroyed)).toBe(true);
  });

  it('open(): destroying the stream aborts the GETs still open, and no other is sent', async () => {
    const size = 40 * FIRST_READ_WINDOW;
    const sent: { range: string; signal?: AbortSignal }[] = [];
    const client = {
      send: async (cmd: { input: { Range?: string } }, o: { abortSignal?: AbortSignal } = {}) => {
        const range = cmd.input.Range!;
        sent.push({ range, ...(o.abortSignal ? { signal: o.abortSignal } : {}) });
        const [a, b] = range.slice('bytes='.length).split('-').map(Number) as [number, number];
        if (a >= 3 * FIRST_READ_WINDOW)
          return new Promise((_, reject) =>
            o.abortSignal?.addEventListener('abort', () => reject(new Error('aborted'))),
          );
        const n = Math.min(b, size - 1) - a + 1;
        return {
          Body: Readable.from([Buffer.alloc(n, 1)]),
          ContentRange: `bytes ${a}-${a + n - 1}/${size}`,
          ContentLength: n,
          ETag: '"e1"',
        };
      },
      destroy() {},
    };
    const store = new S3Store('s3+http://127.0.0.1:1/b/p', {}, {}, {});
    const real = await (store as unknown as { client(): Promise<{ destroy(): void }> }).client(); // loads the SDK
    real.destroy();
    (store as unknown as { clientP: Promise<unknown> }).clientP = Promise.resolve(client);
    const { stream, size: got } = await store.open('ferry-x-20260101T000000Z.tar');
    expect(got).toBe(size);
    let read = 0;
    stream.on('data', (c: Buffer) => (read += c.length));
    while (read < 3 * FIRST_READ_WINDOW) await new Promise((r) => setTimeout(r, 5)); // then it waits on a hung GET
    stream.destroy();
    await new Promise((r) => setTimeout(r, 20));
    const n = sent.length;
    expect(n).toBe(1 + 1 + 1 + READ_AHEAD); // the first window, the one read, the hung one, READ_AHEAD after it
    expect(sent.slice(1).every((s) => s.signal?.aborted)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(sent).toHaveLength(n);
  });

  it('gives up after a few failures in a row', async () => {
    const fetch = async () => {
      throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
    };
    await expect(collect(readWindows(Readable.from([Buffer.alloc(10)]), 0, 100, fetch))).rejects.toThrow(/refused/);
  });
});
