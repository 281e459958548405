/**
 * A bundle the user may not read (mode 0600, another owner) is a permission problem, never a
 * damaged bundle (issue 22): verify, ls, prune and inspect say "permission denied", and those that
 * fail exit 8, not 7. The file's bytes are not a tar at all, so a run that read them (as root)
 * would call it damaged (exit 7): the cause is told by what happened, not by what was read.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-unreadable-'));
const store = path.join(dir, 'store');
const bundle = path.join(store, 'ferry-web-20260101T000000Z.tar');

/** ferry as the user nobody. */
function asNobody(args: string[]): { code: number | null; out: string } {
  const r = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, BIN, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, HOME: dir, FERRY_STATE_DIR: path.join(dir, 'state') },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

beforeAll(() => {
  chmodSync(dir, 0o755);
  mkdirSync(store, { mode: 0o777 });
  chmodSync(store, 0o777);
  mkdirSync(path.join(dir, 'state'), { mode: 0o777 });
  chmodSync(path.join(dir, 'state'), 0o777);
  writeFileSync(bundle, randomBytes(20_000), { mode: 0o600 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a bundle the user may not read', () => {
  it('read by its owner it is no bundle at all (exit 7): what the checks below tell apart', () => {
    const r = spawnSync(process.execPath, [BIN, 'verify', bundle], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(7);
  });

  it.each([
    ['verify <bundle>', ['verify', bundle], 8],
    ['verify <store>', ['verify', store], 8],
    ['inspect', ['inspect', bundle], 8],
  ])('%s: permission denied, exit 8', (_what, args, code) => {
    const r = asNobody(args as string[]);
    expect(r.code, r.out).toBe(code);
    expect(r.out).toMatch(/permission denied/);
    expect(r.out).not.toMatch(/damaged|not a ferry bundle|not a tar|not a complete bundle/);
  });

  it('ls: listed as unreadable for permission, not as damaged', () => {
    const r = asNobody(['ls', store]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/unreadable: permission denied/);
    expect(r.out).not.toMatch(/damaged|not a ferry bundle|not a tar/);
  });

  it('prune: never removed, never counted, and said why', () => {
    const r = asNobody(['prune', store, '--keep-last', '1']);
    expect(r.out).toMatch(/permission denied/);
    expect(r.out).not.toMatch(/damaged|not a ferry bundle|not a tar/);
    expect(existsSync(bundle)).toBe(true);
  });
});
