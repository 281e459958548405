/**
 * Every command's --json output against docs/json-schema.json, on a real engine: one line, one
 * object, `schemaVersion`, `command`, `ok`, and `error` whenever it failed (exit != 0). The
 * values are checked too: the same bundle, time, sizes and ports across commands.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  exists,
  ferry,
  freePort,
  inspect,
  removeSnapshots,
  uid,
} from '../helpers/lab.js';
import { schemaChecked } from '../helpers/json-schema.js';

const name = uid('js');
const vol = `${name}-data`;
let dir: string;
let port: number;
let bundle: string;
let createdAt: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-json-'));
  port = await freePort();
  docker([
    'run',
    '-d',
    '--name',
    name,
    '-p',
    `127.0.0.1:${port}:80`,
    '-v',
    `${vol}:/data`,
    BUSYBOX,
    'sh',
    '-c',
    'echo hello > /data/f; exec sleep 100000',
  ]);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name, `${name}-restored`], volumes: [vol, `${vol}-restored`] });
  cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
  removeSnapshots([name, `${name}-restored`]);
  rmSync(dir, { recursive: true, force: true });
});

describe('--json of every command fits the schema', () => {
  it('backup, then ls, inspect and verify of what it wrote, with the same names for the same things', async () => {
    const r = await ferry(['--json', 'backup', name, '-o', dir, '--compress', 'none']);
    expect(r.code, r.stderr).toBe(0);
    const b = schemaChecked(r.stdout);
    expect(b).toMatchObject({ command: 'backup', ok: true, containers: [name], volumes: [vol] });
    bundle = b.bundle as string;
    createdAt = b.createdAt as string;
    expect(b.storedBytes).toBeGreaterThan(0);
    expect(b.storedBytes).toBeLessThanOrEqual(statSync(bundle).size);

    const dry = await ferry(['--json', 'backup', name, '-o', dir, '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(schemaChecked(dry.stdout)).toMatchObject({ command: 'backup', ok: true, dryRun: true, containers: [name] });

    const ls = schemaChecked((await ferry(['ls', dir, '--json'])).stdout);
    expect(ls).toMatchObject({ command: 'ls', ok: true, store: dir });
    expect(ls.bundles).toEqual([
      expect.objectContaining({ bundle, createdAt, containers: [name], fileBytes: statSync(bundle).size }),
    ]);

    const i = schemaChecked((await ferry(['--json', 'inspect', bundle])).stdout);
    expect(i).toMatchObject({ command: 'inspect', ok: true, bundle, createdAt, fileBytes: statSync(bundle).size });
    expect(i.ports).toEqual([
      { container: name, hostIp: '127.0.0.1', hostPort: String(port), containerPort: '80/tcp' },
    ]);
    expect(JSON.stringify(i.manifest)).toContain(vol);

    const v = await ferry(['--json', 'verify', bundle]);
    expect(v.code, v.stderr).toBe(0);
    const vj = schemaChecked(v.stdout) as { members: { storedBytes?: number }[] };
    expect(vj).toMatchObject({ command: 'verify', ok: true, bundle });
    expect(vj.members.length).toBeGreaterThan(1);
    const store = schemaChecked((await ferry(['--json', 'verify', dir])).stdout);
    expect(store).toMatchObject({ command: 'verify', ok: true, store: dir, bundles: [{ bundle, ok: true }] });
  });

  it('a damaged bundle: verify prints its members and an error object, exit 7', async () => {
    const bad = path.join(dir, 'bad');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(bad);
    const buf = readFileSync(bundle);
    buf[buf.length - 2048] = buf[buf.length - 2048]! ^ 0xff; // inside the last member's data or trailer
    const p = path.join(bad, 'flipped.tar');
    writeFileSync(p, buf);
    const r = await ferry(['--json', 'verify', p]);
    expect(r.code).toBe(7);
    const j = schemaChecked(r.stdout);
    expect(j).toMatchObject({ command: 'verify', ok: false, bundle: p, error: { code: 'BUNDLE', exitCode: 7 } });
    expect(r.stderr).toMatch(/^ferry: error: /m);
    const s = await ferry(['--json', 'verify', bad]);
    expect(s.code).toBe(7);
    expect(schemaChecked(s.stdout)).toMatchObject({ ok: false, bundles: [{ ok: false, error: { exitCode: 7 } }] });
    rmSync(bad, { recursive: true });
  });

  it('restore: the dry run, a conflict and the real thing', async () => {
    const other = await freePort();
    const dry = await ferry([
      '--json',
      'restore',
      bundle,
      '--dry-run',
      '--on-conflict',
      'rename',
      '--map-port',
      `127.0.0.1:${port}=127.0.0.1:${other}`,
    ]);
    expect(dry.code, dry.stderr).toBe(0);
    const d = schemaChecked(dry.stdout) as { plan: { containers: { to: string; ports: unknown[] }[] } };
    expect(d).toMatchObject({ command: 'restore', ok: true, dryRun: true, containers: [], results: [] });
    expect(d.plan.containers[0]!.ports).toEqual([
      { hostIp: '127.0.0.1', hostPort: String(other), containerPort: '80/tcp' },
    ]);

    const conflict = await ferry(['--json', 'restore', bundle]);
    expect(conflict.code).toBe(6);
    expect(schemaChecked(conflict.stdout)).toMatchObject({
      command: 'restore',
      ok: false,
      error: { code: 'CONFLICT', exitCode: 6 },
    });

    const free = await freePort();
    const r = await ferry([
      '--json',
      'restore',
      bundle,
      '--name',
      `${name}-restored`,
      '--map-volume',
      `${vol}=${vol}-restored`,
      '--map-port',
      `127.0.0.1:${port}=127.0.0.1:${free}`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const j = schemaChecked(r.stdout) as { results: { container: string; id: string }[] };
    expect(j).toMatchObject({ command: 'restore', ok: true, dryRun: false, containers: [`${name}-restored`] });
    expect(j.results[0]!.id).toBe(inspect('container', `${name}-restored`).Id);
    cleanup(ENGINE_A, { containers: [`${name}-restored`], volumes: [`${vol}-restored`] });
  });

  it('prune, drill and migrate', async () => {
    const p = await ferry(['--json', 'prune', dir, '--keep-last', '1', '--dry-run']);
    expect(p.code, p.stderr).toBe(0);
    const pj = schemaChecked(p.stdout);
    expect(pj).toMatchObject({ command: 'prune', ok: true, dryRun: true, removed: [] });
    expect(pj.kept).toEqual([expect.objectContaining({ bundle, createdAt, fileBytes: statSync(bundle).size })]);

    const dr = await ferry(['--json', 'drill', bundle, '--timeout', '30']);
    expect(dr.code, dr.stderr).toBe(0);
    const dj = schemaChecked(dr.stdout) as { results: { ports: { hostIp: string; hostPort: string }[] }[] };
    expect(dj).toMatchObject({ command: 'drill', ok: true, containers: [name], leftovers: [] });
    expect(dj.results[0]!.ports[0]).toMatchObject({ hostIp: '127.0.0.1', containerPort: '80/tcp' });
    expect(Number(dj.results[0]!.ports[0]!.hostPort)).toBeGreaterThan(0);

    const m = await ferry([
      '--json',
      'migrate',
      name,
      '--to',
      ENGINE_B,
      '--map-port',
      `127.0.0.1:${port}=127.0.0.1:${await freePort()}`,
    ]);
    expect(m.code, m.stderr).toBe(0);
    const mj = schemaChecked(m.stdout) as { results: { container: string; id: string }[] };
    expect(mj).toMatchObject({ command: 'migrate', ok: true, containers: [name], volumes: [vol] });
    expect(mj.results[0]!.id).toBe(inspect('container', name, ENGINE_B).Id);
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
  });

  it('failures: a missing container, a missing store, a usage error, each one object with error', async () => {
    const nf = await ferry(['--json', 'backup', `${name}-nope`, '-o', dir]);
    expect(nf.code).toBe(5);
    expect(schemaChecked(nf.stdout)).toMatchObject({ command: 'backup', ok: false, error: { exitCode: 5 } });
    const nm = await ferry(['--json', 'migrate', `${name}-nope`, '--to', ENGINE_B]);
    expect(nm.code).toBe(5);
    expect(schemaChecked(nm.stdout)).toMatchObject({ command: 'migrate', ok: false, error: { exitCode: 5 } });
    const ls = await ferry(['--json', 'ls', path.join(dir, 'nope')]);
    expect(ls.code).toBe(5);
    expect(schemaChecked(ls.stdout)).toMatchObject({ command: 'ls', ok: false });
    const u = await ferry(['--json', 'restore', bundle, '--on-conflcit', 'rename']);
    expect(u.code).toBe(2);
    expect(schemaChecked(u.stdout)).toMatchObject({ command: 'restore', ok: false, error: { code: 'USAGE' } });
    expect(u.stderr).toMatch(/Did you mean --on-conflict\?/);
    expect(u.stderr).not.toMatch(/\n\s+at /);
    const v = await ferry(['--version', '--json']);
    expect(schemaChecked(v.stdout)).toMatchObject({ command: 'version', ok: true });
    expect(exists('container', name)).toBe(true); // nothing above touched the source
  });
});
