import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import * as tar from 'tar-stream';
import { BLOCK, END_OF_ARCHIVE, encodeHeader, padding, type TarHeader } from '../../src/bundle/tar.js';
import { tarEntries } from '../helpers/tar.js';

/** Build an archive the way writer.ts does: header, data, padding, ..., end of archive. */
function archive(entries: { header: TarHeader; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) parts.push(encodeHeader(e.header), e.data, padding(e.data.length));
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

/** Feed a lone header to tar-stream and return the header it decodes (no data needed). */
function decodeWithExtract(header: Buffer): Promise<tar.Header> {
  return new Promise((resolve, reject) => {
    const extract = tar.extract();
    extract.on('entry', (h) => {
      resolve(h);
      extract.destroy();
    });
    extract.on('error', reject);
    extract.write(header);
  });
}

function checksumOk(h: Buffer): boolean {
  const copy = Buffer.from(h);
  copy.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of copy) sum += b;
  const stored = parseInt(h.subarray(148, 154).toString('ascii'), 8);
  return stored === sum && h[154] === 0 && h[155] === 0x20;
}

const field = (h: Buffer, off: number, len: number) => {
  const s = h.subarray(off, off + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? len : nul).toString('utf8');
};

describe('encodeHeader', () => {
  const mtime = new Date('2024-03-01T10:00:00Z');

  it('produces one 512-byte ustar block', () => {
    const h = encodeHeader({ name: 'manifest.json', size: 1234, mtime });
    expect(h.length).toBe(BLOCK);
    expect(field(h, 0, 100)).toBe('manifest.json');
    expect(h.subarray(257, 265).toString('latin1')).toBe('ustar\u000000');
    expect(field(h, 124, 12)).toBe('00000002322'); // 1234 in octal
    expect(field(h, 100, 8)).toBe('0000600');
    expect(field(h, 136, 12)).toBe((mtime.getTime() / 1000).toString(8).padStart(11, '0'));
    expect(String.fromCharCode(h[156]!)).toBe('0');
    expect(field(h, 265, 32)).toBe('root');
  });

  it('has a valid checksum (sum of all bytes with the checksum field as spaces)', () => {
    for (const hdr of [
      { name: 'a', size: 0 },
      { name: 'volumes/webdata.tar', size: 123456789, mtime },
      { name: 'd', size: 0, type: 'directory' as const },
      { name: 'huge', size: 9 * 2 ** 30 + 7 },
      { name: 'p/'.repeat(60) + 'file', size: 1 },
    ]) {
      const h = encodeHeader(hdr);
      expect(checksumOk(h), hdr.name).toBe(true);
      h[0] ^= 1;
      expect(checksumOk(h)).toBe(false);
    }
  });

  it('round-trips names, sizes, modes and contents through tar-stream', async () => {
    const one = Buffer.from('{"format":"ferry-bundle"}\n');
    const two = Buffer.alloc(BLOCK * 3, 0xab); // exact multiple of a block: no padding
    const three = Buffer.from('x'.repeat(1000));
    const empty = Buffer.alloc(0);
    const buf = archive([
      { header: { name: 'manifest.json', size: one.length, mtime }, data: one },
      { header: { name: 'volumes/webdata.tar', size: two.length, mtime, mode: 0o644 }, data: two },
      { header: { name: 'images/web.tar.gz', size: three.length, mtime }, data: three },
      { header: { name: 'volumes/empty.tar', size: 0, mtime }, data: empty },
    ]);
    expect(buf.length % BLOCK).toBe(0);
    const got = await tarEntries(buf);
    expect(got.map((e) => [e.name, e.size, e.type])).toEqual([
      ['manifest.json', one.length, 'file'],
      ['volumes/webdata.tar', two.length, 'file'],
      ['images/web.tar.gz', 1000, 'file'],
      ['volumes/empty.tar', 0, 'file'],
    ]);
    expect(got[0]!.data.equals(one)).toBe(true);
    expect(got[1]!.data.equals(two)).toBe(true);
    expect(got[2]!.data.equals(three)).toBe(true);
    expect(got[3]!.data.length).toBe(0);
    expect(got[0]!.mode).toBe(0o600);
    expect(got[1]!.mode).toBe(0o644);
    expect(got[0]!.mtime!.getTime()).toBe(mtime.getTime());
    expect(got[0]!.uname).toBe('root');
  });

  it('encodes a directory entry', async () => {
    const got = await tarEntries(
      archive([{ header: { name: 'images', size: 0, type: 'directory', mtime }, data: Buffer.alloc(0) }]),
    );
    expect(got.map((e) => [e.name, e.type, e.mode])).toEqual([['images', 'directory', 0o755]]);
  });

  it('keeps a name of exactly 100 bytes in the name field', async () => {
    const name = 'volumes/' + 'n'.repeat(92);
    expect(name.length).toBe(100);
    const h = encodeHeader({ name, size: 3, mtime });
    expect(h.subarray(0, 100).toString('utf8')).toBe(name);
    expect(h[345]).toBe(0);
    const got = await tarEntries(archive([{ header: { name, size: 3 }, data: Buffer.from('abc') }]));
    expect(got[0]!.name).toBe(name);
  });

  it('uses the ustar prefix field for a name longer than 100 bytes', async () => {
    const dir = 'volumes/' + 'd'.repeat(120);
    const base = 'webdata-' + 'x'.repeat(60) + '.tar.zst';
    const name = `${dir}/${base}`;
    expect(name.length).toBeGreaterThan(100);
    const h = encodeHeader({ name, size: 5, mtime });
    expect(field(h, 0, 100)).toBe(base);
    expect(field(h, 345, 155)).toBe(dir);
    const got = await tarEntries(archive([{ header: { name, size: 5, mtime }, data: Buffer.from('hello') }]));
    expect(got.map((e) => [e.name, e.size, e.data.toString()])).toEqual([[name, 5, 'hello']]);
  });

  it('refuses names that cannot be encoded', () => {
    expect(() => encodeHeader({ name: 'x'.repeat(101), size: 0 })).toThrow(/too long/);
    expect(() => encodeHeader({ name: 'a/' + 'x'.repeat(101), size: 0 })).toThrow(/too long/);
    expect(() => encodeHeader({ name: 'p'.repeat(160) + '/file', size: 0 })).toThrow(/too long/);
  });

  it('encodes 8 GiB - 1 in octal', async () => {
    const size = 0o77777777777;
    const h = encodeHeader({ name: 'images/big.tar', size, mtime });
    expect(field(h, 124, 12)).toBe('77777777777');
    expect((await decodeWithExtract(h)).size).toBe(size);
  });

  it('encodes a size over 8 GiB in GNU base-256', async () => {
    const size = 9 * 2 ** 30 + 12345; // 9 GiB + a bit
    const h = encodeHeader({ name: 'images/huge.tar', size, mtime });
    const f = h.subarray(124, 136);
    expect(f[0]).toBe(0x80);
    let v = 0n;
    for (let i = 1; i < 12; i++) v = (v << 8n) | BigInt(f[i]!);
    expect(v).toBe(BigInt(size));
    expect([...f]).toEqual([0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x40, 0x00, 0x30, 0x39]);
    // tar-stream reads the size back
    expect((await decodeWithExtract(h)).size).toBe(size);
    const headers = createRequire(import.meta.url)(
      createRequire(import.meta.url)
        .resolve('tar-stream')
        .replace(/index\.js$/, 'headers.js'),
    ) as {
      decode(buf: Buffer, enc: string, allowUnknown: boolean): { size: number; name: string } | null;
    };
    const decoded = headers.decode(h, 'utf-8', false)!;
    expect(decoded.name).toBe('images/huge.tar');
    expect(decoded.size).toBe(size);
  });

  it('encodes the largest safe integer size in base-256', async () => {
    const size = Number.MAX_SAFE_INTEGER;
    const h = encodeHeader({ name: 'x', size });
    expect((await decodeWithExtract(h)).size).toBe(size);
  });
});

describe('padding', () => {
  it('pads to the next block', () => {
    expect(padding(0).length).toBe(0);
    expect(padding(1).length).toBe(511);
    expect(padding(511).length).toBe(1);
    expect(padding(512).length).toBe(0);
    expect(padding(1025).length).toBe(511);
    expect(padding(9 * 2 ** 30 + 1).length).toBe(511);
    expect(padding(100).every((b) => b === 0)).toBe(true);
  });

  it('END_OF_ARCHIVE is two zero blocks', () => {
    expect(END_OF_ARCHIVE.length).toBe(1024);
    expect(END_OF_ARCHIVE.every((b) => b === 0)).toBe(true);
  });
});
