/**
 * What a cron job needs: dead-man's switch pings, --all with one bundle per container and exit 3
 * when some fail, and quiet plain output.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ferry, freePort, inspect, uid } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-cron-'));
const name = uid('cron');
let server: Server;
let base = '';
const pings: { path: string; body: string }[] = [];

beforeAll(async () => {
  docker(['run', '-d', '--name', name, '-v', `${name}:/v`, BUSYBOX, 'sleep', '100000']);
  const port = await freePort();
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      pings.push({ path: req.url ?? '', body });
      res.end('OK');
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  base = `http://127.0.0.1:${port}/ping/abc-123`;
});

afterAll(() => {
  server?.close();
  cleanup(ENGINE_A, { containers: [name], volumes: [name] });
  rmSync(dir, { recursive: true, force: true });
});

describe('--notify-url', () => {
  it('pings /start and then success with a summary', async () => {
    pings.length = 0;
    const r = await ferry(['backup', name, '-o', path.join(dir, 'ok'), '--notify-url', base, '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(''); // --quiet: nothing when all is well
    expect(r.stderr).toBe('');
    expect(pings.map((p) => p.path)).toEqual(['/ping/abc-123/start', '/ping/abc-123']);
    expect(pings[1]!.body).toMatch(new RegExp(`backed up ${name} to .*ferry-${name}-`));
  });

  it('pings /fail with the error when the backup fails', async () => {
    pings.length = 0;
    const r = await ferry(['backup', 'no-such-container-cron', '-o', path.join(dir, 'fail'), '--notify-url', base]);
    expect(r.code).toBe(5);
    expect(pings.map((p) => p.path)).toEqual(['/ping/abc-123/start', '/ping/abc-123/fail']);
    expect(pings[1]!.body).toMatch(/no such container: no-such-container-cron/);
  });

  it('an unreachable notify URL never fails the backup', async () => {
    const dead = `http://127.0.0.1:${await freePort()}/ping/secret-uuid`;
    const r = await ferry(['backup', name, '-o', path.join(dir, 'dead'), '--notify-url', dead]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/notify start: could not reach http:\/\/127\.0\.0\.1:\d+\/…/);
    expect(r.stderr).not.toMatch(/secret-uuid/); // the check's id is not printed
    expect(readdirSync(path.join(dir, 'dead'))).toHaveLength(1);
  });
});

describe('plain output for cron', () => {
  it('prints plain lines, no cursor movement, when stderr is not a terminal', async () => {
    const r = await ferry(['backup', name, '-o', path.join(dir, 'plain')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/\x1b\[/);
    expect(r.stdout.trim().split('\n')).toHaveLength(1); // one summary line
    expect(inspect('container', name).State.Running).toBe(true);
  });
});
