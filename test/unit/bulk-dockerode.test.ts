import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bulkGet } from '../../src/engine/bulk.js';
import { DockerEngine } from '../../src/engine/engine.js';

/**
 * The guard of src/engine/bulk.ts, ferry's own HTTP/1.1 client for bulk GETs in place of
 * docker-modem's: the same engine calls, made once through bulk.ts and once through dockerode
 * (the path engine.ts takes where there is no bulk address), must send the same request and give
 * the same bytes and the same errors. A change in docker-modem's request shape (paths, query
 * encoding) or error shape (statusCode, json) fails here.
 */
let dir: string;
let server: http.Server;
let requests: string[];
const archive = randomBytes(3 * 1024 * 1024 + 4321);
const images = randomBytes(700_000);

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bulk-dockerode-'));
  requests = [];
  server = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (url.endsWith('/version')) {
      res.setHeader('Content-Type', 'application/json');
      return res.end(
        JSON.stringify({ ApiVersion: '1.41', MinAPIVersion: '1.12', Version: '20.10.24', Os: 'linux', Arch: 'amd64' }),
      );
    }
    if (url.endsWith('/info')) return res.end('{}');
    requests.push(`${req.method} ${url}`);
    if (/\/containers\/missing\//.test(url)) {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ message: 'No such container: missing' }));
    }
    if (/\/containers\/[^/]+\/archive\?/.test(url)) {
      // Chunked, in the engine's 32 KiB pieces.
      res.writeHead(200, { 'Content-Type': 'application/x-tar' });
      for (let at = 0; at < archive.length; at += 32 * 1024) res.write(archive.subarray(at, at + 32 * 1024));
      return res.end();
    }
    if (/\/images\/get\?/.test(url)) {
      res.writeHead(200, { 'Content-Type': 'application/x-tar', 'Content-Length': images.length });
      return res.end(images);
    }
    res.writeHead(500, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ message: `unexpected ${url}` }));
  });
  await new Promise<void>((r) => server.listen(path.join(dir, 'engine.sock'), r));
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function collect(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

/** The engine as connected (bulk GETs through bulk.ts), and the same engine without a bulk address (dockerode). */
async function bothPaths() {
  const viaBulk = await DockerEngine.connect({
    kind: 'unix',
    socketPath: path.join(dir, 'engine.sock'),
    source: 'test',
  });
  expect((viaBulk as unknown as { bulk?: unknown }).bulk).toBeDefined();
  const viaDockerode = Object.create(viaBulk, { bulk: { value: undefined } }) as DockerEngine;
  return { viaBulk, viaDockerode };
}

/** What one call did: the requests it sent (beyond /version and /info) and its bytes or error. */
async function outcome(fn: () => Promise<Readable>) {
  requests = [];
  try {
    const body = await collect(await fn());
    return { requests, body };
  } catch (err) {
    const e = err as Error & { code?: string };
    return { requests, error: { type: e.constructor.name, message: e.message, code: e.code } };
  }
}

describe('bulk.ts against dockerode, the same request', () => {
  it("a container's archive: the same request line and the same bytes", async () => {
    const { viaBulk, viaDockerode } = await bothPaths();
    const a = await outcome(() => viaBulk.getArchive('abc123', '/var/lib/data dir/ü'));
    const b = await outcome(() => viaDockerode.getArchive('abc123', '/var/lib/data dir/ü'));
    expect(a.requests).toEqual(['GET /v1.41/containers/abc123/archive?path=%2Fvar%2Flib%2Fdata%20dir%2F%C3%BC']);
    expect(a.requests).toEqual(b.requests);
    expect(a.body?.equals(archive)).toBe(true);
    expect(b.body?.equals(archive)).toBe(true);
  });

  it('an image save of several references: the same request line and the same bytes', async () => {
    const { viaBulk, viaDockerode } = await bothPaths();
    const refs = ['app:1', 'registry.example:5000/team/db:15-full'];
    const a = await outcome(() => viaBulk.saveImages(refs));
    const b = await outcome(() => viaDockerode.saveImages(refs));
    expect(a.requests).toEqual(b.requests);
    expect(a.requests).toHaveLength(1);
    expect(a.body?.equals(images)).toBe(true);
    expect(b.body?.equals(images)).toBe(true);
  });

  it("an engine error: the same error, mapped from the engine's status and message", async () => {
    const { viaBulk, viaDockerode } = await bothPaths();
    const a = await outcome(() => viaBulk.getArchive('missing', '/data'));
    const b = await outcome(() => viaDockerode.getArchive('missing', '/data'));
    expect(a.error).toBeDefined();
    expect(a.requests).toEqual(b.requests);
    expect(a.error).toEqual(b.error);
  });

  it("an engine error, unmapped: the engine's status code, and its message where Engine looks for it", async () => {
    const { viaBulk } = await bothPaths();
    const docker = (
      viaBulk as unknown as { docker: { getContainer(id: string): { getArchive(o: unknown): Promise<Readable> } } }
    ).docker;
    // docker-modem, for a streamed response, reads the error body into the message and leaves
    // json null; bulk.ts sets json too. mapEngineError takes json.message, else the message's tail.
    const raw = (e: unknown) => {
      const { statusCode, json, message } = e as { statusCode?: number; json?: { message?: string }; message: string };
      return { statusCode, daemon: json?.message ?? message.replace(/^\(HTTP code \d+\)\s*[^-]*-\s*/, '').trim() };
    };
    const a = await bulkGet(
      { path: path.join(dir, 'engine.sock') },
      '/v1.41/containers/missing/archive?path=%2Fdata',
    ).catch(raw);
    const b = await docker.getContainer('missing').getArchive({ path: '/data' }).catch(raw);
    expect(a).toEqual({ statusCode: 404, daemon: 'No such container: missing' });
    expect(a).toEqual(b);
  });
});
