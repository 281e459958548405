import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_MAX_API, compareApi, negotiateApi, type VersionAnswer } from '../../src/engine/api-version.js';
import { DockerEngine } from '../../src/engine/engine.js';

/**
 * `GET /version` answers: docker-20.10, docker-26.1, docker-28.5 and podman-4.3 were recorded from
 * the lab's engines (A, C, D and Podman); docker-29.0 and podman-5.4 are those answers with the
 * versions those engines document (Docker 29.0: API 1.52, minimum 1.44; Podman 5's compat API:
 * 1.41, minimum 1.24).
 */
const RECORDED = ['docker-20.10', 'docker-26.1', 'docker-28.5', 'docker-29.0', 'podman-4.3', 'podman-5.4'];

const answer = (name: string) =>
  JSON.parse(
    readFileSync(path.join(import.meta.dirname, '..', 'fixtures', 'version', `${name}.json`), 'utf8'),
  ) as VersionAnswer;

describe('negotiateApi: the newest version both sides know, never a fixed one', () => {
  it('Docker 20.10 speaks 1.41', () => {
    expect(negotiateApi(answer('docker-20.10'))).toEqual({ version: 'v1.41', api: '1.41', podman: false });
  });

  it('Docker 26.1 speaks 1.45', () => {
    expect(negotiateApi(answer('docker-26.1'))).toEqual({ version: 'v1.45', api: '1.45', podman: false });
  });

  it('Docker 28.5 (engine D, API 1.51) gets ferry newest', () => {
    expect(negotiateApi(answer('docker-28.5'))).toEqual({
      version: `v${CLIENT_MAX_API}`,
      api: CLIENT_MAX_API,
      podman: false,
    });
  });

  it('Docker 29.0 (API 1.52, refuses below 1.44) gets ferry newest, which it accepts', () => {
    const n = negotiateApi(answer('docker-29.0'));
    expect(n).toEqual({ version: `v${CLIENT_MAX_API}`, api: CLIENT_MAX_API, podman: false });
    expect(compareApi(n.api, '1.44')).toBeGreaterThanOrEqual(0);
  });

  it('Podman 4 and 5 are recognised and speak 1.41', () => {
    expect(negotiateApi(answer('podman-4.3'))).toEqual({ version: 'v1.41', api: '1.41', podman: true });
    expect(negotiateApi(answer('podman-5.4'))).toEqual({ version: 'v1.41', api: '1.41', podman: true });
  });

  it('Docker 29.0 is never sent a version below its minimum, whatever the newest ferry knows', () => {
    // A ferry that knew only 1.41 (or 1.43): Docker 29 would refuse /v1.41/ ("client version 1.41
    // is too old. Minimum supported API version is 1.44"); unversioned requests get its own 1.52.
    for (const max of ['1.41', '1.43'])
      expect(negotiateApi(answer('docker-29.0'), max)).toEqual({ api: '1.52', podman: false });
    expect(negotiateApi(answer('docker-29.0'), '1.44')).toEqual({ version: 'v1.44', api: '1.44', podman: false });
  });

  it('every recorded engine is sent a version it accepts: between its minimum and its own', () => {
    for (const name of RECORDED) {
      const a = answer(name);
      const n = negotiateApi(a);
      expect(n.version, name).toBe(`v${n.api}`);
      expect(compareApi(n.api, a.MinAPIVersion!), name).toBeGreaterThanOrEqual(0);
      expect(compareApi(n.api, a.ApiVersion), name).toBeLessThanOrEqual(0);
      expect(compareApi(n.api, CLIENT_MAX_API), name).toBeLessThanOrEqual(0);
    }
  });

  it('an engine whose oldest version is newer than ferry knows gets unversioned requests', () => {
    expect(negotiateApi({ ApiVersion: '1.60', MinAPIVersion: '1.50' })).toEqual({ api: '1.60', podman: false });
  });

  it('compares versions by number, not as text', () => {
    expect(compareApi('1.9', '1.41')).toBe(-1);
    expect(compareApi('1.45', '1.45')).toBe(0);
    expect(compareApi('2.0', '1.52')).toBe(1);
  });
});

/**
 * DockerEngine.connect against an engine that answers `/version` as each recorded engine does and,
 * like Docker, refuses a request whose version is below its minimum (Docker 29: "client version
 * 1.41 is too old") or above its own: the requests ferry sends after connecting carry the
 * negotiated version, and the engine takes them.
 */
describe('DockerEngine.connect negotiates with each recorded engine', () => {
  let dir: string;
  let server: http.Server;
  let current: VersionAnswer;
  let requests: string[];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-api-version-'));
    server = http.createServer((req, res) => {
      const url = req.url ?? '';
      requests.push(url);
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      const v = /^\/v(\d+\.\d+)\//.exec(url)?.[1];
      if (v && compareApi(v, current.MinAPIVersion ?? '1.0') < 0)
        return json(400, {
          message: `client version ${v} is too old. Minimum supported API version is ${current.MinAPIVersion}, please upgrade your client to a newer version`,
        });
      if (v && compareApi(v, current.ApiVersion) > 0)
        return json(400, {
          message: `client version ${v} is too new. Maximum supported API version is ${current.ApiVersion}`,
        });
      if (url.endsWith('/version')) return json(200, current);
      if (url.endsWith('/info')) return json(200, {});
      if (url.includes('/containers/json')) return json(200, []);
      json(404, { message: `unexpected ${url}` });
    });
    await new Promise<void>((r) => server.listen(path.join(dir, 'engine.sock'), r));
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(RECORDED)('%s', async (name) => {
    current = answer(name);
    requests = [];
    const engine = await DockerEngine.connect({
      kind: 'unix',
      socketPath: path.join(dir, 'engine.sock'),
      source: 'test',
    });
    try {
      const want = negotiateApi(current);
      expect(engine.facts.apiVersion).toBe(want.api);
      expect(engine.facts.podman).toBe(name.startsWith('podman'));
      expect(await engine.listContainers(true)).toEqual([]);
      const list = requests.find((u) => u.includes('/containers/json'));
      expect(list).toMatch(new RegExp(`^/${want.version}/containers/json`));
    } finally {
      engine.close();
    }
  });
});
