import { describe, expect, it } from 'vitest';
import { PassThrough, Readable } from 'node:stream';
import { counted } from '../../src/util/counted.js';
import { collect } from '../helpers/tar.js';

describe('counted', () => {
  it('passes the bytes through and counts them', async () => {
    const seen: number[] = [];
    const out = await collect(counted(Readable.from([Buffer.from('abc'), Buffer.from('de')]), (n) => seen.push(n)));
    expect(out.toString()).toBe('abcde');
    expect(seen.at(-1)).toBe(5);
  });

  it('fails when its source fails', async () => {
    const src = new PassThrough();
    const c = counted(src, () => {});
    src.write('x');
    src.destroy(new Error('member damaged'));
    await expect(collect(c)).rejects.toThrow('member damaged');
  });

  it('fails, and does not wait for more, when its source is closed before its end (a bundle cut short)', async () => {
    const src = new PassThrough();
    const c = counted(src, () => {});
    src.write('x');
    setImmediate(() => src.destroy()); // closed without an error, and without an end
    await expect(collect(c)).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('destroys its source when its reader goes away', async () => {
    const src = new PassThrough();
    const c = counted(src, () => {});
    c.destroy();
    await new Promise((r) => setImmediate(r));
    expect(src.destroyed).toBe(true);
  });

  it('keeps an error that comes before its reader attaches, for the reader (the process lives on)', async () => {
    const src = new PassThrough();
    const c = counted(src, () => {});
    src.destroy(new Error('bad member'));
    await new Promise((r) => setImmediate(r));
    await expect(collect(c)).rejects.toThrow('bad member');
  });
});
