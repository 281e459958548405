/**
 * Fuzz the manifest parser and the bundle reader with random and mutated input: whatever the
 * bytes, the outcome is a clean typed error (FerryError) or a successful read, never a crash, a
 * hang or another exception type. Seeded, so a failure is reproducible.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BundleReader } from '../../src/bundle/reader.js';
import { BundleWriter } from '../../src/bundle/writer.js';
import { parseManifest } from '../../src/bundle/manifest.js';
import { FerryError } from '../../src/errors.js';
import { IMAGE_MEMBER, makeManifest, MemorySink, VOLUME_MEMBER } from './bundle-fixtures.js';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x100000000;
  };
}

async function validBundle(seekable: boolean): Promise<Buffer> {
  const sink = new MemorySink(seekable);
  const w = new BundleWriter(sink, makeManifest());
  await w.begin();
  await w.addMember(VOLUME_MEMBER, Readable.from([Buffer.alloc(3000, 7)]), 'none');
  await w.addMember(IMAGE_MEMBER, Readable.from([Buffer.from('not really an image')]), 'gzip');
  await w.finish();
  return sink.data;
}

/** Read a bundle fully; resolve 'ok' or the error it failed with. */
async function readAll(buf: Buffer): Promise<'ok' | unknown> {
  try {
    const r = await BundleReader.open(Readable.from([buf]), 'fuzz');
    for await (const m of r.members()) {
      for await (const _ of m.stream) void _;
    }
    return 'ok';
  } catch (err) {
    return err;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`hung for ${ms} ms`)), ms))]);
}

describe('fuzz: bundle reader', () => {
  it('random bytes never crash it', async () => {
    const r = rng(42);
    for (let i = 0; i < 200; i++) {
      const len = Math.floor(r() * 4096);
      const buf = Buffer.alloc(len);
      for (let j = 0; j < len; j++) buf[j] = Math.floor(r() * 256);
      const out = await withTimeout(readAll(buf), 5000);
      expect(out === 'ok' || out instanceof FerryError, `case ${i}: ${String(out)}`).toBe(true);
    }
  });

  for (const seekable of [true, false]) {
    it(`mutated valid bundles (${seekable ? 'seekable' : 'streamed'}) fail cleanly or read whole`, async () => {
      const good = await validBundle(seekable);
      expect(await readAll(good)).toBe('ok');
      const r = rng(seekable ? 7 : 11);
      let failures = 0;
      for (let i = 0; i < 300; i++) {
        const buf = Buffer.from(good);
        const kind = Math.floor(r() * 4);
        if (kind === 0) {
          for (let k = 0; k < 1 + Math.floor(r() * 8); k++) buf[Math.floor(r() * buf.length)] = Math.floor(r() * 256);
        } else if (kind === 1) {
          buf[Math.floor(r() * buf.length)] ^= 1 << Math.floor(r() * 8);
        } else if (kind === 2) {
          const cut = Math.floor(r() * buf.length);
          const out = await withTimeout(readAll(buf.subarray(0, cut)), 5000);
          expect(out === 'ok' || out instanceof FerryError, `truncate at ${cut}: ${String(out)}`).toBe(true);
          if (out !== 'ok') failures++;
          continue;
        } else {
          // splice a block from elsewhere over a header-sized region
          const from = Math.floor(r() * (buf.length - 512));
          const to = Math.floor(r() * (buf.length - 512));
          Buffer.from(good.subarray(from, from + 512)).copy(buf, to);
        }
        const out = await withTimeout(readAll(buf), 5000);
        expect(
          out === 'ok' || out instanceof FerryError,
          `case ${i} (kind ${kind}): ${String(out)} ${(out as Error)?.stack ?? ''}`,
        ).toBe(true);
        if (out !== 'ok') failures++;
      }
      expect(failures).toBeGreaterThan(200); // most mutations must be caught, not silently accepted
    });
  }
});

describe('fuzz: manifest parser', () => {
  it('mutated manifests either parse or throw a FerryError', () => {
    const text = JSON.stringify(makeManifest());
    const r = rng(99);
    for (let i = 0; i < 2000; i++) {
      const chars = text.split('');
      for (let k = 0; k < 1 + Math.floor(r() * 5); k++)
        chars[Math.floor(r() * chars.length)] = String.fromCharCode(32 + Math.floor(r() * 95));
      try {
        parseManifest(chars.join(''));
      } catch (err) {
        expect(err, `case ${i}`).toBeInstanceOf(FerryError);
      }
    }
  });

  it('structurally hostile JSON values throw a FerryError', () => {
    const base = makeManifest() as unknown as Record<string, unknown>;
    const values = [null, 0, -1, 1e308, '', 'x'.repeat(10_000), [], {}, [null], [{}], { __proto__: null }, true];
    for (const key of Object.keys(base)) {
      for (const v of values) {
        try {
          parseManifest(JSON.stringify({ ...base, [key]: v }));
        } catch (err) {
          expect(err, `${key}=${JSON.stringify(v)?.slice(0, 20)}`).toBeInstanceOf(FerryError);
        }
      }
    }
  });
});
