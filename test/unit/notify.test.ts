/**
 * --notify-url on backup, verify, drill and prune (src/cli/notify.ts): the commands run in this
 * process against the engine fake and a local store, and a local HTTP server records the pings.
 * Each run is compared with the same run without the URL: same exit code, same stdout.
 */
import { once } from 'node:events';
import { copyFile, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { runMain } from '../helpers/cli-run.js';
import type { FakeEngine } from '../helpers/engine-fake.js';
import { sourceEngine, tempDir, useTempStateDir } from '../helpers/ops-fixtures.js';

// The commands open their engine through openEngine: here, the fake of the test.
let engine: FakeEngine;
vi.mock('../../src/engine/connect.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../src/engine/connect.js')>()),
  openEngine: () => Promise.resolve(engine),
}));

interface Ping {
  method: string;
  path: string;
  body: string;
}
let server: Server;
let pings: Ping[];
let base: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      pings.push({ method: req.method!, path: req.url!, body });
      res.end('OK');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ping/check-1`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

let restoreState: () => Promise<void>;
beforeAll(async () => {
  restoreState = await useTempStateDir();
});
afterAll(async () => restoreState());

let dir: string;
let store: string;
beforeEach(async () => {
  pings = [];
  engine = await sourceEngine();
  dir = await tempDir('ferry-notify-');
  store = path.join(dir, 'store');
  // Not the user's config file or FERRY_* settings.
  vi.stubEnv('XDG_CONFIG_HOME', path.join(dir, 'config'));
  vi.stubEnv('FERRY_CONFIG', '');
  vi.stubEnv('FERRY_NOTIFY_URL', undefined);
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await rm(dir, { recursive: true, force: true });
});

/** A bundle of "app" in `store` (made without a notify URL), and its path. */
async function bundle(): Promise<string> {
  const r = await runMain('backup', 'app', '-o', store, '--mkdir', '--quiet');
  expect(r.code, r.stderr).toBe(0);
  const files = (await readdir(store)).filter((f) => f.endsWith('.tar'));
  return path.join(store, files.sort().at(-1)!);
}

/** A copy of `file` with bytes in its middle flipped: a damaged bundle. */
async function damaged(file: string): Promise<string> {
  const buf = await readFile(file);
  for (let i = 0; i < 64; i++) buf[Math.floor(buf.length / 2) + i]! ^= 0xff;
  const out = path.join(dir, 'damaged.tar');
  await writeFile(out, buf);
  return out;
}

/** Run `args` with --notify-url after them, and without: the pings, and both results. */
async function withAndWithout(args: string[]) {
  const plain = await runMain(...args);
  expect(pings).toEqual([]);
  const notified = await runMain(...args, '--notify-url', base);
  return { plain, notified, pings: pings.map((p) => ({ ...p })) };
}

const paths = (ps: Ping[]) => ps.map((p) => `${p.method} ${p.path}`);

describe('--notify-url', () => {
  it('verify: start then success for a whole bundle, start then fail for a damaged one', async () => {
    const file = await bundle();
    const ok = await withAndWithout(['verify', file]);
    expect(ok.notified.code).toBe(0);
    expect(ok.notified.stdout).toBe(ok.plain.stdout);
    expect(paths(ok.pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1']);
    expect(ok.pings[0]!.body).toMatch(/^ferry \S+ verify started on /);
    expect(ok.pings[1]!.body).toMatch(new RegExp(`^verified ${file}: whole \\(\\d+ members checked\\)$`));

    pings = [];
    const bad = await withAndWithout(['verify', await damaged(file)]);
    expect(bad.plain.code).toBe(7);
    expect(bad.notified.code).toBe(7);
    expect(bad.notified.stdout).toBe(bad.plain.stdout);
    expect(paths(bad.pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1/fail']);
    expect(bad.pings[1]!.body).toMatch(/^ferry verify failed on .*: .*damaged\.tar is not whole/);
    expect(bad.pings[1]!.body).not.toContain('\n');
  });

  it('verify of a store: success when every bundle is whole, fail naming the bad one', async () => {
    await bundle();
    const ok = await withAndWithout(['verify', store]);
    expect(ok.notified.code).toBe(0);
    expect(paths(ok.pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1']);
    expect(ok.pings[1]!.body).toBe(`verified ${store}: 1 bundle, all whole`);

    await copyFile(await damaged(await bundle()), path.join(store, 'ferry-app-broken.tar'));
    pings = [];
    const bad = await withAndWithout(['verify', store]);
    expect(bad.notified.code).toBe(7);
    expect(bad.notified.stdout).toBe(bad.plain.stdout);
    expect(paths(bad.pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1/fail']);
    expect(bad.pings[1]!.body).toMatch(/not whole: ferry-app-broken\.tar/);
  });

  it('prune: success with what it removed; fail when the store is missing; a dry run tells nobody', async () => {
    await bundle();
    await bundle();
    const dry = await runMain('prune', store, '--keep-last', '1', '--dry-run', '--notify-url', base);
    expect(dry.code).toBe(0);
    expect(pings).toEqual([]);
    const r = await runMain('prune', store, '--keep-last', '1', '--notify-url', base);
    expect(r.code, r.stderr).toBe(0);
    expect(paths(pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1']);
    expect(pings[1]!.body).toMatch(new RegExp(`^pruned ${store}: 1 bundle removed \\(.+\\), 1 kept$`));
    expect((await readdir(store)).filter((f) => f.endsWith('.tar'))).toHaveLength(1);

    pings = [];
    const missing = path.join(dir, 'nothing-here');
    const bad = await withAndWithout(['prune', missing, '--keep-last', '1']);
    expect(bad.plain.code).not.toBe(0);
    expect(bad.notified.code).toBe(bad.plain.code);
    expect(bad.notified.stdout).toBe(bad.plain.stdout);
    expect(paths(bad.pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1/fail']);
    expect(bad.pings[1]!.body).toMatch(/^ferry prune failed on .*nothing-here/);
  });

  it('drill: success when the copy passes, fail with the reason for a damaged bundle', async () => {
    const file = await bundle();
    const ok = await runMain('drill', file, '--timeout', '5', '--notify-url', base);
    expect(ok.code, ok.stderr).toBe(0);
    expect(paths(pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1']);
    expect(pings[0]!.body).toMatch(/^ferry \S+ drill started on /);
    expect(pings[1]!.body).toMatch(new RegExp(`^drill of ${file} on \\S+: PASS in [\\d.]+s$`));

    pings = [];
    const bad = await withAndWithout(['drill', await damaged(file), '--timeout', '5']);
    expect(bad.plain.code).toBe(7);
    expect(bad.notified.code).toBe(7);
    expect(paths(bad.pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1/fail']);
    expect(bad.pings[1]!.body).toMatch(/^drill of .*damaged\.tar on \S+: FAIL: /);
    expect(bad.pings[1]!.body).not.toContain('\n');
  });

  it('backup (the same helper): success, and fail for a container that does not exist', async () => {
    const r = await runMain('backup', 'app', '-o', store, '--mkdir', '--quiet', '--notify-url', base);
    expect(r.code, r.stderr).toBe(0);
    expect(paths(pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1']);
    expect(pings[1]!.body).toMatch(/^backed up app to .*ferry-app-.*\.tar \(.+\)$/);

    pings = [];
    const bad = await runMain('backup', 'nosuch', '-o', store, '--quiet', '--notify-url', base);
    expect(bad.code).toBe(5);
    expect(paths(pings)).toEqual(['POST /ping/check-1/start', 'POST /ping/check-1/fail']);
    expect(pings[1]!.body).toMatch(/^ferry backup failed on .*nosuch/);
  });

  it('FERRY_NOTIFY_URL and the config file set it too', async () => {
    const file = await bundle();
    vi.stubEnv('FERRY_NOTIFY_URL', `${base}-env`);
    expect((await runMain('verify', file)).code).toBe(0);
    expect(paths(pings)).toEqual(['POST /ping/check-1-env/start', 'POST /ping/check-1-env']);

    vi.stubEnv('FERRY_NOTIFY_URL', undefined);
    const config = path.join(dir, 'ferry.toml');
    await writeFile(config, `[prune]\nnotify-url = "${base}-file"\n`);
    pings = [];
    expect((await runMain('--config', config, 'prune', store, '--keep-last', '1')).code).toBe(0);
    expect(paths(pings)).toEqual(['POST /ping/check-1-file/start', 'POST /ping/check-1-file']);
  });

  it('an unreachable URL is a warning: same exit code, same stdout', async () => {
    const file = await bundle();
    // A port nothing listens on: one the kernel gave a server that is closed again.
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const dead = `http://127.0.0.1:${port}/secret-uuid`;
    for (const [args, code] of [
      [['verify', file], 0],
      [['verify', await damaged(file)], 7],
      [['prune', store, '--keep-last', '1'], 0],
    ] as const) {
      const plain = await runMain(...args);
      // Progress and its warnings go to the process's stderr, not to main's io.
      let warned = '';
      const spy = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
        warned += c.toString();
        return true;
      });
      const r = await runMain(...args, '--notify-url', dead).finally(() => spy.mockRestore());
      warned += r.stderr;
      expect(plain.code, args.join(' ')).toBe(code);
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.stdout).toBe(plain.stdout);
      expect(warned).toMatch(new RegExp(`notify start: could not reach http://127\\.0\\.0\\.1:${port}/…`));
      expect(warned).toMatch(code ? /notify fail: could not reach/ : /notify success: could not reach/);
      expect(warned).not.toContain('secret-uuid');
    }
  });
});
