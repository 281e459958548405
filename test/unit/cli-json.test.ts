/**
 * The --json schema (docs/json.md, docs/json-schema.json) for what needs no engine: usage
 * errors, --version, stores and bundles that are missing or unreadable. The e2e test
 * test/e2e/json.test.ts checks every command against the same schema on a real engine.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runMain } from '../helpers/cli-run.js';
import { COMMAND_NAMES, createProgram, type Deps } from '../../src/cli/program.js';
import { FERRY_JSON_SCHEMA, schemaChecked, validate } from '../helpers/json-schema.js';
import { portFromDrill, portFromPlan, portsFromBindings } from '../../src/cli/json.js';

const run = runMain;

describe('the checker itself', () => {
  const ok = { schemaVersion: 1, command: 'version', ok: true, version: '1', node: '20' };
  it('accepts a valid object and names what is wrong in others', () => {
    expect(validate(FERRY_JSON_SCHEMA, ok)).toEqual([]);
    expect(validate(FERRY_JSON_SCHEMA, { ...ok, extra: 1 }).join()).toMatch(/extra/);
    expect(validate(FERRY_JSON_SCHEMA, { ...ok, version: 1 }).join()).toMatch(/version: expected string/);
    expect(validate(FERRY_JSON_SCHEMA, { ...ok, schemaVersion: 2 }).join()).toMatch(/schemaVersion/);
    expect(validate(FERRY_JSON_SCHEMA, { ...ok, ok: false }).join()).toMatch(/missing error/);
    expect(validate(FERRY_JSON_SCHEMA, { ...ok, command: 'nope' }).join()).toMatch(/not one of/);
    const e = { code: 'X', exitCode: 2, message: 'm', hint: null };
    expect(validate(FERRY_JSON_SCHEMA, { schemaVersion: 1, command: 'ls', ok: false, error: e })).toEqual([]);
    expect(
      validate(FERRY_JSON_SCHEMA, { schemaVersion: 1, command: 'ls', ok: false, error: { ...e, hint: undefined } }),
    ).not.toEqual([]);
    expect(validate(FERRY_JSON_SCHEMA, { schemaVersion: 1, command: 'ls', ok: true }).join()).toMatch(/missing store/);
  });
});

describe('--json without an engine', () => {
  it('--version --json is one object', async () => {
    const r = await run('--version', '--json');
    expect(r.code).toBe(0);
    expect(schemaChecked(r.stdout)).toMatchObject({ command: 'version', ok: true, version: expect.any(String) });
  });

  it('a misspelt option is reported as such, with a suggestion, exit 2, as JSON', async () => {
    const r = await run('--json', 'backup', 'web', '--ouput', '/tmp/x');
    expect(r.code).toBe(2);
    const j = schemaChecked(r.stdout);
    expect(j).toMatchObject({ command: 'backup', ok: false, error: { code: 'USAGE', exitCode: 2 } });
    expect((j.error as { message: string }).message).toContain('--ouput');
    expect((j.error as { hint: string }).hint).toContain('--output');
    expect(r.stderr).toMatch(/^ferry: error: unknown option '--ouput'/);
    expect(r.stderr).not.toMatch(/required option/);
  });

  it('one error prefix, no stack trace, for every kind of usage error', async () => {
    for (const args of [
      ['backup', 'web'],
      ['nosuch'],
      ['verify'],
      ['restore', 'x.tar', '--on-conflict', 'maybe'],
      ['migrate', 'web'],
      ['prune', '/tmp', '--keep-last', 'x'],
    ]) {
      const r = await run(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^ferry: error: /);
      expect(r.stderr).not.toMatch(/^error: |\n\s+at /m);
      const j = await run('--json', ...args);
      expect(j.code).toBe(2);
      expect(schemaChecked(j.stdout)).toMatchObject({ ok: false, error: { code: 'USAGE', exitCode: 2 } });
    }
  });

  it('a missing store, an empty one and one with an unreadable file', async () => {
    const missing = await run('--json', 'ls', '/nonexistent/ferry-store');
    expect(missing.code).toBe(5);
    expect(schemaChecked(missing.stdout)).toMatchObject({ command: 'ls', ok: false, error: { exitCode: 5 } });
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-json-'));
    const empty = await run('--json', 'ls', dir);
    expect(schemaChecked(empty.stdout)).toMatchObject({ ok: true, store: dir, bundles: [] });
    writeFileSync(path.join(dir, 'junk.tar'), 'not a bundle');
    const junk = await run('--json', 'ls', dir);
    const j = schemaChecked(junk.stdout) as { bundles: { error: { exitCode: number } }[] };
    expect(j.bundles).toHaveLength(1);
    expect(j.bundles[0]!.error.exitCode).toBe(7);
    const v = await run('--json', 'verify', dir);
    expect(v.code).toBe(7);
    expect(schemaChecked(v.stdout)).toMatchObject({ command: 'verify', ok: false, error: { exitCode: 7 } });
    const vb = await run('--json', 'verify', path.join(dir, 'junk.tar'));
    expect(vb.code).toBe(7);
    expect(schemaChecked(vb.stdout)).toMatchObject({ command: 'verify', ok: false, error: { code: 'BUNDLE' } });
    const i = await run('--json', 'inspect', path.join(dir, 'junk.tar'));
    expect(i.code).toBe(7);
    expect(schemaChecked(i.stdout)).toMatchObject({ command: 'inspect', ok: false });
    const p = await run('--json', 'prune', dir, '--keep-last', '1', '--dry-run');
    expect(p.code).toBe(0);
    expect(schemaChecked(p.stdout)).toMatchObject({ command: 'prune', ok: true, unreadable: [{}] });
  });
});

describe('every command', () => {
  it('is in COMMAND_NAMES (the name main reports an early error under) and in the JSON schema', () => {
    const program = createProgram({} as Deps);
    expect(program.commands.map((c) => c.name())).toEqual([...COMMAND_NAMES]);
    const schema = FERRY_JSON_SCHEMA as { properties: { command: { enum: string[] } } };
    for (const n of COMMAND_NAMES) expect(schema.properties.command.enum, n).toContain(n);
  });
});

describe('ports in one shape', () => {
  it('from PortBindings, restore plan lines and drill addresses', () => {
    expect(portsFromBindings({ '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }], '53/udp': null })).toEqual([
      { hostIp: '127.0.0.1', hostPort: '8080', containerPort: '80/tcp' },
      { hostIp: '', hostPort: '', containerPort: '53/udp' },
    ]);
    expect(portFromPlan('19202 -> 80/tcp')).toEqual({ hostIp: '', hostPort: '19202', containerPort: '80/tcp' });
    expect(portFromPlan('127.0.0.1:(any) -> 80/tcp')).toEqual({
      hostIp: '127.0.0.1',
      hostPort: '',
      containerPort: '80/tcp',
    });
    expect(portFromPlan('[::1]:8080 -> 80/tcp')).toEqual({ hostIp: '::1', hostPort: '8080', containerPort: '80/tcp' });
    expect(portFromDrill({ container: '80/tcp', host: '0.0.0.0:32768' })).toEqual({
      hostIp: '0.0.0.0',
      hostPort: '32768',
      containerPort: '80/tcp',
    });
  });
});

describe('the progress counter line', () => {
  it('shows done/total, percentage, rate and ETA where the total is known; the rate alone otherwise', async () => {
    const { counterLine, clock } = await import('../../src/cli/render.js');
    const MiB = 1024 * 1024;
    expect(counterLine('volume data', 30 * MiB, 2000, 100 * MiB)).toBe(
      'volume data: 30.0 MiB / 100.0 MiB  30%  15.0 MiB/s  ETA 0:05',
    );
    expect(counterLine('image web', 30 * MiB, 2000)).toBe('image web: 30.0 MiB  15.0 MiB/s');
    expect(counterLine('image web', 1024, 100)).toBe('image web: 1.0 KiB'); // too early for a rate
    expect(counterLine('v', 120 * MiB, 1000, 100 * MiB)).toBe('v: 120.0 MiB / 100.0 MiB  100%  120.0 MiB/s');
    expect(clock(3725)).toBe('1:02:05');
    const { summaryTable } = await import('../../src/cli/render.js');
    expect(
      summaryTable(
        [
          { label: 'volumes/data.tar.zst', bytes: 400 * MiB, firstMs: 1000, lastMs: 14_100 },
          { label: 'images/web.tar.gz', bytes: 2 * MiB, firstMs: 14_200, lastMs: 14_300 },
        ],
        15_000,
      ),
    ).toBe(
      [
        '  MOVED                 BYTES      TIME   RATE',
        '  volumes/data.tar.zst  400.0 MiB  13.1s  30.5 MiB/s',
        '  images/web.tar.gz     2.0 MiB    0.1s   -',
        '  total                 402.0 MiB  15.0s',
        '',
      ].join('\n'),
    );
    expect(summaryTable([], 1000)).toBe('');
    expect(clock(59.6)).toBe('1:00');
  });
});
