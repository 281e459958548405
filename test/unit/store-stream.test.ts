/** The stream store (`-`: stdout/stdin) passes the store conformance suite, as far as a pipe can. */
import { Readable, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { openStore } from '../../src/store/registry.js';
import { StreamStore } from '../../src/store/stream.js';
import { describeStoreConformance, writeBundle } from './store-conformance.js';

/** A stream store whose stdout is kept, and whose stdin gives back what was written to it. */
function piped(): StreamStore {
  const written: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _e, cb) {
      written.push(Buffer.from(chunk));
      cb();
    },
  });
  const inp = new Readable({
    read() {
      this.push(Buffer.concat(written));
      this.push(null);
    },
  });
  return new StreamStore(out, inp);
}

describeStoreConformance('stream', async () => ({ store: piped() }), {
  capabilities: {
    seekable: false,
    rangeReads: false,
    rereadable: false,
    rewindable: false,
    lockable: false,
    listable: false,
    atomicCommit: false,
    durableCommit: false,
  },
});

describe('stream store', () => {
  it('the registry opens - as the stream store', () => {
    const s = openStore('-');
    expect(s).toBeInstanceOf(StreamStore);
    expect(s.describe()).toBe('-');
  });

  it('refuses to write to a terminal or read from one', async () => {
    const tty = Object.assign(new Writable({ write: (_c, _e, cb) => cb() }), { isTTY: true });
    const ttyIn = Object.assign(Readable.from([]), { isTTY: true });
    const s = new StreamStore(tty, ttyIn);
    await expect(s.create('a.tar')).rejects.toThrow(/refusing to write a bundle to a terminal/);
    await expect(s.open('a.tar')).rejects.toThrow(/stdin is a terminal/);
  });

  it('a closed stdout fails the write, not silently', async () => {
    const out = new Writable({ write: (_c, _e, cb) => cb() });
    const s = new StreamStore(out, Readable.from([]));
    const sink = await s.create('a.tar');
    out.destroy();
    await expect(writeBundle(sink, Buffer.alloc(10))).rejects.toBeInstanceOf(Error);
    await expect(s.list()).rejects.toBeInstanceOf(UsageError);
  });
});
