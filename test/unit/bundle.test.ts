import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  MANIFEST_MEMBER,
  SUMS_MEMBER,
  TRAILER_MEMBER,
  sha256sums,
  type Manifest,
  type Trailer,
} from '../../src/bundle/manifest.js';
import { SymlinkGuard } from '../../src/bundle/check.js';
import { BundleReader } from '../../src/bundle/reader.js';
import { BLOCK } from '../../src/bundle/tar.js';
import { BundleWriter, PART_SIZE, partName } from '../../src/bundle/writer.js';
import { BundleError } from '../../src/errors.js';
import { LocalTransport } from '../../src/store/local.js';
import { IMAGE_MEMBER, VOLUME_MEMBER, bundleError, makeManifest, MemorySink } from './bundle-fixtures.js';
import { collect, packTar, tarEntries, type TarEntry } from '../helpers/tar.js';

// ---------------------------------------------------------------------------------------------
// In-memory sinks
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Cut a buffer into chunks of an awkward size so members do not line up with PART_SIZE. */
function chunked(b: Buffer, size = 1_000_003): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) chunks.push(b.subarray(i, i + size));
  return Readable.from(chunks);
}

interface Written {
  bundle: Buffer;
  trailer: Trailer;
  sink: MemorySink;
  manifest: Manifest;
}

async function writeBundle(seekable: boolean, volume: Buffer, image: Buffer): Promise<Written> {
  const manifest = makeManifest();
  const sink = new MemorySink(seekable);
  const w = new BundleWriter(sink, manifest);
  expect(w.location).toBe('mem://bundle');
  await w.begin();
  const vm = await w.addMember(VOLUME_MEMBER, chunked(volume), 'none');
  expect(vm.rawBytes).toBe(volume.length);
  const im = await w.addMember(IMAGE_MEMBER, chunked(image, 65_537), 'gzip');
  expect(im.rawBytes).toBe(image.length);
  w.recordImage({
    ref: 'ferry/web:backup-20240301',
    id: 'sha256:' + 'ab'.repeat(32),
    layers: ['sha256:' + 'cd'.repeat(32)],
  });
  expect(sink.committed).toBe(false);
  const trailer = await w.finish();
  expect(sink.committed).toBe(true);
  return { bundle: sink.data, trailer, sink, manifest };
}

interface RawEntry {
  name: string;
  type: TarEntry['type'];
  size: number;
  data: Buffer;
  linkname?: string | null;
}

async function listEntries(buf: Buffer): Promise<RawEntry[]> {
  return (await tarEntries(buf)).map((e) => ({
    name: e.name,
    type: e.type,
    size: e.size ?? 0,
    data: e.data,
    linkname: e.linkname,
  }));
}

/** Repack entries with tar-stream (to craft damaged bundles). */
function pack(entries: RawEntry[]): Promise<Buffer> {
  return packTar(
    entries.map((e): TarEntry => {
      if (e.type === 'symlink') return { name: e.name, type: 'symlink', linkname: e.linkname ?? '/etc/passwd' };
      if (e.type === 'directory') return { name: e.name, type: 'directory' };
      return { name: e.name, data: e.data };
    }),
  );
}

interface ReadBack {
  reader: BundleReader;
  members: Record<string, Buffer>;
  order: string[];
}

async function readBundle(buf: Buffer, location = 'mem'): Promise<ReadBack> {
  const reader = await BundleReader.open(Readable.from(buf), location);
  const members: Record<string, Buffer> = {};
  const order: string[] = [];
  for await (const m of reader.members()) {
    members[m.plan.name] = await collect(m.stream);
    order.push(m.plan.name);
  }
  return { reader, members, order };
}

function withRawSizes(m: Manifest, sizes: number[]): Manifest {
  return { ...m, members: m.members.map((x, i) => ({ ...x, rawBytes: sizes[i]! })) };
}

/** Read every member decoded (members({ decode: true })). */
async function readDecoded(buf: Buffer): Promise<Record<string, Buffer>> {
  const reader = await BundleReader.open(Readable.from(buf), 'mem');
  const out: Record<string, Buffer> = {};
  for await (const m of reader.members({ decode: true })) out[m.plan.name] = await collect(m.stream);
  expect(reader.trailer.members.length).toBe(2);
  return out;
}

function flipByteAt(buf: Buffer, at: number): Buffer {
  const copy = Buffer.from(buf);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/** A small volume tar stand-in, with a marker to find it in the bundle. */
const SMALL_VOLUME = Buffer.concat([
  Buffer.from('VOLUME-DATA-START:'),
  randomBytes(200_000),
  Buffer.from(':VOLUME-DATA-END'),
]);
/** Compressible image data. */
const IMAGE = Buffer.from(
  Array.from({ length: 40_000 }, (_, i) => `layer line ${i} ${'abc'.repeat(i % 7)}\n`).join(''),
);
/** Larger than two parts: 16 MiB + 16 MiB + a tail. */
const BIG_VOLUME = Buffer.concat([Buffer.from('BIG-VOLUME-START:'), randomBytes(2 * PART_SIZE + 3_000_000)]);

// ---------------------------------------------------------------------------------------------

describe('BundleWriter + BundleReader on a seekable sink', () => {
  let w: Written;
  beforeAll(async () => {
    w = await writeBundle(true, SMALL_VOLUME, IMAGE);
  });

  it('writes a tar with manifest first, one entry per member, then trailer and sums', async () => {
    const entries = await listEntries(w.bundle);
    expect(entries.map((e) => e.name)).toEqual([
      MANIFEST_MEMBER,
      VOLUME_MEMBER,
      IMAGE_MEMBER,
      TRAILER_MEMBER,
      SUMS_MEMBER,
    ]);
    expect(entries.every((e) => e.type === 'file')).toBe(true);
    // the manifest was patched in place with each member's raw size, declared before its data
    expect(JSON.parse(entries[0]!.data.toString())).toEqual(
      withRawSizes(w.manifest, [SMALL_VOLUME.length, IMAGE.length]),
    );
    // header sizes were patched with the real stored sizes
    expect(entries[1]!.size).toBe(SMALL_VOLUME.length);
    expect(entries[1]!.data.equals(SMALL_VOLUME)).toBe(true);
    expect(entries[2]!.size).toBe(w.trailer.members[1]!.bytes);
    expect(zlib.gunzipSync(entries[2]!.data).equals(IMAGE)).toBe(true);
    expect(w.sink.patches.length).toBe(3);
    expect(w.sink.patches.slice(0, 2).every((p) => p.length === BLOCK && p.position % BLOCK === 0)).toBe(true);
    expect(w.sink.patches[2]).toEqual({ position: BLOCK, length: entries[0]!.size });
    expect(w.bundle.length % BLOCK).toBe(0);
    expect(w.bundle.subarray(-1024).every((b) => b === 0)).toBe(true);
  });

  it('records sizes and checksums in the trailer and SHA256SUMS', async () => {
    const entries = await listEntries(w.bundle);
    const volumeStored = entries[1]!.data;
    const imageStored = entries[2]!.data;
    expect(w.trailer).toMatchObject({ format: 'ferry-bundle', formatVersion: 1, complete: true });
    expect(w.trailer.members).toEqual([
      { name: VOLUME_MEMBER, bytes: SMALL_VOLUME.length, sha256: sha(SMALL_VOLUME), rawBytes: SMALL_VOLUME.length },
      { name: IMAGE_MEMBER, bytes: imageStored.length, sha256: sha(imageStored), rawBytes: IMAGE.length },
    ]);
    expect(imageStored.length).toBeLessThan(IMAGE.length);
    expect(sha(volumeStored)).toBe(sha(SMALL_VOLUME));
    expect(w.trailer.images).toEqual([
      { ref: 'ferry/web:backup-20240301', id: 'sha256:' + 'ab'.repeat(32), layers: ['sha256:' + 'cd'.repeat(32)] },
    ]);
    expect(JSON.parse(entries[3]!.data.toString())).toEqual(w.trailer);
    expect(entries[4]!.data.toString()).toBe(sha256sums(w.trailer));
  });

  it('reads back the manifest, every member and the trailer', async () => {
    const { reader, members, order } = await readBundle(w.bundle);
    expect(reader.manifest).toEqual(withRawSizes(w.manifest, [SMALL_VOLUME.length, IMAGE.length]));
    expect(reader.location).toBe('mem');
    expect(order).toEqual([VOLUME_MEMBER, IMAGE_MEMBER]);
    expect(members[VOLUME_MEMBER]!.equals(SMALL_VOLUME)).toBe(true);
    expect(zlib.gunzipSync(members[IMAGE_MEMBER]!).equals(IMAGE)).toBe(true);
    expect(reader.trailer).toEqual(w.trailer);
  });

  it('has no trailer before members() has finished', async () => {
    const reader = await BundleReader.open(Readable.from(w.bundle), 'mem');
    expect(() => reader.trailer).toThrow(/trailer not read yet/);
    reader.close();
  });

  it('drains members the consumer leaves unread and still verifies them', async () => {
    const reader = await BundleReader.open(Readable.from(w.bundle), 'mem');
    const seen: string[] = [];
    for await (const m of reader.members()) seen.push(m.plan.name);
    expect(seen).toEqual([VOLUME_MEMBER, IMAGE_MEMBER]);
    expect(reader.trailer.members.map((m) => m.sha256)).toEqual(w.trailer.members.map((m) => m.sha256));
  });

  it('reads a bundle arriving in small chunks', async () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < w.bundle.length; i += 777) chunks.push(w.bundle.subarray(i, i + 777));
    const reader = await BundleReader.open(Readable.from(chunks), 'mem');
    const got: Record<string, Buffer> = {};
    for await (const m of reader.members()) got[m.plan.name] = await collect(m.stream);
    expect(got[VOLUME_MEMBER]!.equals(SMALL_VOLUME)).toBe(true);
    expect(zlib.gunzipSync(got[IMAGE_MEMBER]!).equals(IMAGE)).toBe(true);
  });
});

describe('BundleWriter + BundleReader on a stream (non-seekable) sink', () => {
  let w: Written;
  beforeAll(async () => {
    w = await writeBundle(false, BIG_VOLUME, IMAGE);
  });

  it('cuts a member larger than PART_SIZE into parts and keeps small members whole', async () => {
    const entries = await listEntries(w.bundle);
    expect(entries.map((e) => [e.name, e.size])).toEqual([
      [MANIFEST_MEMBER, entries[0]!.size],
      [partName(VOLUME_MEMBER, 0), PART_SIZE],
      [partName(VOLUME_MEMBER, 1), PART_SIZE],
      [partName(VOLUME_MEMBER, 2), BIG_VOLUME.length - 2 * PART_SIZE],
      [IMAGE_MEMBER, w.trailer.members[1]!.bytes],
      [TRAILER_MEMBER, entries[5]!.size],
      [SUMS_MEMBER, entries[6]!.size],
    ]);
    expect(partName(VOLUME_MEMBER, 2)).toBe(`${VOLUME_MEMBER}.part000002`);
    expect(Buffer.concat([entries[1]!.data, entries[2]!.data, entries[3]!.data]).equals(BIG_VOLUME)).toBe(true);
    expect(w.sink.patches).toEqual([]);
  });

  it('records the part count and checksum of the whole member', () => {
    expect(w.trailer.members[0]).toEqual({
      name: VOLUME_MEMBER,
      bytes: BIG_VOLUME.length,
      sha256: sha(BIG_VOLUME),
      rawBytes: BIG_VOLUME.length,
      parts: 3,
    });
    expect(w.trailer.members[1]).not.toHaveProperty('parts');
  });

  it('reads the parts back as one member', async () => {
    const { reader, members, order } = await readBundle(w.bundle);
    expect(order).toEqual([VOLUME_MEMBER, IMAGE_MEMBER]);
    expect(members[VOLUME_MEMBER]!.length).toBe(BIG_VOLUME.length);
    expect(members[VOLUME_MEMBER]!.equals(BIG_VOLUME)).toBe(true);
    expect(zlib.gunzipSync(members[IMAGE_MEMBER]!).equals(IMAGE)).toBe(true);
    expect(reader.trailer).toEqual(w.trailer);
  });

  it('a member of exactly PART_SIZE stays one entry; 2 x PART_SIZE makes exactly two parts', async () => {
    for (const [size, names] of [
      [PART_SIZE, [VOLUME_MEMBER]],
      [2 * PART_SIZE, [partName(VOLUME_MEMBER, 0), partName(VOLUME_MEMBER, 1)]],
    ] as const) {
      const vol = Buffer.alloc(size, 7);
      const written = await writeBundle(false, vol, Buffer.from('tiny image'));
      const entries = await listEntries(written.bundle);
      expect(entries.filter((e) => e.name.startsWith(VOLUME_MEMBER)).map((e) => e.name)).toEqual(names);
      const { members } = await readBundle(written.bundle);
      expect(members[VOLUME_MEMBER]!.equals(vol)).toBe(true);
    }
  });

  it('writes an empty member as one empty entry', async () => {
    const written = await writeBundle(false, Buffer.alloc(0), Buffer.alloc(0));
    const entries = await listEntries(written.bundle);
    expect(entries.map((e) => [e.name, e.size]).slice(1, 3)).toEqual([
      [VOLUME_MEMBER, 0],
      [IMAGE_MEMBER, entries[2]!.size],
    ]);
    const { members } = await readBundle(written.bundle);
    expect(members[VOLUME_MEMBER]!.length).toBe(0);
    expect(zlib.gunzipSync(members[IMAGE_MEMBER]!).length).toBe(0);
  });
});

describe('a member written again when its first source fails half-way (a local file)', () => {
  class Flaky extends Error {}
  /** `bytes` of `data`, then a Flaky failure. */
  function failingAfter(data: Buffer, bytes: number): Readable {
    return Readable.from(
      (async function* () {
        for (let i = 0; i < bytes; i += 65_536) yield data.subarray(i, Math.min(i + 65_536, bytes));
        throw new Flaky('the layer store gave a short file');
      })(),
    );
  }

  async function write(image: () => Readable, again?: Parameters<BundleWriter['addMember']>[4]) {
    // On disk (ext4 here), where the file sink writes whole slots with O_DIRECT.
    const dir = await fs.mkdtemp(path.join(process.env.FERRY_TEST_DIRECT_DIR ?? '/var/tmp', 'ferry-again-'));
    const file = path.join(dir, 'b.tar');
    const sink = await new LocalTransport(file).createBundle('b.tar');
    const w = new BundleWriter(sink, makeManifest());
    expect(w.canRewrite).toBe(true);
    try {
      await w.begin();
      await w.addMember(VOLUME_MEMBER, chunked(SMALL_VOLUME), 'none');
      await w.addMember(IMAGE_MEMBER, image(), 'gzip', undefined, again);
      const trailer = await w.finish();
      return { bundle: await fs.readFile(file), trailer, dir };
    } catch (err) {
      await w.abort();
      expect(await fs.readdir(dir)).toEqual([]); // nothing left that looks like a bundle
      await fs.rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  it('rewinds to the member`s start and writes it from the second source: the bundle reads back whole', async () => {
    // The first attempt writes more (9 MiB of random bytes, incompressible) than the second's
    // whole member: the file is cut back to the bundle's end.
    const first = randomBytes(12 << 20);
    let asked = 0;
    const { bundle, trailer, dir } = await write(() => failingAfter(first, 9 << 20), {
      when: (err) => err instanceof Flaky,
      open: async (err) => {
        expect(err).toBeInstanceOf(Flaky);
        asked++;
        return chunked(IMAGE, 65_537);
      },
    });
    expect(asked).toBe(1);
    const { reader, members, order } = await readBundle(bundle);
    expect(order).toEqual([VOLUME_MEMBER, IMAGE_MEMBER]);
    expect(members[VOLUME_MEMBER]!.equals(SMALL_VOLUME)).toBe(true);
    expect(zlib.gunzipSync(members[IMAGE_MEMBER]!).equals(IMAGE)).toBe(true);
    expect(reader.trailer).toEqual(trailer);
    expect(trailer.members[1]).toMatchObject({
      name: IMAGE_MEMBER,
      rawBytes: IMAGE.length,
      sha256: sha(members[IMAGE_MEMBER]!),
    });
    expect(JSON.parse((await listEntries(bundle))[0]!.data.toString()).members[1].rawBytes).toBe(IMAGE.length);
    expect(bundle.length).toBe(
      (await listEntries(bundle)).reduce((n, e) => n + BLOCK + Math.ceil(e.size / BLOCK) * BLOCK, 0) + 1024,
    );
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('a failure the second source is not for fails the member, and nothing is left', async () => {
    await expect(
      write(() => failingAfter(randomBytes(1 << 20), 1 << 20), { when: () => false, open: async () => chunked(IMAGE) }),
    ).rejects.toThrow(Flaky);
  });

  it('a stream sink cannot write a member again: refused before anything is written', async () => {
    const w = new BundleWriter(new MemorySink(false), makeManifest());
    expect(w.canRewrite).toBe(false);
    await w.begin();
    await expect(
      w.addMember(VOLUME_MEMBER, chunked(SMALL_VOLUME), 'none', undefined, {
        when: () => true,
        open: async () => chunked(SMALL_VOLUME),
      }),
    ).rejects.toThrow(/cannot write a member again/);
  });
});

describe('BundleWriter misuse', () => {
  it('refuses a member the manifest does not list', async () => {
    const w = new BundleWriter(new MemorySink(true), makeManifest());
    await w.begin();
    await expect(w.addMember('volumes/other.tar', Readable.from([Buffer.from('x')]), 'none')).rejects.toThrow(
      /not in the manifest/,
    );
  });

  it('refuses to finish with a member never written, and does not commit', async () => {
    const sink = new MemorySink(true);
    const w = new BundleWriter(sink, makeManifest());
    await w.begin();
    await w.addMember(VOLUME_MEMBER, Readable.from([Buffer.from('x')]), 'none');
    const e = await bundleError(() => w.finish());
    expect(e.message).toContain(IMAGE_MEMBER);
    expect(sink.committed).toBe(false);
    await w.abort();
    expect(sink.aborted).toBe(true);
  });

  it('writes members one at a time', async () => {
    const w = new BundleWriter(new MemorySink(true), makeManifest());
    await w.begin();
    const slow = new Readable({ read() {} });
    const first = w.addMember(VOLUME_MEMBER, slow, 'none');
    await expect(w.addMember(IMAGE_MEMBER, Readable.from([Buffer.from('x')]), 'gzip')).rejects.toThrow(/one at a time/);
    slow.push(Buffer.from('data'));
    slow.push(null);
    expect((await first).bytes).toBe(4);
  });

  it('reports progress in raw bytes', async () => {
    const w = new BundleWriter(new MemorySink(false), makeManifest());
    await w.begin();
    const calls: [string, number][] = [];
    await w.addMember(IMAGE_MEMBER, Readable.from([Buffer.alloc(1000), Buffer.alloc(500)]), 'gzip', (m, n) =>
      calls.push([m, n]),
    );
    expect(calls).toEqual([
      [IMAGE_MEMBER, 1000],
      [IMAGE_MEMBER, 1500],
    ]);
  });
});

describe('BundleReader rejects damaged bundles', () => {
  let good: Written;
  let goodStream: Written;
  let entries: RawEntry[];
  beforeAll(async () => {
    good = await writeBundle(true, SMALL_VOLUME, IMAGE);
    goodStream = await writeBundle(false, BIG_VOLUME, IMAGE);
    entries = await listEntries(good.bundle);
  });

  it('a repacked copy of the good bundle still reads (the crafting is sound)', async () => {
    const { members } = await readBundle(await pack(entries));
    expect(members[VOLUME_MEMBER]!.equals(SMALL_VOLUME)).toBe(true);
  });

  it('one flipped byte inside a member: sha256 mismatch naming the member', async () => {
    const at = good.bundle.indexOf('VOLUME-DATA-START:') + 100;
    expect(at).toBeGreaterThan(100);
    const e = await bundleError(() => readBundle(flipByteAt(good.bundle, at)));
    expect(e.member).toBe(VOLUME_MEMBER);
    expect(e.message).toContain(VOLUME_MEMBER);
    expect(e.message).toMatch(/sha256/);
  });

  it('one flipped byte inside a compressed member: sha256 mismatch naming it', async () => {
    const imageAt = good.bundle.indexOf(entries[2]!.data.subarray(0, 64));
    expect(imageAt).toBeGreaterThan(0);
    const e = await bundleError(async () => {
      const reader = await BundleReader.open(Readable.from(flipByteAt(good.bundle, imageAt + 40)), 'mem');
      for await (const m of reader.members()) m.stream.resume(); // do not decompress: checksum must catch it
    });
    expect(e.member).toBe(IMAGE_MEMBER);
    expect(e.message).toMatch(/sha256/);
  });

  it('one flipped byte inside a later part of a split member', async () => {
    const at = goodStream.bundle.indexOf('BIG-VOLUME-START:') + PART_SIZE + 5 * BLOCK;
    const e = await bundleError(() => readBundle(flipByteAt(goodStream.bundle, at)));
    expect(e.member).toBe(VOLUME_MEMBER);
    expect(e.message).toMatch(/sha256/);
  });

  it('truncated inside a member: not complete, naming the member (consumer and reader agree)', async () => {
    const at = good.bundle.indexOf('VOLUME-DATA-START:') + 50_000;
    const reader = await BundleReader.open(Readable.from(good.bundle.subarray(0, at)), 'mem');
    const e = await bundleError(async () => {
      for await (const m of reader.members()) for await (const _ of m.stream) void _;
    });
    expect(e.message).toContain('mem is not a complete bundle');
    expect(e.member).toBe(VOLUME_MEMBER);
    expect(reader.failure).toBe(e);
  });

  it('truncated inside a member the consumer leaves unread: not complete', async () => {
    const at = good.bundle.indexOf('VOLUME-DATA-START:') + 50_000;
    const e = await bundleError(async () => {
      const reader = await BundleReader.open(Readable.from(good.bundle.subarray(0, at)), 'mem');
      for await (const m of reader.members()) void m;
    });
    expect(e.message).toContain('not a complete bundle');
    expect(e.member).toBe(VOLUME_MEMBER);
  });

  it('truncated inside a split member on a stream bundle: not complete', async () => {
    const at = goodStream.bundle.indexOf('BIG-VOLUME-START:') + PART_SIZE + 1234;
    const e = await bundleError(() => readBundle(goodStream.bundle.subarray(0, at)));
    expect(e.message).toContain('not a complete bundle');
    expect(e.member).toBe(VOLUME_MEMBER);
  });

  it('truncated inside a header: not complete', async () => {
    const trailerHeaderAt = good.bundle.indexOf(Buffer.from(TRAILER_MEMBER + '\0'));
    expect(trailerHeaderAt).toBeGreaterThan(0);
    const e = await bundleError(() => readBundle(good.bundle.subarray(0, trailerHeaderAt + 200)));
    expect(e.message).toContain('mem is not a complete bundle');
  });

  it('truncated just before the trailer (entry boundary, no end blocks): incomplete', async () => {
    const trailerHeaderAt = good.bundle.indexOf(Buffer.from(TRAILER_MEMBER + '\0'));
    expect(trailerHeaderAt % BLOCK).toBe(0);
    const e = await bundleError(() => readBundle(good.bundle.subarray(0, trailerHeaderAt)));
    expect(e.message).toContain('mem is incomplete: it ends without trailer.json');
    expect(e.member).toBe(TRAILER_MEMBER);
  });

  it('the trailer dropped: incomplete, naming the trailer', async () => {
    const e = await bundleError(async () =>
      readBundle(await pack(entries.filter((x) => x.name !== TRAILER_MEMBER && x.name !== SUMS_MEMBER))),
    );
    expect(e.message).toMatch(/incomplete: it ends without trailer\.json/);
    expect(e.member).toBe(TRAILER_MEMBER);
  });

  it('SHA256SUMS dropped', async () => {
    const e = await bundleError(async () => readBundle(await pack(entries.filter((x) => x.name !== SUMS_MEMBER))));
    expect(e.member).toBe(SUMS_MEMBER);
  });

  it('SHA256SUMS not matching the trailer', async () => {
    const bad = entries.map((x) =>
      x.name === SUMS_MEMBER
        ? { ...x, data: Buffer.from(x.data.toString().replace(/^./, (c) => (c === '0' ? '1' : '0'))) }
        : x,
    );
    const e = await bundleError(async () => readBundle(await pack(bad)));
    expect(e.message).toContain('SHA256SUMS does not match');
  });

  it('a member after SHA256SUMS', async () => {
    const e = await bundleError(async () =>
      readBundle(await pack([...entries, { name: 'volumes/late.tar', type: 'file', size: 1, data: Buffer.from('x') }])),
    );
    expect(e.message).toContain('unexpected member "volumes/late.tar"');
  });

  it('a trailer listing a member with another size', async () => {
    const bad = entries.map((x) => {
      if (x.name !== TRAILER_MEMBER) return x;
      const t = JSON.parse(x.data.toString()) as Trailer;
      t.members[0]!.bytes += 1;
      return { ...x, data: Buffer.from(JSON.stringify(t)) };
    });
    const e = await bundleError(async () => readBundle(await pack(bad)));
    expect(e.member).toBe(VOLUME_MEMBER);
    expect(e.message).toMatch(/bytes, the trailer says/);
  });

  it('a member missing from the bundle', async () => {
    const e = await bundleError(async () => readBundle(await pack(entries.filter((x) => x.name !== VOLUME_MEMBER))));
    expect(e.member).toBe(VOLUME_MEMBER);
    expect(e.message).toContain('missing from the bundle');
  });

  it('first member not manifest.json', async () => {
    const swapped = [entries[1]!, entries[0]!, ...entries.slice(2)];
    const e = await bundleError(async () => BundleReader.open(Readable.from(await pack(swapped)), 'mem'));
    expect(e.message).toContain(`its first member is ${VOLUME_MEMBER}, not manifest.json`);
  });

  it('an empty archive', async () => {
    const e = await bundleError(async () => BundleReader.open(Readable.from(await pack([])), 'mem'));
    expect(e.message).toContain('first member is missing');
  });

  it('not a tar archive at all', async () => {
    const e = await bundleError(() =>
      BundleReader.open(Readable.from(Buffer.from('{"hello": "world"}\n'.repeat(100))), 'mem'),
    );
    expect(e.message).toMatch(/not a ferry bundle/);
  });

  it('a manifest that does not validate', async () => {
    const bad = entries.map((x) => (x.name === MANIFEST_MEMBER ? { ...x, data: Buffer.from('{"format":"zip"}') } : x));
    const e = await bundleError(async () => BundleReader.open(Readable.from(await pack(bad)), 'mem'));
    expect(e.member).toBe(MANIFEST_MEMBER);
    expect(e.message).toContain('format is "zip"');
  });

  it('an extra member the manifest does not list', async () => {
    const extra = [
      ...entries.slice(0, 2),
      { name: 'volumes/evil.tar', type: 'file' as const, size: 4, data: Buffer.from('evil') },
      ...entries.slice(2),
    ];
    const e = await bundleError(async () => readBundle(await pack(extra)));
    expect(e.member).toBe('volumes/evil.tar');
    expect(e.message).toContain('unknown member "volumes/evil.tar"');
  });

  it('a member repeated', async () => {
    const twice = [...entries.slice(0, 2), entries[1]!, ...entries.slice(2)];
    const e = await bundleError(async () => readBundle(await pack(twice)));
    expect(e.member).toBe(VOLUME_MEMBER);
    expect(e.message).toMatch(/twice or out of order/);
  });

  it('members out of order', async () => {
    const swapped = [entries[0]!, entries[2]!, entries[1]!, ...entries.slice(3)];
    const e = await bundleError(async () => readBundle(await pack(swapped)));
    expect(e.member).toBe(VOLUME_MEMBER);
    expect(e.message).toMatch(/twice or out of order/);
  });

  it('a split member that starts with a later part', async () => {
    const parts = await listEntries(goodStream.bundle);
    const skipFirst = parts.filter((x) => x.name !== partName(VOLUME_MEMBER, 0));
    const e = await bundleError(async () => readBundle(await pack(skipFirst)));
    expect(e.message).toContain('starts in the middle of a member');
  });

  it('a split member with a part missing in the middle', async () => {
    const parts = await listEntries(goodStream.bundle);
    const gap = parts.filter((x) => x.name !== partName(VOLUME_MEMBER, 1));
    const e = await bundleError(async () => readBundle(await pack(gap)));
    expect(e.member).toBe(VOLUME_MEMBER);
  });

  it('a symlink entry', async () => {
    const withLink = [
      ...entries.slice(0, 2),
      { name: 'volumes/link', type: 'symlink' as const, size: 0, data: Buffer.alloc(0), linkname: '/etc/shadow' },
      ...entries.slice(2),
    ];
    const e = await bundleError(async () => readBundle(await pack(withLink)));
    expect(e.member).toBe('volumes/link');
    expect(e.message).toContain('is a symlink, not a file');
  });

  it('a directory entry where a member should be', async () => {
    const withDir = [
      ...entries.slice(0, 1),
      { name: 'volumes/', type: 'directory' as const, size: 0, data: Buffer.alloc(0) },
      ...entries.slice(1),
    ];
    const e = await bundleError(async () => readBundle(await pack(withDir)));
    expect(e.message).toContain('is a directory, not a file');
  });

  it('a symlink as the very first entry', async () => {
    const e = await bundleError(async () =>
      BundleReader.open(
        Readable.from(
          await pack([
            { name: MANIFEST_MEMBER, type: 'symlink', size: 0, data: Buffer.alloc(0), linkname: '/etc/passwd' },
            ...entries.slice(1),
          ]),
        ),
        'mem',
      ),
    );
    expect(e.message).toMatch(/not a ferry bundle/);
  });

  it('an error of the source stream surfaces as a BundleError', async () => {
    const cut = good.bundle.subarray(0, good.bundle.indexOf('VOLUME-DATA-START:') + 10_000);
    const src = new Readable({ read() {} });
    src.push(cut);
    setTimeout(() => src.destroy(new Error('connection reset')), 20);
    const e = await bundleError(async () => {
      const reader = await BundleReader.open(src, 'mem');
      for await (const m of reader.members()) for await (const _ of m.stream) void _;
    });
    expect(e).toBeInstanceOf(BundleError);
    expect(e.message).toContain('connection reset');
  });
});

describe('SymlinkGuard: entries written through a symlink of the same archive', () => {
  it('flags an entry below a symlink an earlier entry made, and only that', () => {
    const g = new SymlinkGuard();
    expect(g.check({ name: './', type: 'directory' })).toBeUndefined();
    expect(g.check({ name: './etc', type: 'symlink' })).toBeUndefined();
    expect(g.check({ name: './etcetera/x' })).toBeUndefined(); // a name that only starts alike
    expect(g.check({ name: './etc/cron.d/evil' })).toBe('is written through the symlink "etc"');
    expect(g.check({ name: 'etc/passwd' })).toBe('is written through the symlink "etc"');
  });

  it('forgets a symlink a later entry replaces, and flags links below links', () => {
    const g = new SymlinkGuard();
    g.check({ name: './a', type: 'symlink' });
    g.check({ name: './a/', type: 'directory' }); // a directory in its place: tar replaces the link
    expect(g.check({ name: './a/f' })).toBeUndefined();
    g.check({ name: './d/l', type: 'symlink' });
    expect(g.check({ name: './d/l/deeper/f' })).toBe('is written through the symlink "d/l"');
  });
});
