import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { EscapingLinks, escapeDepth, escapingLinksTar } from '../../src/data/tar-links.js';
import { packTar, tarEntries, type TarEntry } from '../helpers/tar.js';

const T = new Date('2020-01-02T03:04:05Z');

/** A tar of these entries, each dated T and owned by root unless it says otherwise. */
const archive = (entries: TarEntry[]) => packTar(entries.map((e) => ({ mtime: T, uid: 0, gid: 0, ...e })));

async function filter(buf: Buffer, chunk = 100): Promise<{ out: Buffer; f: EscapingLinks }> {
  const f = new EscapingLinks();
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunk) parts.push(buf.subarray(i, i + chunk));
  const out = await buffer(Readable.from(parts).pipe(f));
  return { out, f };
}

describe('escapeDepth', () => {
  it('counts the levels a relative target reaches above the root', () => {
    expect(escapeDepth('./d/up', '../../../etc/passwd')).toBe(2);
    expect(escapeDepth('top', '../outside')).toBe(1);
    expect(escapeDepth('./d/in', '../f')).toBe(0);
    expect(escapeDepth('./d/in', 'x/../../f')).toBe(0);
    expect(escapeDepth('abs', '/etc/passwd')).toBe(0);
    expect(escapeDepth('./a/b/c', '../../../../x')).toBe(2);
  });
});

describe('EscapingLinks', () => {
  it('passes an archive without such links through byte for byte', async () => {
    const buf = await archive([
      { name: './', type: 'directory', mode: 0o755 },
      { name: './f', data: 'x'.repeat(1000), mode: 0o644 },
      { name: './d/', type: 'directory', mode: 0o700 },
      { name: './d/in', type: 'symlink', linkname: '../f' },
      { name: './abs', type: 'symlink', linkname: '/etc/passwd' },
      { name: `./${'long/'.repeat(40)}x`, data: 'long', mode: 0o600 },
    ]);
    for (const chunk of [1, 100, 512, 1 << 20]) {
      const { out, f } = await filter(buf, chunk);
      expect(out.equals(buf)).toBe(true);
      expect(f.held).toEqual([]);
    }
  });

  it('holds back links above the root (and hard links to them), with their parent directories', async () => {
    const buf = await archive([
      { name: './', type: 'directory', mode: 0o755 },
      { name: './d/', type: 'directory', mode: 0o750, uid: 7 },
      { name: './d/up', type: 'symlink', linkname: '../../../etc/passwd', uid: 5 },
      { name: './d/f', data: 'data', mode: 0o644 },
      { name: './d/hard', type: 'link', linkname: './d/up' },
      { name: './top', type: 'symlink', linkname: '../outside' },
      { name: './z', data: 'end' },
    ]);
    const { out, f } = await filter(buf, 7);
    expect((await tarEntries(out)).map((h) => h.name)).toEqual(['./', './d/', './d/f', './z']);
    expect(f.depth).toBe(2);
    expect(f.held.map((e) => [e.type, e.name, e.linkname])).toEqual([
      ['symlink', 'd/up', '../../../etc/passwd'],
      ['directory', 'd', undefined],
      ['link', 'd/hard', './d/up'],
      ['symlink', 'top', '../outside'],
    ]);
    expect(f.held[0]).toMatchObject({ uid: 5, mtime: T });
    expect(f.held[1]).toMatchObject({ mode: 0o750, uid: 7 });

    const again = await tarEntries(await buffer(escapingLinksTar(f.held, 'u/u/u/v') as unknown as Readable));
    expect(again.map((h) => [h.type, h.name, h.linkname ?? null])).toEqual([
      ['symlink', 'u/u/u/v/d/up', '../../../etc/passwd'],
      ['link', 'u/u/u/v/d/hard', 'u/u/u/v/d/up'],
      ['symlink', 'u/u/u/v/top', '../outside'],
      ['directory', 'u/u/u/v/d/', null],
    ]);
  });

  it('follows a PAX size record (a file over 8 GiB) to the entries after it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-links-'));
    try {
      const fd = openSync(path.join(dir, 'big'), 'w');
      ftruncateSync(fd, 2 ** 33 + 4096);
      closeSync(fd);
      // tar's own PAX header + ustar header for the big file (its content streamed as zeros below)
      const head = spawnSync('sh', ['-c', `tar --format=posix -C '${dir}' -cf - ./big | head -c 1536`])
        .stdout as Buffer;
      expect(head.subarray(512, 1024).toString('latin1')).toContain(`size=${2 ** 33 + 4096}`);
      const after = await archive([{ name: './up', type: 'symlink', linkname: '../x' }]);
      const f = new EscapingLinks();
      let passed = 0;
      f.on('data', (c: Buffer) => (passed += c.length));
      const ended = new Promise((r) => f.on('end', r));
      f.write(head);
      const zeros = Buffer.alloc(1 << 20);
      for (let left = 2 ** 33 + 4096; left > 0; left -= zeros.length)
        if (!f.write(zeros.subarray(0, Math.min(zeros.length, left)))) await new Promise((r) => f.once('drain', r));
      f.end(after);
      await ended;
      expect(f.held.map((e) => e.name)).toEqual(['up']);
      expect(passed).toBe(1536 + 2 ** 33 + 4096 + (after.length - 512)); // all but the link's header
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
