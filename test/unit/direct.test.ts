import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AlignedAppender, directIoWanted, SLOT_SIZE } from '../../src/store/direct.js';

// On disk (ext4 here), not a tmpfs /tmp: where O_DIRECT is exercised for real.
const base = process.env.FERRY_TEST_DIRECT_DIR ?? '/var/tmp';
let dir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(base, 'ferry-direct-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function open(name: string, direct: boolean) {
  const p = path.join(dir, name);
  const fh = await fs.open(p, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  const dfh = direct ? await fs.open(p, fsc.O_WRONLY | fsc.O_DIRECT).catch(() => undefined) : undefined;
  return { p, fh, dfh };
}

/**
 * Append `total` random bytes in chunks of random sizes (some larger than a slot), patching
 * 512-byte blocks already on disk, in the slot being filled, and across the two, as the bundle
 * writer patches headers; then compare the file with the same edits made in memory.
 */
async function roundTrip(app: AlignedAppender, file: string, total: number, seed: number) {
  const want = Buffer.alloc(total);
  let pos = 0;
  let n = seed;
  const rnd = (m: number) => ((n = (n * 1103515245 + 12345) & 0x7fffffff), n % m);
  const patches: [number, Buffer][] = [];
  // `written` comes once the caller's buffers are free: copied into a slot, or on disk.
  let released = 0;
  let appended = 0;
  while (pos < total) {
    const len = Math.min(total - pos, 1 + rnd(rnd(4) === 0 ? SLOT_SIZE + 100_000 : 70_000));
    const chunk = randomBytes(len);
    chunk.copy(want, pos);
    await app.append([chunk.subarray(0, len >> 1), chunk.subarray(len >> 1)], () => released++);
    appended++;
    pos += len;
    expect(app.position).toBe(pos);
    if (pos > 1024) {
      const at = rnd(pos - 600);
      const patch = randomBytes(Math.min(600, pos - at));
      patch.copy(want, at);
      patches.push([at, patch]);
      await app.patch(patch, at);
    }
  }
  // And one each: on disk, in the slot being filled, and across the slot's start.
  const slotStart = Math.floor(pos / SLOT_SIZE) * SLOT_SIZE;
  for (const at of [100, pos - 300, slotStart - 200]) {
    const patch = randomBytes(Math.min(512, pos - at));
    patch.copy(want, at);
    patches.push([at, patch]);
    await app.patch(patch, at);
  }
  await app.flush();
  expect(released).toBe(appended);
  const got = await fs.readFile(file);
  expect(got.length).toBe(total);
  const h = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  expect(h(got)).toBe(h(want));
  expect(patches.length).toBeGreaterThan(3);
}

describe('AlignedAppender', () => {
  it('writes appends and patches exactly, through O_DIRECT where the filesystem has it', async () => {
    const { p, fh, dfh } = await open('a', true);
    const app = new AlignedAppender(fh, dfh);
    await roundTrip(app, p, 3 * SLOT_SIZE + 12_345, 7);
    // On ext4 and xfs the whole slots went through O_DIRECT; on tmpfs of old kernels the open is refused.
    if (dfh) expect(app.usingDirectIo).toBe(true);
    await dfh?.close();
    await fh.close();
  });

  it('writes the same bytes without O_DIRECT', async () => {
    const { p, fh } = await open('b', false);
    const app = new AlignedAppender(fh);
    await roundTrip(app, p, 2 * SLOT_SIZE + 511, 11);
    expect(app.usingDirectIo).toBe(false);
    await fh.close();
  });

  it('falls back to ordinary writes when the filesystem refuses the alignment (EINVAL)', async () => {
    const { p, fh } = await open('c', false);
    let refused = 0;
    const refusing = {
      writev: async () => {
        refused++;
        throw Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' });
      },
    } as unknown as fs.FileHandle;
    const app = new AlignedAppender(fh, refusing);
    await roundTrip(app, p, 2 * SLOT_SIZE + 4096, 3);
    expect(refused).toBeGreaterThan(0);
    expect(app.usingDirectIo).toBe(false);
    await fh.close();
  });

  it('reports a write failure other than EINVAL (disk full) instead of falling back', async () => {
    const { fh } = await open('d', false);
    const full = {
      writev: async () => {
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      },
    } as unknown as fs.FileHandle;
    const app = new AlignedAppender(fh, full);
    const big = randomBytes(SLOT_SIZE);
    await expect(
      (async () => {
        for (let i = 0; i < 8; i++) await app.append([big]);
        await app.flush();
      })(),
    ).rejects.toThrow(/ENOSPC/);
    await app.drain();
    await fh.close();
  });

  it('refuses a patch past what was appended', async () => {
    const { fh } = await open('e', false);
    const app = new AlignedAppender(fh);
    await app.append([Buffer.alloc(1000)]);
    await expect(app.patch(Buffer.alloc(10), 995)).rejects.toThrow(RangeError);
    await fh.close();
  });

  /**
   * Append `first` bytes, rewind to `at`, append `second` bytes: the file, truncated to the
   * appender's position (as the file sink does at commit), is the first `at` bytes then `second`.
   */
  async function rewound(direct: boolean, first: number, at: number, second: number) {
    const { p, fh, dfh } = await open(`r-${first}-${at}-${second}`, direct);
    const app = new AlignedAppender(fh, dfh);
    const a = randomBytes(first);
    const b = randomBytes(second);
    for (let i = 0; i < first; i += 70_001) await app.append([a.subarray(i, i + 70_001)]);
    await app.rewind(at);
    expect(app.position).toBe(at);
    for (let i = 0; i < second; i += 65_536) await app.append([b.subarray(i, i + 65_536)]);
    await app.patch(Buffer.from('HEAD'), 512); // a header patch after the rewind lands too
    await app.flush();
    await fh.truncate(app.position);
    const want = Buffer.concat([a.subarray(0, at), b]);
    want.write('HEAD', 512);
    const got = await fs.readFile(p);
    expect(got.length).toBe(at + second);
    expect(got.equals(want)).toBe(true);
    if (dfh) expect(app.usingDirectIo).toBe(true);
    await dfh?.close();
    await fh.close();
  }

  it('rewinds into what is already on disk (an unaligned position), and what follows is written there', async () => {
    await rewound(true, 3 * SLOT_SIZE + 777, SLOT_SIZE + 12_345, 2 * SLOT_SIZE + 5);
    await rewound(true, 3 * SLOT_SIZE, SLOT_SIZE, 1000); // exactly a slot's start
    await rewound(true, 2 * SLOT_SIZE + 100, 4096 * 3 + 1, 10); // shorter than the first attempt
  });

  it('rewinds within the slot being filled, and without O_DIRECT', async () => {
    await rewound(true, SLOT_SIZE + 300_000, SLOT_SIZE + 1000, 50_000);
    await rewound(false, 2 * SLOT_SIZE + 9, SLOT_SIZE - 3, SLOT_SIZE);
  });

  it('refuses a rewind past what was appended', async () => {
    const { fh } = await open('f', false);
    const app = new AlignedAppender(fh);
    await app.append([Buffer.alloc(1000)]);
    await expect(app.rewind(1001)).rejects.toThrow(RangeError);
    await fh.close();
  });

  it('FERRY_DIRECT_IO=0 turns O_DIRECT off', () => {
    expect(directIoWanted({ FERRY_DIRECT_IO: '0' })).toBe(false);
    expect(directIoWanted({ FERRY_DIRECT_IO: 'off' })).toBe(false);
    expect(directIoWanted({})).toBe(typeof fsc.O_DIRECT === 'number');
  });
});

// As in src/store/direct.ts: the DOM lib, which has these types, is left out.
declare const WebAssembly: {
  Memory: new (d: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer };
};

/**
 * The guard of src/store/direct.ts's O_DIRECT writes: they rely on a WebAssembly.Memory's buffer
 * being page-aligned and on Node's FileHandle.writev passing a view of it to the kernel as it is
 * (no copy into a buffer of its own). If either changes, every O_DIRECT write is refused and the
 * appender silently falls back to the page cache; the round trip above then fails on
 * usingDirectIo, and this test says why.
 */
describe('what the O_DIRECT patch relies on', () => {
  it('O_DIRECT takes a WebAssembly.Memory view as it is; one byte off, the filesystem refuses it', async (ctx) => {
    const { fh, dfh } = await open('w', true);
    try {
      if (!dfh) return ctx.skip(); // no O_DIRECT on this filesystem: nothing to check
      const memory = new WebAssembly.Memory({ initial: 2, maximum: 2 }); // 128 KiB
      const slot = Buffer.from(memory.buffer, 0, 65536).fill(7);
      expect((await dfh.writev([slot], 0)).bytesWritten).toBe(65536);
      const second = Buffer.from(memory.buffer, 65536, 65536).fill(9);
      expect((await dfh.writev([second], 65536)).bytesWritten).toBe(65536);
      // The check means something only where misalignment is refused (ext4, xfs).
      const off = await dfh.writev([Buffer.from(memory.buffer, 1, 4096)], 131072).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e,
      );
      if (!off) return ctx.skip();
      expect(off.code).toBe('EINVAL');
    } finally {
      await dfh?.close();
      await fh.close();
    }
  });
});
