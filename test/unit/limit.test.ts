import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { BundleWriter } from '../../src/bundle/writer.js';
import { findTrailer, SizeLimit } from '../../src/bundle/limit.js';
import { BundleError } from '../../src/errors.js';
import { IMAGE_MEMBER, makeManifest, MemorySink, VOLUME_MEMBER } from './bundle-fixtures.js';

describe('findTrailer', () => {
  it('finds the trailer in the last bytes of a bundle, with each member\'s declared raw size', async () => {
    const sink = new MemorySink(true);
    const w = new BundleWriter(sink, makeManifest());
    await w.begin();
    await w.addMember(VOLUME_MEMBER, Readable.from([Buffer.alloc(100_000, 1)]), 'none');
    await w.addMember(IMAGE_MEMBER, Readable.from([Buffer.alloc(70_000, 2)]), 'gzip');
    await w.finish();
    const tail = sink.data.subarray(sink.data.length - 8192);
    const t = findTrailer(tail);
    expect(t?.members.map((m) => [m.name, m.rawBytes])).toEqual([
      [VOLUME_MEMBER, 100_000],
      [IMAGE_MEMBER, 70_000],
    ]);
    expect(findTrailer(Buffer.alloc(8192))).toBeUndefined();
    expect(findTrailer(sink.data.subarray(0, 4096))).toBeUndefined();
  });
});

describe('SizeLimit', () => {
  it('passes data up to the declared size and stops a member that inflates past it', async () => {
    const chunks: Buffer[] = [];
    await pipeline(Readable.from([Buffer.alloc(600), Buffer.alloc(400)]), new SizeLimit(1000, 'm'), async (s) => {
      for await (const c of s) chunks.push(c as Buffer);
    });
    expect(Buffer.concat(chunks).length).toBe(1000);
    await expect(pipeline(Readable.from([Buffer.alloc(600), Buffer.alloc(401)]), new SizeLimit(1000, 'volumes/x.tar'), async (s) => {
      for await (const _ of s) void _;
    })).rejects.toThrow(BundleError);
  });
});
