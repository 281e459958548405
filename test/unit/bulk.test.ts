import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bulkGet } from '../../src/engine/bulk.js';
import { releaseSlab, SLAB_SIZE, takeSlab } from '../../src/util/slabs.js';

/**
 * A fake engine on a unix socket: each connection gets `answer` (the raw HTTP response, written
 * in the given pieces with a pause between them), and the request line is recorded.
 */
let dir: string;
let sock: string;
let server: net.Server;
let requests: string[];
let serverSockets: net.Socket[];

function serve(pieces: (Buffer | string)[], opts: { pauseMs?: number; end?: boolean } = {}) {
  server.removeAllListeners('connection');
  server.on('connection', (s) => {
    serverSockets.push(s);
    s.once('data', async (d) => {
      requests.push(d.toString('latin1').split('\r\n')[0]!);
      for (const p of pieces) {
        if (s.destroyed) return;
        s.write(p);
        if (opts.pauseMs) await sleep(opts.pauseMs);
      }
      if (opts.end !== false) s.end();
    });
    s.on('error', () => {});
  });
}

function chunked(body: Buffer, sizes: number[]): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (let i = 0; at < body.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, body.length - at);
    out.push(Buffer.from(`${n.toString(16)}\r\n`), body.subarray(at, at + n), Buffer.from('\r\n'));
    at += n;
  }
  out.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(out);
}

/** Cut `buf` into pieces of the given sizes, cycling. */
function cut(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < buf.length; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

async function collect(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

const HEAD = 'HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n';

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bulk-'));
  sock = path.join(dir, 'engine.sock');
  requests = [];
  serverSockets = [];
  server = net.createServer();
  await new Promise<void>((r) => server.listen(sock, r));
});

afterEach(async () => {
  for (const s of serverSockets) s.destroy();
  await new Promise((r) => server.close(r));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('bulkGet', () => {
  it('sends a plain GET and decodes a chunked body, whatever the read boundaries', async () => {
    const body = randomBytes(3 * SLAB_SIZE + 12345); // crosses slabs
    const raw = Buffer.concat([Buffer.from(HEAD), chunked(body, [32768, 1, 7, 65536, 3000])]);
    // Pieces that split the head, chunk-size lines, CRLFs and data at odd places.
    serve(cut(raw, [5, 1, 2, 40000, 3, 9999, 1, 1, 1, 70000]));
    const s = await bulkGet({ path: sock }, '/v1.41/containers/abc/archive?path=%2Fdata');
    const got = await collect(s);
    expect(got.length).toBe(body.length);
    expect(got.equals(body)).toBe(true);
    expect(requests).toEqual(['GET /v1.41/containers/abc/archive?path=%2Fdata HTTP/1.1']);
  });

  it('decodes a Content-Length body and a body delimited by the close of the connection', async () => {
    const body = randomBytes(200_000);
    serve([`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`, body.subarray(0, 1000), body.subarray(1000)]);
    expect((await collect(await bulkGet({ path: sock }, '/x'))).equals(body)).toBe(true);
    serve([`HTTP/1.0 200 OK\r\n\r\n`, body]);
    expect((await collect(await bulkGet({ path: sock }, '/x'))).equals(body)).toBe(true);
  });

  it("rejects with the engine's status and JSON message, as docker-modem does", async () => {
    const json = JSON.stringify({ message: 'Could not find the file /nope in container abc' });
    serve([
      `HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\n\r\n${json}`,
    ]);
    const err = await bulkGet({ path: sock }, '/x').catch(
      (e: unknown) => e as Error & { statusCode?: number; json?: { message?: string } },
    );
    expect(err).toBeInstanceOf(Error);
    expect(err.statusCode).toBe(404);
    expect(err.json?.message).toBe('Could not find the file /nope in container abc');
    expect(err.message).toMatch(/HTTP code 404.*Could not find the file/);
  });

  it('fails the stream when the engine stops before the last chunk (a cut is never a clean end)', async () => {
    const body = randomBytes(100_000);
    const raw = Buffer.concat([Buffer.from(HEAD), chunked(body, [32768])]);
    serve([raw.subarray(0, raw.length - 20000)]); // ends mid-chunk
    const s = await bulkGet({ path: sock }, '/x');
    const err = await collect(s).catch((e: unknown) => e as Error & { code?: string });
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBe('ECONNRESET');

    // Every chunk complete, but no terminating zero-size chunk: still not an end.
    serve([Buffer.from(HEAD), chunked(body, [32768]).subarray(0, -5)]);
    const err2 = await collect(await bulkGet({ path: sock }, '/x')).catch((e: unknown) => e as { code?: string });
    expect((err2 as { code?: string }).code).toBe('ECONNRESET');
  });

  it('fails on malformed framing instead of passing garbage on', async () => {
    // Framing that arrives with the head fails the open; framing that arrives later, the stream.
    serve([HEAD, '5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n']);
    await expect(bulkGet({ path: sock }, '/x')).rejects.toMatchObject({ code: 'EPROTO' });
    serve([HEAD, '5\r\nhello\r\n', '3\r\nabcXX0\r\n\r\n'], { pauseMs: 30 });
    const err = await collect(await bulkGet({ path: sock }, '/x')).catch(
      (e: unknown) => e as Error & { code?: string },
    );
    expect((err as { code?: string }).code).toBe('EPROTO');
    serve(['SSH-2.0-OpenSSH_9.2\r\n\r\n']);
    await expect(bulkGet({ path: sock }, '/x')).rejects.toMatchObject({ code: 'EPROTO' });
  });

  it('hands on what arrived when the engine pauses (a slow stream still flows)', async () => {
    serve([HEAD, '5\r\nhello\r\n'], { end: false });
    const s = await bulkGet({ path: sock }, '/x');
    const first = await new Promise<Buffer>((resolve) => s.once('data', resolve));
    expect(first.toString()).toBe('hello');
    s.destroy();
  });

  it('closes the connection when the stream is destroyed early', async () => {
    serve([HEAD, chunked(randomBytes(50_000), [10_000]).subarray(0, 20_000)], { end: false });
    const s = await bulkGet({ path: sock }, '/x');
    await new Promise((r) => s.once('data', r));
    const closed = new Promise((r) => serverSockets[0]!.once('close', r));
    s.destroy();
    await closed; // the engine sees the connection go (a half-read archive would hold a helper)
  });

  it('finds the end of the headers only in what was read (a pooled slab holds older bytes)', async () => {
    const stale = takeSlab();
    stale.fill('\r\n\r\n');
    releaseSlab(stale); // the next reader gets this slab
    serve(['HTTP/1.1 200 OK\r\nContent-Le', 'ngth: 5\r\n\r\nhello'], { pauseMs: 30 });
    expect((await collect(await bulkGet({ path: sock }, '/x'))).toString()).toBe('hello');
  });

  it('reads from an engine on plain TCP the same way', async () => {
    const body = randomBytes(300_000);
    const tcp = net.createServer((s) => {
      s.once('data', () => s.end(Buffer.concat([Buffer.from(HEAD), chunked(body, [32768])])));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    try {
      const port = (tcp.address() as net.AddressInfo).port;
      expect((await collect(await bulkGet({ host: '127.0.0.1', port }, '/x'))).equals(body)).toBe(true);
    } finally {
      await new Promise((r) => tcp.close(r));
    }
  });

  it('reports a socket that is not there as the engine being unreachable', async () => {
    await expect(bulkGet({ path: path.join(dir, 'none.sock') }, '/x')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('slab pool', () => {
  it('reuses a returned slab, once, and ignores anything that is not a whole slab it handed out', () => {
    const a = takeSlab();
    expect(a.length).toBe(SLAB_SIZE);
    releaseSlab(a.subarray(10)); // not from the slab's start: ignored
    releaseSlab(Buffer.alloc(SLAB_SIZE)); // not a slab: ignored
    const b = takeSlab();
    expect(b.buffer).not.toBe(a.buffer);
    releaseSlab(a.subarray(0, 1000)); // a chunk cut from the slab's start returns the slab
    releaseSlab(a); // a second return of the same slab is ignored
    const c = takeSlab();
    expect(c.buffer).toBe(a.buffer);
    const d = takeSlab();
    expect(d.buffer).not.toBe(a.buffer); // it was in the pool once, not twice
    for (const x of [b, c, d]) releaseSlab(x);
  });
});
