import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { StreamReportedError, followJson, type ProgressMessage } from '../../src/engine/progress.js';

const chunks = (...parts: (string | Buffer)[]) =>
  Readable.from(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));

async function rejection(p: Promise<unknown>): Promise<StreamReportedError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(StreamReportedError);
  return caught as StreamReportedError;
}

describe('followJson', () => {
  it('resolves with every message of a good stream, in order', async () => {
    const seen: ProgressMessage[] = [];
    const all = await followJson(
      chunks(
        '{"status":"Pulling from library/alpine","id":"3.19"}\n',
        '{"status":"Downloading","progressDetail":{"current":1024,"total":4096},"id":"abc123"}\n',
        '{"status":"Digest: sha256:deadbeef"}\r\n\n',
        '{"status":"Status: Downloaded newer image for alpine:3.19"}',
      ),
      (m) => seen.push(m),
    );
    expect(all).toEqual([
      { status: 'Pulling from library/alpine', id: '3.19' },
      { status: 'Downloading', progressDetail: { current: 1024, total: 4096 }, id: 'abc123' },
      { status: 'Digest: sha256:deadbeef' },
      { status: 'Status: Downloaded newer image for alpine:3.19' },
    ]);
    expect(seen).toEqual(all);
  });

  it('resolves with nothing on an empty stream', async () => {
    expect(await followJson(chunks())).toEqual([]);
    expect(await followJson(chunks('\n\n  \n'))).toEqual([]);
  });

  it('rejects on an in-band error line even though the HTTP status was 200', async () => {
    const seen: ProgressMessage[] = [];
    const err = await rejection(
      followJson(
        chunks(
          '{"stream":"Loaded image: x\\n"}\n',
          '{"errorDetail":{"message":"x"},"error":"x"}\n',
          '{"status":"after"}\n',
        ),
        (m) => seen.push(m),
      ),
    );
    expect(err.message).toBe('x');
    expect(err.messages).toEqual([
      { stream: 'Loaded image: x\n' },
      { errorDetail: { message: 'x' }, error: 'x' },
      { status: 'after' },
    ]);
    expect(seen.length).toBe(3); // the stream is consumed to its end
  });

  it('prefers errorDetail.message, falls back to error', async () => {
    expect(
      (await rejection(followJson(chunks('{"errorDetail":{"message":"detail"},"error":"short"}\n')))).message,
    ).toBe('detail');
    expect((await rejection(followJson(chunks('{"error":"only error"}\n')))).message).toBe('only error');
    expect((await rejection(followJson(chunks('{"errorDetail":{}}\n')))).message).toBe('unknown error');
  });

  it('reports the first error when there are several', async () => {
    const err = await rejection(followJson(chunks('{"error":"first"}\n{"error":"second"}\n')));
    expect(err.message).toBe('first');
  });

  it('rejects on an "Error ..." stream line', async () => {
    const err = await rejection(
      followJson(chunks('{"stream":"Error processing tar file(exit status 1): no space left on device\\n"}\n')),
    );
    expect(err.message).toBe('Error processing tar file(exit status 1): no space left on device');
  });

  it('handles lines split across chunks', async () => {
    const all = await followJson(chunks('{"sta', 'tus":"one"}\n{"status"', ':"two"}', '\n', '{"status":"thr', 'ee"}'));
    expect(all).toEqual([{ status: 'one' }, { status: 'two' }, { status: 'three' }]);
  });

  it('handles an error line split across chunks', async () => {
    const err = await rejection(
      followJson(
        chunks('{"status":"ok"}\n{"errorDe', 'tail":{"message":"manifest unknown"},"err', 'or":"manifest unknown"}\n'),
      ),
    );
    expect(err.message).toBe('manifest unknown');
  });

  it('handles multi-byte UTF-8 split across chunks', async () => {
    const line = Buffer.from('{"status":"Téléchargement ✓ 🐳"}\n');
    const check = line.indexOf(Buffer.from('✓'));
    const whale = line.indexOf(Buffer.from('🐳'));
    // split inside the 2-byte é, the 3-byte ✓ and the 4-byte 🐳
    const e = line.indexOf(Buffer.from('é'));
    const all = await followJson(
      chunks(
        line.subarray(0, e + 1),
        line.subarray(e + 1, check + 2),
        line.subarray(check + 2, whale + 1),
        line.subarray(whale + 1, whale + 3),
        line.subarray(whale + 3),
      ),
    );
    expect(all).toEqual([{ status: 'Téléchargement ✓ 🐳' }]);
  });

  it('turns a non-JSON line into {stream}', async () => {
    const all = await followJson(chunks('plain text output\n{"status":"json"}\n  indented  \n'));
    expect(all).toEqual([{ stream: 'plain text output' }, { status: 'json' }, { stream: 'indented' }]);
  });

  it('rejects when the stream itself fails', async () => {
    const src = new Readable({ read() {} });
    src.push('{"status":"Downloading"}\n');
    setTimeout(() => src.destroy(new Error('socket hang up')), 10);
    await expect(followJson(src)).rejects.toThrow('socket hang up');
  });
});
