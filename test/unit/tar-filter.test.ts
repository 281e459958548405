/**
 * TarEntryFilter, the block rewriter under ExcludeFilter and EscapingLinks: long names over PAX
 * and GNU headers, data ending on a block boundary, headers split across chunks at every byte,
 * the end-of-archive marker and what follows it, global headers, an archive cut short.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TarEntryFilter, headerName, type TarDecision, type TarEntry } from '../../src/util/tar-filter.js';
import { packTar, type TarEntry as PackEntry } from '../helpers/tar.js';

const T = new Date('2020-01-02T03:04:05Z');
const root = mkdtempSync(path.join(tmpdir(), 'ferry-tarfilter-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Drops the entries whose name is in `drop`; records every entry it is asked about. */
class ByName extends TarEntryFilter {
  readonly seen: Omit<TarEntry, 'header' | 'pax'>[] = [];
  constructor(private readonly drop: ReadonlySet<string>) {
    super();
  }
  protected decide(e: TarEntry): TarDecision {
    this.seen.push({ type: e.type, name: e.name, linkname: e.linkname, size: e.size });
    return this.drop.has(e.name) ? 'drop' : 'pass';
  }
}

const PAX_NAME = `./pax-${'p'.repeat(150)}`;
const PREFIXED = `./${'long/'.repeat(30)}x`;
const GNU_NAME = `./g-${'l'.repeat(120)}`;
const GNU_TARGET = 't'.repeat(120);

/** tar-stream's part: a PAX path and linkpath, a ustar prefix, data of exactly one block, an empty file. */
async function streamPart(drop: ReadonlySet<string>): Promise<Buffer> {
  const entries: PackEntry[] = [
    { name: './', type: 'directory', mode: 0o755 },
    { name: PAX_NAME, data: 'pax long' },
    { name: PREFIXED, data: 'prefixed' },
    { name: './exact', data: 'e'.repeat(512) },
    { name: './empty', data: '' },
    { name: './plink', type: 'symlink', linkname: 'q'.repeat(150) },
    { name: './two', data: 'w'.repeat(1024) },
  ];
  const all = await packTar(
    entries.filter((e) => !drop.has(e.name)).map((e) => ({ mtime: T, uid: 0, gid: 0, mode: 0o644, ...e })),
  );
  return all.subarray(0, all.length - 1024); // without its end marker: GNU tar's part follows
}

/** GNU tar's part (--format=gnu): a long name ('L'), a long symlink target ('K'), a hard link. */
function gnuPart(drop: ReadonlySet<string>): Buffer {
  const dir = path.join(root, 'gnu');
  if (existsSync(dir)) return gnuTar(dir, drop);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'g-hard'), 'gnu long');
  linkSync(path.join(dir, 'g-hard'), path.join(dir, GNU_NAME));
  symlinkSync(GNU_TARGET, path.join(dir, 'g-link'));
  writeFileSync(path.join(dir, 'g-block'), Buffer.alloc(1024, 7));
  return gnuTar(dir, drop);
}

function gnuTar(dir: string, drop: ReadonlySet<string>): Buffer {
  // one block a record: the archive ends at its marker, whatever it holds (the end-marker test has zeros after)
  const args = [
    '-cf',
    '-',
    '-b',
    '1',
    '--format=gnu',
    '--sort=name',
    '--mtime=@0',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
  ];
  const r = spawnSync('tar', [...args, ...[...drop].map((d) => `--exclude=${d}`), '-C', dir, './'], {
    maxBuffer: 1 << 24,
  });
  expect(r.status, r.stderr.toString()).toBe(0);
  return r.stdout;
}

const archive = async (drop: ReadonlySet<string> = new Set()) => Buffer.concat([await streamPart(drop), gnuPart(drop)]);

async function run(parts: Buffer[], drop: ReadonlySet<string>): Promise<{ out: Buffer; f: ByName }> {
  const f = new ByName(drop);
  const got: Buffer[] = [];
  f.on('data', (c: Buffer) => got.push(c));
  const ended = new Promise((resolve, reject) => f.on('end', resolve).on('error', reject));
  for (const p of parts) f.write(p); // small archives: under the high-water mark
  f.end();
  await ended;
  return { out: Buffer.concat(got), f };
}

const chunks = (b: Buffer, size: number) => {
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) parts.push(b.subarray(i, i + size));
  return parts;
};

describe('TarEntryFilter', () => {
  it('names each entry in full: PAX path and linkpath, ustar prefix, GNU long name and link', async () => {
    const { out, f } = await run([await archive()], new Set());
    expect(out.equals(await archive())).toBe(true);
    expect(f.seen).toEqual([
      { type: '5', name: './', linkname: '', size: 0 },
      { type: '0', name: PAX_NAME, linkname: '', size: 8 },
      { type: '0', name: PREFIXED, linkname: '', size: 8 },
      { type: '0', name: './exact', linkname: '', size: 512 },
      { type: '0', name: './empty', linkname: '', size: 0 },
      { type: '2', name: './plink', linkname: 'q'.repeat(150), size: 0 },
      { type: '0', name: './two', linkname: '', size: 1024 },
      { type: '5', name: './', linkname: '', size: 0 },
      { type: '0', name: './g-block', linkname: '', size: 1024 },
      { type: '0', name: './g-hard', linkname: '', size: 8 },
      { type: '2', name: './g-link', linkname: GNU_TARGET, size: 0 },
      { type: '1', name: GNU_NAME, linkname: './g-hard', size: 0 },
    ]);
  });

  it('drops an entry with its PAX or long-name headers and its data, whatever it is', async () => {
    for (const d of [PAX_NAME, PREFIXED, './exact', './empty', './plink', './two', './g-block', GNU_NAME, './g-link']) {
      const drop = new Set([d]);
      const { out } = await run(chunks(await archive(), 100), drop);
      expect(out.equals(await archive(drop)), d).toBe(true);
    }
  });

  it('gives the same bytes wherever the chunks split, a header included (every byte offset)', async () => {
    const full = await archive();
    const drop = new Set([PAX_NAME, './exact', GNU_NAME, './g-link']);
    const want = await archive(drop);
    for (let at = 0; at <= full.length; at++) {
      const { out, f } = await run([full.subarray(0, at), full.subarray(at)], drop);
      if (!out.equals(want)) expect.fail(`split at byte ${at}: ${f.seen.length} entries seen`);
    }
    expect((await run(chunks(full, 1), drop)).out.equals(want)).toBe(true);
  }, 60_000);

  it('stops at the end marker: what follows passes untouched and is never read as entries', async () => {
    const tail = Buffer.alloc(4096);
    // after the marker: something shaped like a header (a leftover of a reused buffer)
    tail.write('ghost', 1024);
    tail[1024 + 156] = '0'.charCodeAt(0);
    const whole = Buffer.concat([await packTar([{ name: 'a', mtime: T, data: 'a' }]), tail]);
    for (const size of [1, 511, 512, 513, 1 << 20]) {
      const { out, f } = await run(chunks(whole, size), new Set(['a']));
      expect(f.seen.map((e) => e.name)).toEqual(['a']);
      expect(out.equals(whole.subarray(512 + 512)), String(size)).toBe(true); // all but 'a' and its data
    }
  });

  it('passes a global PAX header (not an entry), and an archive cut short as it is', async () => {
    const dir = path.join(root, 'g');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'a'), 'x');
    const r = spawnSync('tar', ['-cf', '-', '--format=posix', '--pax-option=comment=hello', '-C', dir, 'a']);
    const whole = r.stdout;
    expect(whole.toString('latin1', 156, 157)).toBe('g');
    const { out, f } = await run(chunks(whole, 300), new Set(['a']));
    expect(f.seen.map((e) => e.name)).toEqual(['a']);
    // the global header and its record pass; a's PAX header and record, header and data do not
    expect(out.equals(Buffer.concat([whole.subarray(0, 1024), whole.subarray(1024 + 4 * 512)]))).toBe(true);

    // cut inside a's PAX header: nothing decided, everything passes
    const cut = whole.subarray(0, 1024 + 700);
    const short = await run(chunks(cut, 100), new Set(['a']));
    expect(short.out.equals(cut)).toBe(true);
    expect(short.f.seen).toEqual([]);
  });

  it('joins the prefix field only in a POSIX ustar header', async () => {
    const h = Buffer.from((await packTar([{ name: PREFIXED, mtime: T, data: '' }])).subarray(0, 512));
    expect(headerName(h)).toBe(PREFIXED);
    const short = h.toString('latin1', 0, 100).replace(/\0+$/, '');
    expect(short.length).toBeLessThan(PREFIXED.length);
    h.write('ustar  \0', 257, 'latin1'); // GNU's old format: atime and ctime stand there
    expect(headerName(h)).toBe(short);
    h.fill(0, 257, 265); // v7: no magic, no prefix
    expect(headerName(h)).toBe(short);
  });
});
