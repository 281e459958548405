import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AlignedAppender, directIoWanted, SLOT_SIZE } from '../../src/transport/direct.js';

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
  const fh = await fs.open(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
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

  it('FERRY_DIRECT_IO=0 turns O_DIRECT off', () => {
    expect(directIoWanted({ FERRY_DIRECT_IO: '0' })).toBe(false);
    expect(directIoWanted({ FERRY_DIRECT_IO: 'off' })).toBe(false);
    expect(directIoWanted({})).toBe(typeof fsc.O_DIRECT === 'number');
  });
});
