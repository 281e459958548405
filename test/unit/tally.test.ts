/**
 * The proof that a replace's copy of a volume is whole (src/data/tally.ts): two tars of one tree
 * tally alike whatever their order and path prefix; a file missing, cut short, renamed or added
 * does not.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { entryPath, sameTally, tallied, tallyTar } from '../../src/data/tally.js';
import { collect, packTar, type TarEntry } from '../helpers/tar.js';

const tree: TarEntry[] = [
  { name: './', type: 'directory' },
  { name: './db/', type: 'directory' },
  { name: './db/records.txt', data: 'alpha\nbeta\n' },
  { name: './README.txt', data: 'hello' },
  { name: './link', type: 'symlink', linkname: '../outside' },
];
const tally = async (entries: TarEntry[]) => tallyTar(Readable.from([await packTar(entries)]));

describe('tally', () => {
  it('names entries relative to the root', () => {
    expect(entryPath('./')).toBe('');
    expect(entryPath('.')).toBe('');
    expect(entryPath('./db/')).toBe('db');
    expect(entryPath('db/x')).toBe('db/x');
  });

  it('is the same for the same tree in another order or with another prefix', async () => {
    const a = await tally(tree);
    expect(a).toMatchObject({ entries: 5, bytes: 16 });
    const b = await tally([...tree].reverse().map((e) => ({ ...e, name: e.name.replace(/^\.\//, '') || '.' })));
    expect(sameTally(a, b)).toBe(true);
  });

  it.each<[string, (t: TarEntry[]) => TarEntry[]]>([
    ['a file missing', (t) => t.filter((e) => e.name !== './README.txt')],
    ['a file cut short', (t) => t.map((e) => (e.name === './README.txt' ? { ...e, data: 'hel' } : e))],
    ['a file renamed', (t) => t.map((e) => (e.name === './README.txt' ? { ...e, name: './READ.txt' } : e))],
    ['a file added', (t) => [...t, { name: './junk.tmp', data: '' }]],
    ['a link retargeted', (t) => t.map((e) => (e.name === './link' ? { ...e, linkname: 'x' } : e))],
    ['a directory become a file', (t) => t.map((e) => (e.name === './db/' ? { name: './db2', data: '' } : e))],
  ])('differs with %s', async (_what, change) => {
    expect(sameTally(await tally(tree), await tally(change(tree)))).toBe(false);
  });

  it('tallies a stream on its way to another reader, which gets every byte', async () => {
    const bytes = await packTar(tree);
    const { stream, tally: t } = tallied(Readable.from([bytes.subarray(0, 700), bytes.subarray(700)]));
    expect((await collect(stream)).equals(bytes)).toBe(true);
    expect(sameTally(await t, await tally(tree))).toBe(true);
  });
});
