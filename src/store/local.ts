/**
 * Local files. A bundle is written to a hidden temporary name in the target directory (mode
 * 0600), fsynced, renamed into place and the directory fsynced: a bundle at its final name is
 * always complete. Leftover temporaries of killed runs are removed by the next write.
 *
 * In a store (a directory target), the bundle's name is chosen and its temporary created under
 * the store's lock (lock.ts), and a name that exists or is being written gets `-2`, `-3`, ...:
 * two runs into one store at the same second both finish, with separately named bundles.
 */
import { constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { IoError, NotFoundError, toFerryError, UsageError } from '../errors.js';
import { DAMAGED_SUFFIX } from './marks.js';
import { acquireStoreLock, DEFAULT_LOCK_TIMEOUT_S, processAlive, type LockOptions } from './lock.js';
import { AlignedAppender, directIoWanted } from './direct.js';
import {
  checkBundleName,
  isBundleName,
  type BundleInfo,
  type ByteRange,
  type CreateOptions,
  type OpenedBundle,
  type Store,
  type StoreCapabilities,
} from './store.js';
import type { StoreLock } from './lock.js';
import { StoreTarget } from './target.js';
import type { BundleSink } from './transport.js';

export const TEMP_PREFIX = '.ferry-';
export const TEMP_SUFFIX = '.partial';
/** A temporary's name: the pid of the run writing it, and the bundle name it will get. */
export const TEMP_RE = /^\.ferry-(\d+)-(.*)\.partial$/;

class FileSink implements BundleSink {
  readonly seekable = true;
  private done = false;
  private rewound = false;
  // Whole aligned slots go to disk with O_DIRECT where the filesystem allows it (direct.ts),
  // the rest through the ordinary descriptor, several positioned writes in flight.
  private readonly out: AlignedAppender;

  constructor(
    private readonly fh: fs.FileHandle,
    private readonly direct: fs.FileHandle | undefined,
    private readonly tempPath: string,
    readonly location: string,
  ) {
    this.out = new AlignedAppender(fh, direct);
  }

  get name(): string {
    return path.basename(this.location);
  }

  get position(): number {
    return this.out.position;
  }

  async write(chunk: Buffer): Promise<void> {
    return this.writev([chunk]);
  }

  async writev(chunks: Buffer[], written?: () => void): Promise<void> {
    await this.out.append(chunks, written);
  }

  writeAt(chunk: Buffer, position: number): Promise<void> {
    return this.out.patch(chunk, position);
  }

  async rewind(position: number): Promise<void> {
    await this.out.rewind(position);
    this.rewound = true;
  }

  async commit(): Promise<void> {
    await this.out.flush();
    // After a rewind the file may hold bytes past the bundle's end (the longer first attempt).
    if (this.rewound) await this.fh.truncate(this.out.position);
    await this.fh.sync();
    await this.direct?.close();
    await this.fh.close();
    await fs.rename(this.tempPath, this.location);
    this.done = true;
    await fsyncDir(path.dirname(this.location));
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.out.drain();
    await this.direct?.close().catch(() => {});
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
    const m = TEMP_RE.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    await fs.rm(path.join(dir, n), { force: true });
    removed.push(n);
  }
  return removed;
}

export function tempName(pid: number, finalName: string): string {
  return `${TEMP_PREFIX}${pid}-${finalName}${TEMP_SUFFIX}`;
}

/**
 * The first of `name`, `<stem>-2.tar`, `<stem>-3.tar`, ... that no file in the directory has, is
 * being written under (a temporary of any run), or was quarantined under (`.corrupt`).
 */
export function uniqueBundleName(existing: Iterable<string>, name: string): string {
  const names = new Set(existing);
  const writing = new Set<string>();
  for (const n of names) {
    const m = TEMP_RE.exec(n);
    if (m) writing.add(m[2]!);
  }
  const stem = name.endsWith('.tar') ? name.slice(0, -4) : name;
  const ext = name.endsWith('.tar') ? '.tar' : '';
  for (let i = 1; i < 10_000; i++) {
    const cand = i === 1 ? name : `${stem}-${i}${ext}`;
    if (
      !names.has(cand) &&
      !writing.has(cand) &&
      !names.has(`${cand}.corrupt`) &&
      !names.has(`${cand}${DAMAGED_SUFFIX}`)
    )
      return cand;
  }
  throw new IoError(`no free bundle name near ${name}`);
}

/**
 * A store in a local directory. `root` is the directory as given (relative or absolute); bundle
 * names are file names in it.
 */
export class LocalStore implements Store {
  readonly capabilities: StoreCapabilities = {
    seekable: true,
    rangeReads: true,
    rereadable: true,
    rewindable: true,
    lockable: true,
    listable: true,
    atomicCommit: true,
    durableCommit: true,
  };
  private readonly dir: string;
  /** How create() waits for the store's lock. */
  private readonly lockOptions: LockOptions;

  constructor(
    private readonly root: string,
    opts: { lock?: Partial<LockOptions> } = {},
  ) {
    this.dir = path.resolve(root);
    this.lockOptions = { timeoutMs: DEFAULT_LOCK_TIMEOUT_S * 1000, ...opts.lock };
  }

  describe(name?: string): string {
    return name === undefined ? this.dir : path.resolve(this.dir, name);
  }

  async exists(): Promise<boolean> {
    return !!(await fs.stat(this.dir).catch(() => undefined))?.isDirectory();
  }

  async create(name: string, opts: CreateOptions = {}): Promise<BundleSink> {
    checkBundleName(name);
    const dir = this.dir;
    if (opts.replace) {
      // An exact name: operators asked for it, so replacing it atomically is what they want; the
      // old one stays until the rename.
      const st = await fs.stat(dir).catch(() => undefined);
      if (!st?.isDirectory())
        throw new NotFoundError(`directory ${dir} does not exist`, 'create it first, or choose another -o');
      await cleanStaleTemps(dir);
      return this.openTemp(path.join(dir, name));
    }
    const st = await fs.stat(this.root).catch(() => undefined);
    if (!st) await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
    else if (!st.isDirectory())
      throw new UsageError(
        `${this.root} exists and is not a directory`,
        'give a directory, or a file name ending in .tar',
      );
    // A store: choose a free name and claim it with its temporary while holding the lock, then
    // let go, so that other runs can write into the store at the same time.
    const lock = await acquireStoreLock(dir, {
      ...this.lockOptions,
      purpose: this.lockOptions.purpose ?? 'backup: choosing a bundle name',
    });
    try {
      await cleanStaleTemps(dir);
      const free = uniqueBundleName(await fs.readdir(dir), name);
      return await this.openTemp(path.join(dir, free));
    } finally {
      await lock.release();
    }
  }

  private async openTemp(final: string): Promise<BundleSink> {
    const temp = path.join(path.dirname(final), tempName(process.pid, path.basename(final)));
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(temp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    } catch (err) {
      throw toFerryError(err);
    }
    // A second descriptor with O_DIRECT, where the filesystem has it (tmpfs and some network
    // filesystems refuse it at open: then everything goes through the first).
    const direct = directIoWanted()
      ? await fs.open(temp, fsc.O_WRONLY | fsc.O_DIRECT).catch(() => undefined)
      : undefined;
    return new FileSink(fh, direct, temp, final);
  }

  async open(name: string, range?: ByteRange): Promise<OpenedBundle> {
    const p = path.resolve(this.dir, name);
    const st = await fs.stat(p).catch(() => undefined);
    if (!st) throw new NotFoundError(`no bundle at ${p}`);
    if (st.isDirectory()) throw new UsageError(`${p} is a directory`, 'name a bundle file (see `ls` of the directory)');
    const fh = await fs.open(p, 'r').catch((err) => {
      throw toFerryError(err);
    });
    const bounds = range ? byteBounds(range) : {};
    if (!bounds) {
      await fh.close();
      return { stream: Readable.from([]), location: p, size: st.size };
    }
    return {
      stream: fh.createReadStream({ highWaterMark: 1 << 20, autoClose: true, ...bounds }),
      location: p,
      size: st.size,
    };
  }

  async list(): Promise<BundleInfo[]> {
    const abs = this.dir;
    const st = await fs.stat(abs).catch(() => undefined);
    if (!st) throw new NotFoundError(`no store at ${abs}`, 'give the directory that backups are written to');
    if (!st.isDirectory())
      throw new UsageError(
        `${abs} is not a directory`,
        'give a store (a directory of bundles); for one bundle use `ferry inspect`',
      );
    const out: BundleInfo[] = [];
    for (const d of await fs.readdir(abs, { withFileTypes: true })) {
      if (!isBundleName(d.name) || d.name.startsWith(TEMP_PREFIX)) continue;
      if (!d.isFile() && !d.isSymbolicLink()) continue;
      // A symlink to nothing is listed too (empty): the catalogue says it is unreadable.
      const s = await fs.stat(path.join(abs, d.name)).catch(() => undefined);
      out.push({
        name: d.name,
        location: path.join(abs, d.name),
        size: s?.size ?? 0,
        mtime: s?.mtime ?? new Date(0),
      });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async stat(name: string): Promise<BundleInfo | undefined> {
    const p = path.resolve(this.dir, name);
    const st = await fs.stat(p).catch(() => undefined);
    if (!st?.isFile()) return undefined;
    return { name, location: p, size: st.size, mtime: st.mtime };
  }

  async remove(name: string): Promise<void> {
    checkBundleName(name);
    await fs.rm(path.resolve(this.dir, name)).catch((err) => {
      throw toFerryError(err);
    });
  }

  async rename(name: string, to: string): Promise<void> {
    checkBundleName(name);
    checkBundleName(to);
    await fs.rename(path.resolve(this.dir, name), path.resolve(this.dir, to)).catch((err) => {
      throw toFerryError(err);
    });
  }

  lock(opts: LockOptions): Promise<StoreLock> {
    return acquireStoreLock(this.dir, opts);
  }

  async close(): Promise<void> {}
}

/** A ByteRange as the `start`/`end` (inclusive) of a read stream; undefined when it is empty. */
export function byteBounds(r: ByteRange): { start: number; end?: number } | undefined {
  if (
    !(Number.isInteger(r.offset) && r.offset >= 0) ||
    (r.length !== undefined && !(Number.isInteger(r.length) && r.length >= 0))
  )
    throw new RangeError(`bad byte range ${r.offset}+${r.length}`);
  if (r.length === 0) return undefined;
  return r.length === undefined ? { start: r.offset } : { start: r.offset, end: r.offset + r.length - 1 };
}

/**
 * @deprecated A local bundle location as a Transport; use the registry (writeTarget/readTarget
 * in registry.ts). Kept so that code written against it goes on working.
 */
export class LocalTransport extends StoreTarget {
  constructor(target: string) {
    super(target, {
      write: () =>
        target.endsWith('.tar')
          ? { store: new LocalStore(path.dirname(target)), name: path.basename(target) }
          : { store: new LocalStore(target) },
      read: () => ({ store: new LocalStore(path.dirname(target)), name: path.basename(target) }),
    });
  }
}
