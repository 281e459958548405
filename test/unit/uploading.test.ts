/** An upload to the engine stops, with the source's error, when its source fails. */
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { uploading } from '../../src/engine/engine.js';

/** An upload that, like docker-modem's, waits for the end of `src` or for its abort signal. */
function fakeUpload(src: Readable) {
  return (signal: AbortSignal) =>
    new Promise<string>((resolve, reject) => {
      if (signal.aborted) reject(new Error('request aborted'));
      signal.addEventListener('abort', () => reject(new Error('request aborted')));
      src.on('data', () => {});
      src.on('end', () => resolve('uploaded'));
    });
}

describe('uploading', () => {
  it('resolves with the upload when the source ends', async () => {
    const src = Readable.from([Buffer.from('x')]);
    await expect(uploading(src, fakeUpload(src))).resolves.toBe('uploaded');
  });

  it('fails with the error of a source that had already failed, instead of waiting', async () => {
    const src = new PassThrough();
    src.on('error', () => {});
    src.destroy(new Error('a chunk does not authenticate'));
    await expect(uploading(src, fakeUpload(src))).rejects.toThrow('a chunk does not authenticate');
  });

  it('aborts the request and fails with the source error when the source fails mid-way', async () => {
    const src = new PassThrough();
    src.on('error', () => {});
    src.write('some bytes');
    setTimeout(() => src.destroy(new Error('member is damaged')), 20);
    await expect(uploading(src, fakeUpload(src))).rejects.toThrow('member is damaged');
  });

  it('stops the source when the engine fails first', async () => {
    const src = new PassThrough();
    await expect(uploading(src, () => Promise.reject(new Error('engine refused')))).rejects.toThrow('engine refused');
    expect(src.destroyed).toBe(true);
  });
});
