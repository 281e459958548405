/**
 * Appending a bundle to a local file without filling the page cache: the bytes are copied into a
 * few aligned 4 MiB slots and each full slot goes to disk with one O_DIRECT positioned write (the
 * thread pool runs a few side by side). What is not a whole aligned slot (the tail, the header
 * and manifest patches) goes through an ordinary descriptor of the same file; the final fsync
 * covers both. It works around what Node does not offer (aligned buffers), so it lives here and
 * nowhere else.
 *
 * What it relies on: O_DIRECT needs the buffer's address, the file offset and the length aligned.
 * Node gives no aligned heap buffers, so the slots live in a WebAssembly.Memory, whose base is
 * page-aligned, and Node's FileHandle.writev hands a view of it to the kernel as it is. Where the
 * filesystem refuses O_DIRECT (at open, or EINVAL on the first write), everything goes through the
 * ordinary descriptor: same bytes, page cache as before.
 *
 * Why: a backup of a 50 GB volume written through the page cache pushes the host's working set
 * (the database's own cache) out of memory, and the kernel spends CPU allocating a page for every
 * 4 KiB of it (dearly on a VM whose free memory goes back to the hypervisor, as on this project's
 * lab machine). The bundle is fsynced before it is renamed in any case, so waiting for the disk
 * costs nothing extra (the gain, and its cost with memory warm: see docs/performance.md, Bundles
 * bypass the page cache).
 *
 * Guarded by test/unit/direct.test.ts: its round trip on disk must keep using O_DIRECT
 * (usingDirectIo), and "what the O_DIRECT patch relies on" fails if a WebAssembly.Memory view is
 * no longer written as it is, aligned, so that the fallback would silently take every write.
 */
import { constants as fsc } from 'node:fs';
import type fs from 'node:fs/promises';
import { PositionedWrites } from './positioned.js';

// The one WebAssembly API used here (its types come with the DOM lib, which this project leaves out).
declare const WebAssembly: {
  Memory: new (d: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer };
};

export const SLOT_SIZE = 4 << 20;
const SLOTS = 4;
const ALIGN = 4096;
/** With O_DIRECT refused, a background fdatasync every this many bytes keeps the final fsync short. */
const SYNC_EVERY = 64 << 20;

/** Whether ferry may open bundle files with O_DIRECT (FERRY_DIRECT_IO=0 turns it off). */
export function directIoWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.FERRY_DIRECT_IO;
  return !(v === '0' || v === 'false' || v === 'no' || v === 'off') && typeof fsc.O_DIRECT === 'number';
}

/**
 * Appends (with patches of bytes already appended) at positions in one file. `buffered` is an
 * ordinary descriptor (opened for reading too where rewind() is used); `direct`, when given, one
 * opened with O_DIRECT on the same file.
 */
export class AlignedAppender {
  private readonly writes: PositionedWrites;
  private readonly memory?: { readonly buffer: ArrayBuffer };
  private readonly free: Buffer[] = [];
  /** The slot being filled (direct mode), and how far. Its file offset is writes.position. */
  private cur?: Buffer;
  private fill = 0;
  private directOk: boolean;
  private unsynced = 0;
  private syncing?: Promise<void>;

  constructor(
    private readonly buffered: fs.FileHandle,
    private readonly direct?: fs.FileHandle,
  ) {
    this.directOk = !!direct;
    if (direct) {
      this.memory = new WebAssembly.Memory({
        initial: (SLOT_SIZE * SLOTS) / 65536,
        maximum: (SLOT_SIZE * SLOTS) / 65536,
      });
      for (let i = 0; i < SLOTS; i++) this.free.push(Buffer.from(this.memory.buffer, i * SLOT_SIZE, SLOT_SIZE));
      this.cur = this.free.pop();
    }
    // One slot is always being filled, so at most SLOTS - 1 writes are in flight.
    this.writes = new PositionedWrites((chunks, position) => this.put(chunks, position), direct ? SLOTS - 1 : 4);
  }

  /** True while whole slots still go to disk with O_DIRECT. */
  get usingDirectIo(): boolean {
    return this.directOk;
  }

  get position(): number {
    return this.writes.position + this.fill;
  }

  /** Append; `written` is called once nothing refers to the chunks any more. */
  async append(chunks: Buffer[], written?: () => void): Promise<void> {
    if (!this.cur) {
      this.unsynced += chunks.reduce((n, c) => n + c.length, 0);
      if (this.unsynced >= SYNC_EVERY && !this.syncing) {
        this.unsynced = 0;
        this.syncing = this.buffered
          .datasync()
          .catch(() => {})
          .finally(() => (this.syncing = undefined));
      }
      return this.writes.write(chunks, written);
    }
    for (const c of chunks) {
      for (let off = 0; off < c.length;) {
        const n = Math.min(c.length - off, SLOT_SIZE - this.fill);
        c.copy(this.cur, this.fill, off, off + n);
        this.fill += n;
        off += n;
        if (this.fill === SLOT_SIZE) await this.flushSlot();
      }
    }
    written?.(); // copied: the caller's buffers are free again
  }

  private async flushSlot(): Promise<void> {
    const slot = this.cur!;
    const len = this.fill;
    this.cur = undefined;
    this.fill = 0;
    // Synchronously advances writes.position by len, so position stays right meanwhile.
    const p = this.writes.write([slot.subarray(0, len)], () => this.free.push(slot));
    this.cur = this.free.pop(); // usually there is one; else the next line waits for one
    await p;
    this.cur ??= this.free.pop();
  }

  /** Overwrite bytes already appended (a header whose size is known only now). */
  async patch(chunk: Buffer, position: number): Promise<void> {
    if (position < 0 || position + chunk.length > this.position)
      throw new RangeError(`patch at ${position}+${chunk.length} past the end (${this.position})`);
    const slotStart = this.writes.position;
    if (this.cur && position + chunk.length > slotStart) {
      // The part still in the slot being filled is patched in memory.
      const from = Math.max(position, slotStart);
      chunk.copy(this.cur, from - slotStart, from - position);
      if (position >= slotStart) return;
      chunk = chunk.subarray(0, slotStart - position);
    }
    await this.writes.writeAt(chunk, position);
  }

  /**
   * Forget everything appended from `position` on: the next append goes there (a bundle member
   * written again from its start). Waits for the writes under way (throws the first failure). Bytes
   * already on disk past the new end stay there until the caller truncates the file.
   */
  async rewind(position: number): Promise<void> {
    if (position < 0 || position > this.position)
      throw new RangeError(`rewind to ${position} past the end (${this.position})`);
    await this.writes.settle();
    await this.syncing;
    this.unsynced = 0;
    if (!this.cur) {
      this.writes.position = position;
      return;
    }
    const slotStart = this.writes.position;
    if (position >= slotStart) {
      this.fill = position - slotStart; // still in the slot being filled
      return;
    }
    // Back into what is on disk: the slot starts again at the aligned block holding `position`,
    // with that block's bytes before `position` read back into it.
    const base = position - (position % ALIGN);
    for (let got = 0; got < position - base;) {
      const { bytesRead } = await this.buffered.read(this.cur, got, position - base - got, base + got);
      if (bytesRead === 0) throw new Error(`rewind: the bundle file ends at ${base + got}, before ${position}`);
      got += bytesRead;
    }
    this.writes.position = base;
    this.fill = position - base;
  }

  /** Write what is still staged and wait for every write; throws the first failure. */
  async flush(): Promise<void> {
    if (this.cur && this.fill > 0) {
      const tail = Buffer.from(this.cur.subarray(0, this.fill)); // the slot itself may be reused
      this.fill = 0;
      await this.writes.write([tail]);
    }
    await this.writes.settle();
    await this.syncing;
  }

  /** Let what is under way finish, whatever its outcome. */
  async drain(): Promise<void> {
    await this.writes.drain();
    await this.syncing;
  }

  private isSlot(b: Buffer): boolean {
    return !!this.memory && b.buffer === this.memory.buffer && b.byteOffset % ALIGN === 0;
  }

  private async put(chunks: Buffer[], position: number): Promise<void> {
    const only = chunks.length === 1 ? chunks[0]! : undefined;
    if (this.directOk && only && this.isSlot(only) && position % ALIGN === 0 && only.length % ALIGN === 0) {
      try {
        await writeAll(this.direct!, [only], position);
        return;
      } catch (err) {
        // The filesystem takes the open but not the alignment: go on without O_DIRECT.
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        this.directOk = false;
      }
    }
    await writeAll(this.buffered, chunks, position);
  }
}

/** One gathered positioned write (pwritev), repeated until every byte is written. */
async function writeAll(fh: fs.FileHandle, chunks: Buffer[], position: number): Promise<void> {
  let left = chunks;
  while (left.length) {
    const { bytesWritten } = await fh.writev(left, position);
    position += bytesWritten;
    let n = bytesWritten;
    while (left.length && n >= left[0]!.length) {
      n -= left[0]!.length;
      left = left.slice(1);
    }
    if (n > 0) left = [left[0]!.subarray(n), ...left.slice(1)];
  }
}
