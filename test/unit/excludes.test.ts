/** Path excludes: one syntax, and GNU tar's --exclude, the matcher and the archive filter agree on it. */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, symlinkSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { collect } from '../helpers/tar.js';
import {
  ExcludeFilter,
  excludeList,
  excludeMatcher,
  excludeTarArgs,
  labelExcludes,
  normalizeExclude,
} from '../../src/data/excludes.js';
import { UsageError } from '../../src/errors.js';
import { applySettings } from '../../src/cli/config.js';
import { createProgram, type Deps } from '../../src/cli/program.js';

const root = mkdtempSync(path.join(tmpdir(), 'ferry-excludes-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const dir = path.join(root, 'v');
const files = [
  'cache/sub/f',
  'cache/x',
  'a/cache/y',
  'a/b.log',
  'logs/1.log',
  'logs/keep.txt',
  'top.log',
  '.hidden',
  'we[ird',
  'tmp1/z',
  'tmp2/z',
  'tmpa/z',
  'x*y',
  'long/' + 'n'.repeat(120) + '/deep.log',
];
for (const f of files) {
  mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
  writeFileSync(path.join(dir, f), `data of ${f}\n`.repeat(100));
}
symlinkSync('../top.log', path.join(dir, 'logs/link.log'));
linkSync(path.join(dir, 'logs/keep.txt'), path.join(dir, 'hard-to-keep'));

const PATTERNS = [
  ['cache'],
  ['*.log'],
  ['logs/*.log'],
  ['a/*'],
  ['?ache'],
  ['[ab]'],
  ['we\\[ird'],
  ['a/cache', '.hidden'],
  ['tmp[0-9]'],
  ['tmp[!0-9]'],
  ['x\\*y'],
  ['*'],
  ['long/*/deep.log'],
  ['logs/link.log', 'nothing/here'],
];

function tar(args: string[]): Buffer {
  const r = spawnSync('tar', args, { maxBuffer: 1 << 26 });
  expect(r.status, r.stderr?.toString()).toBe(0);
  return r.stdout;
}
const list = (archive: Buffer) =>
  spawnSync('tar', ['-tvf', '-', '--numeric-owner', '--full-time'], { input: archive, maxBuffer: 1 << 26 })
    .stdout.toString()
    .split('\n')
    .filter(Boolean)
    .sort();
const base = ['--create', '--file=-', '--format=posix', '--sort=name', '-C', dir];

async function filtered(archive: Buffer, patterns: string[]): Promise<Buffer> {
  // in small, odd chunks: headers and data split across them
  const parts: Buffer[] = [];
  for (let i = 0; i < archive.length; i += 333) parts.push(archive.subarray(i, i + 333));
  return collect(Readable.from(parts).pipe(new ExcludeFilter(patterns)));
}

describe('path excludes', () => {
  it('normalizes patterns and refuses empty ones and .. components', () => {
    expect(normalizeExclude('/cache/', 'x')).toBe('cache');
    expect(normalizeExclude('./a//b', 'x')).toBe('a/b');
    for (const bad of ['', '/', './', '../etc', 'a/../b', 'a/./b'])
      expect(() => normalizeExclude(bad, '--exclude-path')).toThrow(UsageError);
    expect(excludeList(['cache', '/cache', 'b'], 'x')).toEqual(['cache', 'b']);
  });

  it('reads the label: commas or newlines between patterns', () => {
    expect(labelExcludes('web', { 'ferry.exclude-paths': 'cache, logs/*.log\n tmp/\n' })).toEqual([
      'cache',
      'logs/*.log',
      'tmp',
    ]);
    expect(labelExcludes('web', {})).toEqual([]);
    expect(() => labelExcludes('web', { 'ferry.exclude-paths': '../x' })).toThrow(/web: its label ferry.exclude-paths/);
  });

  it('the matcher: anchored at the root, wildcards never cross /, a directory takes its content', () => {
    const m = excludeMatcher(['cache', '*.log', 'a/[b]*']);
    expect(m('./cache')).toBe(true);
    expect(m('cache/sub/f')).toBe(true);
    expect(m('./a/cache')).toBe(false);
    expect(m('top.log')).toBe(true);
    expect(m('logs/1.log')).toBe(false);
    expect(m('a/b.log')).toBe(true);
    expect(m('a/cache/y')).toBe(false);
    expect(m('./')).toBe(false);
    expect(excludeMatcher([])('anything')).toBe(false);
  });

  for (const patterns of PATTERNS)
    it(`GNU tar, the matcher and the filter leave out the same entries: ${patterns.join(' ')}`, async () => {
      const full = tar([...base, '.']);
      const byTar = tar([...base, ...excludeTarArgs(patterns), '.']);
      const kept = list(byTar);
      // the matcher, on every name of the full archive
      const m = excludeMatcher(patterns);
      const names = spawnSync('tar', ['-tf', '-'], { input: full }).stdout.toString().split('\n').filter(Boolean);
      const byMatcher = names.filter((n) => !m(n)).sort();
      const tarNames = spawnSync('tar', ['-tf', '-'], { input: byTar }).stdout.toString().split('\n').filter(Boolean);
      expect(byMatcher).toEqual(tarNames.sort());
      // the filter, on the full archive: the same entries, with the same attributes and data
      const out = await filtered(full, patterns);
      expect(list(out)).toEqual(kept);
      // and it extracts, byte for byte as tar's own
      const a = path.join(root, `a-${patterns.join('_').replace(/\W/g, '_')}`);
      const b = `${a}-b`;
      mkdirSync(a);
      mkdirSync(b);
      spawnSync('tar', ['-xf', '-', '-C', a], { input: out });
      spawnSync('tar', ['-xf', '-', '-C', b], { input: byTar });
      const diff = spawnSync('diff', ['-r', '--no-dereference', a, b], { encoding: 'utf8' });
      expect(diff.stdout + diff.stderr).toBe('');
    });

  it('the filter leaves out a hard link to an excluded file (its data is not in the archive)', async () => {
    const d = path.join(root, 'hard');
    mkdirSync(path.join(d, 'cache'), { recursive: true });
    writeFileSync(path.join(d, 'cache/x'), 'x');
    writeFileSync(path.join(d, 'kept'), 'k');
    linkSync(path.join(d, 'cache/x'), path.join(d, 'link-to-x'));
    const full = tar(['--create', '--file=-', '--format=posix', '--sort=name', '-C', d, '.']);
    const names = spawnSync('tar', ['-tf', '-'], { input: await filtered(full, ['cache']) })
      .stdout.toString()
      .split('\n')
      .filter(Boolean);
    expect(names.sort()).toEqual(['./', './kept']);
  });

  it('passes an archive untouched when nothing is excluded', async () => {
    const full = tar([...base, '.']);
    expect((await filtered(full, [])).equals(full)).toBe(true);
    expect((await filtered(full, ['nothing/here'])).equals(full)).toBe(true);
  });

  it('--exclude-path comes from the config file or FERRY_EXCLUDE_PATH as other options do, checked alike', () => {
    for (const command of ['backup', 'migrate']) {
      const cmd = () => createProgram({} as Deps).commands.find((c) => c.name() === command)!;
      const fromFile = cmd();
      applySettings(fromFile, { 'exclude-path': ['/cache/', 'logs/*.log'] }, {}, { file: 'f.toml', command });
      expect(fromFile.opts().excludePath).toEqual(['cache', 'logs/*.log']);
      const fromEnv = cmd();
      applySettings(fromEnv, { 'exclude-path': ['x'] }, { FERRY_EXCLUDE_PATH: 'tmp' }, { file: 'f.toml', command });
      expect(fromEnv.opts().excludePath).toEqual(['tmp']);
      expect(() => applySettings(cmd(), { 'exclude-path': ['a/../b'] }, {}, { file: 'f.toml', command })).toThrow(
        UsageError,
      );
    }
  });
});
