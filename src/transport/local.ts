/**
 * Local files. A bundle is written to a hidden temporary name in the target directory (mode
 * 0600), fsynced, renamed into place and the directory fsynced: a bundle at its final name is
 * always complete. Leftover temporaries of killed runs are removed by the next write.
 */
import { constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { IoError, NotFoundError, toFerryError, UsageError } from '../errors.js';
import type { BundleSink, Transport } from './transport.js';

export const TEMP_PREFIX = '.ferry-';
export const TEMP_SUFFIX = '.partial';

class FileSink implements BundleSink {
  readonly seekable = true;
  position = 0;
  private done = false;

  constructor(
    private readonly fh: fs.FileHandle,
    private readonly tempPath: string,
    readonly location: string,
  ) {}

  async write(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off, this.position);
      off += bytesWritten;
      this.position += bytesWritten;
    }
  }

  async writeAt(chunk: Buffer, position: number): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off, position + off);
      off += bytesWritten;
    }
  }

  async commit(): Promise<void> {
    await this.fh.sync();
    await this.fh.close();
    await fs.rename(this.tempPath, this.location);
    this.done = true;
    await fsyncDir(path.dirname(this.location));
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.fh.close().catch(() => {});
    await fs.rm(this.tempPath, { force: true }).catch(() => {});
  }
}

async function fsyncDir(dir: string) {
  const d = await fs.open(dir, fsc.O_RDONLY).catch(() => undefined);
  if (!d) return;
  await d.sync().catch(() => {});
  await d.close();
}

/** Remove temporaries left by ferry runs that were killed (their process is gone). */
export async function cleanStaleTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = new RegExp(`^\\${TEMP_PREFIX}(\\d+)-.*\\${TEMP_SUFFIX}$`).exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    await fs.rm(path.join(dir, n), { force: true });
    removed.push(n);
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class LocalTransport implements Transport {
  constructor(private readonly target: string) {}

  describe(): string {
    return this.target;
  }

  /** A path ending in .tar names the bundle exactly; anything else is a directory (store). */
  private async finalPath(suggestedName: string): Promise<string> {
    if (this.target.endsWith('.tar')) {
      const dir = path.dirname(path.resolve(this.target));
      const st = await fs.stat(dir).catch(() => undefined);
      if (!st?.isDirectory()) throw new NotFoundError(`directory ${dir} does not exist`, 'create it first, or choose another -o');
      return path.resolve(this.target);
    }
    const st = await fs.stat(this.target).catch(() => undefined);
    if (!st) await fs.mkdir(this.target, { recursive: true, mode: 0o700 });
    else if (!st.isDirectory()) throw new UsageError(`${this.target} exists and is not a directory`, 'give a directory, or a file name ending in .tar');
    return path.resolve(this.target, suggestedName);
  }

  async createBundle(suggestedName: string): Promise<BundleSink> {
    const final = await this.finalPath(suggestedName);
    const dir = path.dirname(final);
    await cleanStaleTemps(dir);
    if (this.target.endsWith('.tar')) {
      // exact name: refuse to clobber an existing bundle silently? Operators asked for an exact
      // name, so replacing it atomically is what they want; the old one stays until the rename.
    } else if (await fs.stat(final).catch(() => undefined)) {
      throw new IoError(`${final} already exists`, { hint: 'another backup started in the same second; retry' });
    }
    const temp = path.join(dir, `${TEMP_PREFIX}${process.pid}-${path.basename(final)}${TEMP_SUFFIX}`);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    } catch (err) {
      throw toFerryError(err);
    }
    return new FileSink(fh, temp, final);
  }

  async openBundle(): Promise<{ stream: Readable; location: string; size?: number }> {
    const p = path.resolve(this.target);
    const st = await fs.stat(p).catch(() => undefined);
    if (!st) throw new NotFoundError(`no bundle at ${p}`);
    if (st.isDirectory()) throw new UsageError(`${p} is a directory`, 'name a bundle file (see `ls` of the directory)');
    const fh = await fs.open(p, 'r').catch((err) => {
      throw toFerryError(err);
    });
    return { stream: fh.createReadStream({ highWaterMark: 1 << 20, autoClose: true }) as unknown as Readable, location: p, size: st.size };
  }

  async close(): Promise<void> {}
}
