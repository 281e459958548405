import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { demux } from '../../src/engine/demux.js';

function frame(type: number, text: string): Buffer {
  const payload = Buffer.from(text);
  const h = Buffer.alloc(8);
  h[0] = type;
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

async function collect(chunks: Buffer[]): Promise<{ out: string; err: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (d) => (o += d));
  err.on('data', (d) => (e += d));
  await demux(Readable.from(chunks), out, err);
  return { out: o, err: e };
}

describe('demux (multiplexed exec/logs streams)', () => {
  it('splits stdout and stderr, whatever the chunking', async () => {
    const all = Buffer.concat([frame(1, 'hello '), frame(2, 'oops'), frame(1, 'world'), frame(1, '')]);
    for (const size of [1, 3, 8, 9, all.length]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < all.length; i += size) chunks.push(all.subarray(i, i + size));
      expect(await collect(chunks)).toEqual({ out: 'hello world', err: 'oops' });
    }
  });

  it('handles many tiny frames in one chunk without recursing', async () => {
    const many = Buffer.concat(Array.from({ length: 20_000 }, () => frame(1, 'x')));
    expect((await collect([many])).out).toHaveLength(20_000);
  });

  it('refuses a stream that is not multiplexed, and a truncated frame', async () => {
    await expect(collect([Buffer.from('HTTP/1.1 200 OK\r\n')])).rejects.toThrow(/not a multiplexed stream/);
    await expect(collect([frame(1, 'abcdef').subarray(0, 10)])).rejects.toThrow(/truncated/);
  });
});
