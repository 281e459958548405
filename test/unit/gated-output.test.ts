/**
 * gatedOutput: a process's output that ends only once the process has exited well; and, once the
 * consumer has gone, settles whatever stream the output goes through (a hang here left the
 * backup's final wait with nothing to wake it: node exited 13 instead of 130, 8 or 4).
 */
import { spawn } from 'node:child_process';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { gatedOutput } from '../../src/util/gated-output.js';

function yes() {
  const child = spawn('sh', ['-c', 'exec yes ferry'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, exit };
}

describe('gatedOutput', () => {
  it('abandoned by its consumer: the process is stopped and `settled` resolves, through a Transform too', async () => {
    for (const through of [false, true]) {
      const { child, exit } = yes();
      let source: NodeJS.ReadableStream & import('node:stream').Readable = child.stdout;
      if (through) {
        const t = new Transform({ highWaterMark: 1 << 16, transform: (c, _e, cb) => cb(null, c) });
        pipeline(child.stdout, t).catch(() => {});
        source = t;
      }
      let verdicts = 0;
      const { stream, settled } = gatedOutput(
        source,
        exit,
        () => (verdicts++, undefined),
        () => child.kill(),
      );
      await new Promise<void>((r) => stream.once('data', () => r()));
      stream.destroy(); // the consumer went away (a failure elsewhere)
      const timeout = new Promise((_, rej) => setTimeout(() => rej(new Error('settled never resolved')), 5000).unref());
      await Promise.race([settled, timeout]);
      expect(verdicts).toBe(1);
    }
  });

  it('ends only once the process exited well; a failing exit fails the stream', async () => {
    const ok = spawn('sh', ['-c', 'printf abc'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const okExit = new Promise<number | null>((r) => ok.on('exit', (c) => r(c)));
    const a = gatedOutput(
      ok.stdout,
      okExit,
      (c) => (c === 0 ? undefined : new Error('bad')),
      () => ok.kill(),
    );
    const got: Buffer[] = [];
    await pipeline(
      a.stream,
      new PassThrough().on('data', (c: Buffer) => got.push(c)),
    );
    expect(Buffer.concat(got).toString()).toBe('abc');
    const bad = spawn('sh', ['-c', 'printf ab; exit 3'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const badExit = new Promise<number | null>((r) => bad.on('exit', (c) => r(c)));
    const b = gatedOutput(
      bad.stdout,
      badExit,
      (c) => (c === 0 ? undefined : new Error(`exit ${c}`)),
      () => bad.kill(),
    );
    await expect(pipeline(b.stream, new PassThrough().resume())).rejects.toThrow('exit 3');
  });
});
