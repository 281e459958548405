import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { BundleWriter, PART_SIZE, partName } from '../../src/bundle/writer.js';
import { SizeLimit } from '../../src/bundle/limit.js';
import type { Manifest } from '../../src/bundle/manifest.js';
import { BundleReader } from '../../src/bundle/reader.js';
import { BundleError } from '../../src/errors.js';
import { verifyStream } from '../../src/bundle/check.js';
import { silentProgress } from '../../src/context.js';
import { bundleError, IMAGE_MEMBER, makeManifest, MemorySink, VOLUME_MEMBER } from './bundle-fixtures.js';
import { collect, packTar, tarEntries } from '../helpers/tar.js';

/** A tar of just these names and contents (the rest of each header: tar-stream's defaults). */
const repack = (entries: { name: string; data: Buffer }[]) =>
  packTar(entries.map(({ name, data }) => ({ name, data })));

async function write(seekable: boolean, volume: Buffer, image: Buffer): Promise<Buffer> {
  const sink = new MemorySink(seekable);
  const w = new BundleWriter(
    sink,
    makeManifest([
      { name: VOLUME_MEMBER, kind: 'volume', codec: 'gzip' },
      { name: IMAGE_MEMBER, kind: 'image', codec: 'gzip' },
    ]),
  );
  await w.begin();
  await w.addMember(VOLUME_MEMBER, Readable.from([volume]), 'gzip');
  await w.addMember(IMAGE_MEMBER, Readable.from([image]), 'gzip');
  await w.finish();
  return sink.data;
}

/** Read every member decoded; resolves with the members or rejects with the reader's error. */
async function decodeAll(buf: Buffer): Promise<Record<string, Buffer>> {
  const reader = await BundleReader.open(Readable.from([buf]), 'mem');
  const out: Record<string, Buffer> = {};
  for await (const m of reader.members({ decode: true })) {
    try {
      out[m.plan.name] = await collect(m.stream);
    } catch (err) {
      throw reader.failure ?? err;
    }
  }
  return out;
}

// Compressible, and larger than two parts.
const VOLUME = Buffer.concat([Buffer.alloc(2 * PART_SIZE, 'ferry volume data '), randomBytes(1000)]);
const IMAGE = Buffer.alloc(70_000, 'image ');

describe('every member declares its size before its data', () => {
  it('a file bundle: the manifest, patched in place, declares each raw size; decoding gives the data back', async () => {
    const buf = await write(true, VOLUME, IMAGE);
    const reader = await BundleReader.open(Readable.from([buf]), 'mem');
    expect(reader.manifest.members.map((m) => m.rawBytes)).toEqual([VOLUME.length, IMAGE.length]);
    expect(reader.manifest.partRawBytes).toBeUndefined();
    reader.close();
    const got = await decodeAll(buf);
    expect(got[VOLUME_MEMBER]!.equals(VOLUME)).toBe(true);
    expect(got[IMAGE_MEMBER]!.equals(IMAGE)).toBe(true);
  });

  it('a stream bundle: parts are frames of their own, each holding partRawBytes (the last the rest)', async () => {
    const buf = await write(false, VOLUME, IMAGE);
    const entries = await tarEntries(buf);
    const man = JSON.parse(entries[0]!.data.toString()) as Manifest;
    expect(man.partRawBytes).toBe(PART_SIZE);
    const parts = entries.filter((e) => e.name.startsWith(VOLUME_MEMBER));
    expect(parts.map((e) => e.name)).toEqual([0, 1, 2].map((i) => partName(VOLUME_MEMBER, i)));
    expect(parts.map((e) => zlib.gunzipSync(e.data).length)).toEqual([PART_SIZE, PART_SIZE, 1000]);
    // Concatenated, the parts are one valid gzip stream (what `cat parts | gunzip` does).
    expect(zlib.gunzipSync(Buffer.concat(parts.map((e) => e.data))).equals(VOLUME)).toBe(true);
    const got = await decodeAll(buf);
    expect(got[VOLUME_MEMBER]!.equals(VOLUME)).toBe(true);
    expect(got[IMAGE_MEMBER]!.equals(IMAGE)).toBe(true);
  });
});

describe('decompression bombs are stopped at the declared size', () => {
  it('a file bundle member that inflates past the rawBytes its manifest declares', async () => {
    const entries = await tarEntries(await write(true, VOLUME, IMAGE));
    const man = JSON.parse(entries[0]!.data.toString()) as Manifest;
    man.members[0]!.rawBytes = 1000;
    entries[0]!.data = Buffer.from(JSON.stringify(man));
    const e = await bundleError(async () => decodeAll(await repack(entries)));
    expect(e.message).toMatch(new RegExp(`member ${VOLUME_MEMBER} inflates past its declared size \\(1000 bytes\\)`));
  });

  it('a stream bundle part that inflates past partRawBytes (a bomb in the middle of a member)', async () => {
    const entries = await tarEntries(await write(false, VOLUME, IMAGE));
    const i = entries.findIndex((e) => e.name === partName(VOLUME_MEMBER, 1));
    entries[i]!.data = zlib.gzipSync(Buffer.alloc(PART_SIZE * 4));
    const e = await bundleError(async () => decodeAll(await repack(entries)));
    expect(e.message).toContain(
      `member ${VOLUME_MEMBER} (part 1) inflates past its declared size (${PART_SIZE} bytes)`,
    );
  });

  it('a stream bundle member in one entry that inflates past partRawBytes', async () => {
    const entries = await tarEntries(await write(false, VOLUME, IMAGE));
    const i = entries.findIndex((e) => e.name === IMAGE_MEMBER);
    entries[i]!.data = zlib.gzipSync(Buffer.alloc(PART_SIZE + 1));
    const e = await bundleError(async () => decodeAll(await repack(entries)));
    expect(e.message).toContain(`member ${IMAGE_MEMBER} inflates past its declared size (${PART_SIZE} bytes)`);
  });

  it('a stream bundle part that is not a frame of its own is refused as damaged', async () => {
    const entries = await tarEntries(await write(false, VOLUME, IMAGE));
    const i = entries.findIndex((e) => e.name === partName(VOLUME_MEMBER, 1));
    entries[i]!.data = entries[i]!.data.subarray(0, entries[i]!.data.length - 100);
    const e = await bundleError(async () => decodeAll(await repack(entries)));
    expect(e.message).toMatch(new RegExp(`member ${VOLUME_MEMBER} \\(part 1\\) is damaged: it does not decompress`));
  });
});

describe('SizeLimit', () => {
  it('passes data up to the declared size and stops a member that inflates past it', async () => {
    const chunks: Buffer[] = [];
    await pipeline(Readable.from([Buffer.alloc(600), Buffer.alloc(400)]), new SizeLimit(1000, 'm'), async (s) => {
      for await (const c of s) chunks.push(c as Buffer);
    });
    expect(Buffer.concat(chunks).length).toBe(1000);
    await expect(
      pipeline(
        Readable.from([Buffer.alloc(600), Buffer.alloc(401)]),
        new SizeLimit(1000, 'volumes/x.tar'),
        async (s) => {
          for await (const _ of s) void _;
        },
      ),
    ).rejects.toThrow(BundleError);
  });
});

describe('ferry verify holds a stream bundle to partRawBytes too', () => {
  /** A real tar (verify parses it) of one compressible file spanning three parts. */
  function volumeTar(): Promise<Buffer> {
    return packTar([{ name: 'big.txt', data: Buffer.alloc(2 * PART_SIZE, 'ferry volume data ') }]);
  }

  it('a bomb in the middle of a member is stopped as it inflates, not decompressed to its end', async () => {
    const vol = await volumeTar();
    const good = await verifyStream(Readable.from([await write(false, vol, IMAGE)]), 'mem', {
      progress: silentProgress,
      signal: new AbortController().signal,
    });
    expect(good.members.find((m) => m.name === VOLUME_MEMBER)).toMatchObject({ ok: true, problems: [] });

    const entries = await tarEntries(await write(false, vol, IMAGE));
    const i = entries.findIndex((e) => e.name === partName(VOLUME_MEMBER, 1));
    entries[i]!.data = zlib.gzipSync(Buffer.alloc(PART_SIZE * 16)); // 256 MiB of zeros
    const bad = await repack(entries);
    // The trailer still vouches for the bytes as stored: only the inflation gives the bomb away.
    const r = await verifyStream(Readable.from([bad]), 'mem', {
      progress: silentProgress,
      signal: new AbortController().signal,
    });
    const v = r.members.find((m) => m.name === VOLUME_MEMBER)!;
    expect(r.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(
      new RegExp(`member ${VOLUME_MEMBER} inflates past its declared size \\((\\d+) bytes\\); stopped`),
    );
    const inflated = Number(/\((\d+) bytes\)/.exec(v.problems.join('\n'))![1]);
    expect(inflated).toBeLessThanOrEqual(4 * PART_SIZE); // stopped within a part or two of the bomb
    // ... and the check went on to the next member (not "missing").
    expect(r.members.find((m) => m.name === IMAGE_MEMBER)!.problems.join('\n')).not.toMatch(/missing/);
  });
});
