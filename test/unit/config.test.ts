/**
 * The config file and FERRY_* variables (cli/config.ts): flags > environment > file > default,
 * through the real CLI (main()) with commands that need no engine (prune --dry-run of an empty
 * store shows its effective rules in --json), and `ferry config`.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runMain } from '../helpers/cli-run.js';
import { defaultConfigPaths, envName } from '../../src/cli/config.js';
import { schemaChecked } from '../helpers/json-schema.js';

const run = runMain;

let dir: string;
let store: string;
const saved: Record<string, string | undefined> = {};
const setEnv = (k: string, v: string | undefined) => {
  if (!(k in saved)) saved[k] = process.env[k];
  if (v === undefined) delete process.env[k];
  else process.env[k] = v;
};

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-config-'));
  store = path.join(dir, 'store');
  mkdirSync(store);
  // No config of this machine's user, nor a stray variable, in the way.
  setEnv('XDG_CONFIG_HOME', path.join(dir, 'xdg'));
  for (const k of ['FERRY_CONFIG', 'FERRY_KEEP_LAST', 'FERRY_KEEP_DAILY', 'FERRY_JSON', 'FERRY_DRY_RUN', 'FERRY_QUIET'])
    setEnv(k, undefined);
});
afterEach(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
    delete saved[k];
  }
});

function config(text: string, at = path.join(dir, 'ferry.toml')): string {
  mkdirSync(path.dirname(at), { recursive: true });
  writeFileSync(at, text);
  return at;
}

describe('where settings come from', () => {
  it('the command line, else the environment, else the file, else the default', async () => {
    const file = config('json = true\n[prune]\nkeep-last = 2\nkeep-daily = 7\ndry-run = true\n');
    // File only: its rules, its --dry-run, and its global --json (one object on stdout).
    const f = await run('--config', file, 'prune', store);
    expect(f.code, f.stderr).toBe(0);
    expect(schemaChecked(f.stdout)).toMatchObject({ command: 'prune', dryRun: true, policy: { last: 2, daily: 7 } });
    // The environment over the file.
    setEnv('FERRY_KEEP_LAST', '3');
    const e = await run('--config', file, 'prune', store);
    expect(schemaChecked(e.stdout)).toMatchObject({ policy: { last: 3, daily: 7 } });
    // The command line over both.
    const c = await run('--config', file, 'prune', store, '--keep-last', '4');
    expect(schemaChecked(c.stdout)).toMatchObject({ policy: { last: 4, daily: 7 } });
    // A switch from the environment: 0 turns off what the file turned on.
    setEnv('FERRY_DRY_RUN', '0');
    setEnv('FERRY_JSON', 'false');
    const off = await run('--config', file, 'prune', store);
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout).toMatch(/^0 bundles removed/m);
  });

  it('FERRY_CONFIG names the file; without it the XDG place is read', async () => {
    const named = config('[prune]\nkeep-last = 5\n', path.join(dir, 'named.toml'));
    setEnv('FERRY_CONFIG', named);
    const a = await run('--json', 'prune', store, '--dry-run');
    expect(schemaChecked(a.stdout)).toMatchObject({ policy: { last: 5 } });
    setEnv('FERRY_CONFIG', undefined);
    const xdg = defaultConfigPaths(process.env)[0]!;
    expect(xdg).toBe(path.join(dir, 'xdg', 'ferry', 'ferry.toml'));
    config('[prune]\nkeep-weekly = 4\n', xdg);
    const b = await run('--json', 'prune', store, '--dry-run');
    expect(schemaChecked(b.stdout)).toMatchObject({ policy: { weekly: 4 } });
  });

  it('ferry config shows each setting and where it comes from', async () => {
    const file = config(
      'quiet = true\n[backup]\noutput = "/backups"\nfilter = ["label=backup=nightly", "name=web*"]\n',
    );
    setEnv('FERRY_KEEP_DAILY', '7');
    const j = await run('--config', file, '--json', 'config');
    expect(j.code, j.stderr).toBe(0);
    const o = schemaChecked(j.stdout) as { file: string; settings: unknown[] };
    expect(o.file).toBe(file);
    expect(o.settings).toEqual(
      expect.arrayContaining([
        { command: '', option: 'quiet', value: true, source: 'file' },
        { command: 'backup', option: 'output', value: '/backups', source: 'file' },
        { command: 'backup', option: 'filter', value: ['label=backup=nightly', 'name=web*'], source: 'file' },
        { command: 'prune', option: 'keep-daily', value: '7', source: 'env' },
      ]),
    );
    const t = await run('--config', file, 'config', 'prune');
    expect(t.stdout).toContain(`config file: ${file}`);
    expect(t.stdout).toMatch(/prune +--keep-daily +7 +FERRY_KEEP_DAILY/);
    expect(t.stdout).not.toContain('/backups');
    expect(envName('--no-start')).toBe('FERRY_NO_START');
  });
});

describe('mistakes in settings are usage errors (exit 2), never ignored', () => {
  it('a misspelt key or table, a bad value, bad TOML, a named file that is missing', async () => {
    const cases: [string, string | undefined, RegExp][] = [
      ['[prune]\nkeep-lats = 2\n', undefined, /\[prune\] has no setting keep-lats/],
      ['[bakup]\noutput = "/x"\n', undefined, /\[bakup\] is not a ferry command/],
      ['[prune]\nkeep-last = "many"\n', undefined, /keep-last many/],
      ['[prune]\ndry-run = "perhaps"\n', undefined, /dry-run is a switch/],
      ['[prune\n', undefined, /not valid TOML/],
      ['', 'x', /FERRY_KEEP_LAST/],
    ];
    for (const [text, env, message] of cases) {
      const file = config(text);
      setEnv('FERRY_KEEP_LAST', env);
      const r = await run('--config', file, '--json', 'prune', store, '--keep-daily', '1');
      expect(r.code, text).toBe(2);
      expect(r.stderr, text).toMatch(message);
      expect(schemaChecked(r.stdout)).toMatchObject({ ok: false, error: { code: 'USAGE', exitCode: 2 } });
    }
    const missing = await run('--config', path.join(dir, 'nope.toml'), 'prune', store, '--keep-last', '1');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the config file .*nope\.toml: ENOENT/);
  });
});
