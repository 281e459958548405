/**
 * TarEndTrim: GNU tar's archive (64 KiB records, as host-volume.ts has it written) passed up to its
 * end-of-archive marker and no further, byte for byte; anything it cannot follow passes whole.
 */
import { spawnSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  linkSync,
  writeFileSync,
  openSync,
  ftruncateSync,
  closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { TarEndTrim } from '../../src/util/tar-end.js';
import { hostTarArgs } from '../../src/data/host-volume.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-tarend-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Pass `archive` through TarEndTrim in chunks of `size` bytes. */
async function trim(archive: Buffer, size: number): Promise<{ out: Buffer; ended: boolean }> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < archive.length; i += size) chunks.push(archive.subarray(i, i + size));
  const t = new TarEndTrim();
  const out: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    Readable.from(chunks)
      .pipe(t)
      .on('data', (c: Buffer) => out.push(c))
      .on('end', resolve)
      .on('error', reject);
  });
  return { out: Buffer.concat(out), ended: t.ended };
}

/** A volume-like directory: long names (PAX headers), links, empty and block-sized files, and a last file of zeros. */
function tree(): string {
  const root = path.join(dir, 'v');
  mkdirSync(path.join(root, 'sub', 'x'.repeat(120)), { recursive: true });
  writeFileSync(path.join(root, 'a.txt'), 'hello\n');
  writeFileSync(path.join(root, 'empty'), '');
  writeFileSync(path.join(root, 'block'), Buffer.alloc(512, 7));
  writeFileSync(path.join(root, 'sub', 'x'.repeat(120), 'y'.repeat(150)), 'deep and long\n');
  linkSync(path.join(root, 'a.txt'), path.join(root, 'hard'));
  symlinkSync('a.txt', path.join(root, 'link'));
  writeFileSync(path.join(root, 'zzz-zeros'), Buffer.alloc(300_000)); // sorted last: zeros right before the marker
  // Sparse beyond 8 GiB: its size goes in a PAX `size` record (the octal field holds 8 GiB - 1).
  const fd = openSync(path.join(root, 'sub', 'big'), 'w');
  ftruncateSync(fd, 2 ** 33 + 4096);
  closeSync(fd);
  return root;
}

describe('TarEndTrim', () => {
  const root = tree();
  // The big sparse file would be 8 GiB of zeros through tar: the archive of everything but it here.
  const small = spawnSync('tar', [...hostTarArgs(root).slice(0, -1), '--exclude=./sub/big', '.'], {
    maxBuffer: 64 << 20,
  }).stdout;

  it('ends GNU tar`s archive right after its end-of-archive marker, whatever the chunks', async () => {
    expect(small.length % 65536).toBe(0); // tar filled its last 64 KiB record with zeros
    for (const size of [1, 100, 511, 512, 4096, 65536, small.length]) {
      const { out, ended } = await trim(small, size);
      expect(ended).toBe(true);
      expect(out.length).toBeLessThan(small.length);
      expect(out.equals(small.subarray(0, out.length))).toBe(true); // a prefix, nothing changed
      expect(small.subarray(out.length).every((b) => b === 0)).toBe(true); // only zeros left out
      expect(out.subarray(-1024).every((b) => b === 0)).toBe(true);
      // and tar reads the same entries from it
      const list = (b: Buffer) => spawnSync('tar', ['-tvf', '-', '--numeric-owner'], { input: b }).stdout.toString();
      expect(list(out)).toBe(list(small));
    }
  });

  it('the end is the marker, not the zeros of the last file: its content is all passed', async () => {
    const { out } = await trim(small, 65536);
    const listed = spawnSync('sh', ['-c', 'tar -xOf - ./zzz-zeros | wc -c'], { input: out }).stdout.toString().trim();
    expect(listed).toBe('300000');
  });

  it('follows a PAX size record (a file over 8 GiB) without reading the content', async () => {
    // Only the headers of the big file's entry, then a stand-in for its content would not do: the
    // whole archive is 8 GiB. Its PAX header and ustar header come from tar itself, the content is
    // streamed as zeros, and the trimmer must skip exactly the PAX size before the next header.
    const r = spawnSync(
      'sh',
      [
        '-c',
        // (without --sparse: the file is one hole, which a sparse entry would hold in a few blocks)
        `tar ${hostTarArgs(root)
          .filter((a) => a !== '--sparse')
          .slice(0, -1)
          .map((a) => `'${a}'`)
          .join(' ')} ./sub/big | head -c 4096`,
      ],
      { maxBuffer: 1 << 20 },
    );
    const head = r.stdout as Buffer;
    const pax = head.subarray(512, 1024).toString('latin1');
    expect(pax).toContain(`size=${2 ** 33 + 4096}`);
    // headers (PAX header + its content + the ustar header: 3 blocks), content, then an end marker and padding
    const content = 2 ** 33 + 4096;
    const t = new TarEndTrim();
    let passed = 0;
    t.on('data', (c: Buffer) => (passed += c.length));
    const zeros = Buffer.alloc(1 << 20);
    t.write(head.subarray(0, 1536));
    for (let left = content; left > 0; left -= zeros.length) t.write(zeros.subarray(0, Math.min(zeros.length, left)));
    expect(t.ended).toBe(false); // the content's zeros are not the marker
    t.write(Buffer.alloc(1024 + 60_000));
    t.end();
    await new Promise((r) => t.on('end', r));
    expect(t.ended).toBe(true);
    expect(passed).toBe(1536 + content + 1024);
  }, 60_000);

  it('passes what it cannot follow untouched', async () => {
    const bad = Buffer.from(small);
    bad[3] ^= 0xff; // a byte of the first header's name: its checksum no longer holds
    const broken = Buffer.concat([Buffer.alloc(512, 1), small]); // not a tar header at all
    for (const b of [bad, broken]) {
      const { out, ended } = await trim(b, 4096);
      expect(ended).toBe(false);
      expect(out.equals(b)).toBe(true);
    }
    // and an archive without an end marker passes whole
    const { out, ended } = await trim(small.subarray(0, 2048), 100);
    expect(ended).toBe(false);
    expect(out.equals(small.subarray(0, 2048))).toBe(true);
  });
});
