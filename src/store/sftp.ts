/**
 * Bundles on another host over SFTP, on the run's one SSH connection to that host: written to a
 * hidden temporary name, fsynced (fsync@openssh.com), renamed into place (posix-rename), exactly
 * as a local store. `ssh://[user@]host[:port]/path`: a directory, or a file ending in .tar.
 *
 * A directory is a store like a local one: its lock (lock.ts, the same `.ferry.lock` file,
 * created with SSH_FXF_EXCL) is held while a backup chooses a free name (`-2`, `-3`, ...) and
 * claims it with its temporary, and while prune decides and removes. The temporaries of runs
 * that died cannot be told by their pid (they may have run on any host): one untouched for
 * STALE_REMOTE_TEMP_MS (a run that writes touches it every second) is removed by the next backup.
 */
import path from 'node:path/posix';
import { Readable } from 'node:stream';
import type { SFTPWrapper } from 'ssh2';
import { IoError, NotFoundError, UsageError } from '../errors.js';
import type { SshPool } from '../ssh/client.js';
import { acquireStoreLock, DEFAULT_LOCK_TIMEOUT_S, type LockDir, type LockOptions, type StoreLock } from './lock.js';
import { byteBounds, TEMP_RE, tempName, uniqueBundleName } from './local.js';
import { PositionedWrites } from './positioned.js';
import {
  checkBundleName,
  isBundleName,
  redactUrl,
  type BundleInfo,
  type ByteRange,
  type CreateOptions,
  type OpenedBundle,
  type Store,
  type StoreCapabilities,
} from './store.js';
import { StoreTarget } from './target.js';
import type { BundleSink } from './transport.js';

export interface SshLocation {
  user?: string;
  host: string;
  port?: number;
  path: string;
}

export function parseSshLocation(url: string, opts: { root?: boolean } = {}): SshLocation {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`cannot parse ${url}`, 'use ssh://[user@]host[:port]/path');
  }
  if (u.protocol !== 'ssh:' || !u.hostname)
    throw new UsageError(`cannot parse ${url}`, 'use ssh://[user@]host[:port]/path');
  const p = decodeURIComponent(u.pathname);
  if (!p || (p === '/' && !opts.root))
    throw new UsageError(`${url} names no directory or file`, 'use ssh://host/backups or ssh://host/backups/web.tar');
  return {
    user: u.username ? decodeURIComponent(u.username) : undefined,
    host: u.hostname,
    port: u.port ? Number(u.port) : undefined,
    path: p,
  };
}

function sftpError(err: Error & { code?: number }, what: string): Error {
  // SFTP status codes: 2 no such file, 3 permission denied, 4 failure (often: disk full)
  if (err.code === 2) return new NotFoundError(`${what}: no such file or directory`);
  if (err.code === 3) return new IoError(`${what}: permission denied`);
  return new IoError(`${what}: ${err.message}`, { cause: err });
}

/** A temporary untouched this long was left by a run that died. */
export const STALE_REMOTE_TEMP_MS = 24 * 3600 * 1000;

interface Attrs {
  size: number;
  mtime: number;
  isFile(): boolean;
  isDirectory(): boolean;
}

function call<T>(what: string, fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(sftpError(err, what)) : resolve(v as T))));
}

/** The store lock's file operations in a directory on the remote host. */
export function sftpLockDir(sftp: SFTPWrapper, dir: string, base: string): LockDir {
  const at = (file: string) => path.join(dir, file);
  return {
    name: `${base}${dir}`,
    where: (file) => `${base}${at(file)}`,
    async create(file, content) {
      let handle: Buffer;
      try {
        handle = await call<Buffer>(`create ${at(file)}`, (cb) => sftp.open(at(file), 'wx', { mode: 0o644 }, cb));
      } catch (err) {
        // SFTP v3 has no "already exists" status: an exclusive open that fails on a file that
        // is there failed because it is there.
        if (
          await call(`stat ${at(file)}`, (cb) => sftp.lstat(at(file), cb)).then(
            () => true,
            () => false,
          )
        )
          return false;
        throw err;
      }
      try {
        const buf = Buffer.from(content);
        await call<void>(`write ${at(file)}`, (cb) => sftp.write(handle, buf, 0, buf.length, 0, cb));
      } finally {
        await call<void>(`close ${at(file)}`, (cb) => sftp.close(handle, cb));
      }
      return true;
    },
    async read(file) {
      let st: Attrs;
      try {
        st = await call<Attrs>(`stat ${at(file)}`, (cb) => sftp.stat(at(file), cb));
      } catch (err) {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      }
      const raw = await call<Buffer>(`read ${at(file)}`, (cb) => sftp.readFile(at(file), cb)).catch((err) => {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      });
      return raw ? { raw: raw.toString('utf8'), mtimeMs: st.mtime * 1000 } : undefined;
    },
    async remove(file) {
      await call<void>(`remove ${at(file)}`, (cb) => sftp.unlink(at(file), cb)).catch((err) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
    },
    async touch(file) {
      const now = Date.now() / 1000;
      await call<void>(`touch ${at(file)}`, (cb) => sftp.utimes(at(file), now, now, cb));
    },
  };
}

/** The temporaries in a listing that no run has touched for STALE_REMOTE_TEMP_MS. */
export function staleRemoteTemps(list: { filename: string; attrs: { mtime: number } }[], now = Date.now()): string[] {
  return list
    .filter((e) => TEMP_RE.test(e.filename) && now - e.attrs.mtime * 1000 > STALE_REMOTE_TEMP_MS)
    .map((e) => e.filename);
}

class SftpSink implements BundleSink {
  readonly seekable = true;
  private done = false;
  // Several writes in flight: one round trip per chunk would cap throughput by latency.
  private readonly writes = new PositionedWrites((bufs, pos) => {
    const buf = Buffer.concat(bufs); // a copy, which ssh2 may keep while the write is under way
    return call<void>(`write ${this.location}`, (cb) => this.sftp.write(this.handle, buf, 0, buf.length, pos, cb));
  }, 16);

  constructor(
    private readonly sftp: SFTPWrapper,
    private readonly handle: Buffer,
    private readonly tempPath: string,
    readonly finalPath: string,
    readonly location: string,
  ) {}

  get name(): string {
    return path.basename(this.finalPath);
  }

  get position(): number {
    return this.writes.position;
  }

  write(chunk: Buffer): Promise<void> {
    return this.writes.write(chunk);
  }

  writeAt(chunk: Buffer, position: number): Promise<void> {
    return this.writes.writeAt(chunk, position);
  }

  async commit(): Promise<void> {
    await this.writes.settle();
    await call<void>(`fsync ${this.location}`, (cb) => this.sftp.ext_openssh_fsync(this.handle, cb)).catch(() => {});
    await call<void>(`close ${this.location}`, (cb) => this.sftp.close(this.handle, cb));
    await call<void>(`rename ${this.tempPath} to ${this.finalPath}`, (cb) =>
      this.sftp.ext_openssh_rename(this.tempPath, this.finalPath, cb),
    ).catch(async () => {
      await call<void>(`rename ${this.tempPath} to ${this.finalPath}`, (cb) =>
        this.sftp.rename(this.tempPath, this.finalPath, cb),
      );
    });
    this.done = true;
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.writes.drain();
    await call<void>('close', (cb) => this.sftp.close(this.handle, cb)).catch(() => {});
    await call<void>('unlink', (cb) => this.sftp.unlink(this.tempPath, cb)).catch(() => {});
  }
}

/** A store in a directory on another host over SFTP: `ssh://[user@]host[:port]/dir`. */
export class SftpStore implements Store {
  readonly capabilities: StoreCapabilities = {
    seekable: true,
    rangeReads: true,
    rereadable: true,
    // A rewound SFTP file would need a truncate (fsetstat size) that servers may refuse: not offered.
    rewindable: false,
    lockable: true,
    listable: true,
    atomicCommit: true,
    // fsync@openssh.com is optional, and the directory cannot be synced: best effort only.
    durableCommit: false,
  };
  private readonly loc: SshLocation;
  private readonly lockOptions: LockOptions;

  constructor(
    url: string,
    private readonly pool: SshPool,
    opts: { lock?: Partial<LockOptions> } = {},
  ) {
    // The root directory is a store too (of a bundle ssh://host/x.tar); the registry refuses
    // ssh://host/ from the command line.
    this.loc = parseSshLocation(url, { root: true });
    this.base = sshBase(url);
    this.lockOptions = { timeoutMs: DEFAULT_LOCK_TIMEOUT_S * 1000, ...opts.lock };
  }

  /** `ssh://[user@]host[:port]`: the URL without its path (and without a password). */
  private readonly base: string;

  private get dir(): string {
    return path.normalize(this.loc.path).replace(/(.)\/+$/, '$1');
  }

  private at(name: string): string {
    return path.join(this.dir, name);
  }

  describe(name?: string): string {
    return name === undefined ? `${this.base}${this.dir}` : `${this.base}${this.at(name)}`;
  }

  private async sftp(): Promise<SFTPWrapper> {
    const conn = await this.pool.get({ user: this.loc.user, host: this.loc.host, port: this.loc.port });
    return conn.sftp();
  }

  /** The store directory's listing; NotFound or Usage when it is missing or not a directory. */
  private async listing(sftp: SFTPWrapper): Promise<{ filename: string; attrs: Attrs }[]> {
    const where = this.describe();
    const st = await call<Attrs>(`stat ${where}`, (cb) => sftp.stat(this.dir, cb)).catch((err) => {
      if (err instanceof NotFoundError)
        throw new NotFoundError(`no store at ${where}`, 'give the directory that backups are written to');
      throw err;
    });
    if (!st.isDirectory())
      throw new UsageError(
        `${where} is not a directory`,
        'give a store (a directory of bundles); for one bundle use `ferry inspect`',
      );
    return call(`list ${where}`, (cb) => sftp.readdir(this.dir, cb));
  }

  async exists(): Promise<boolean> {
    const sftp = await this.sftp();
    const st = await call<Attrs>(`stat ${this.describe()}`, (cb) => sftp.stat(this.dir, cb)).catch(() => undefined);
    return !!st?.isDirectory();
  }

  /** Take this store's lock (see lock.ts); the directory must exist. */
  async lock(opts: LockOptions): Promise<StoreLock> {
    const sftp = await this.sftp();
    await this.listing(sftp);
    return acquireStoreLock(sftpLockDir(sftp, this.dir, this.base), opts);
  }

  async create(name: string, opts: CreateOptions = {}): Promise<BundleSink> {
    checkBundleName(name);
    const sftp = await this.sftp();
    if (opts.replace) return this.openTemp(sftp, this.at(name));
    const dir = this.dir;
    const where = this.describe();
    const st = await call<Attrs>(`stat ${dir}`, (cb) => sftp.stat(dir, cb)).catch(() => undefined);
    if (!st) await call<void>(`mkdir ${dir}`, (cb) => sftp.mkdir(dir, { mode: 0o700 }, cb));
    else if (!st.isDirectory()) throw new UsageError(`${where} exists and is not a directory`);
    // As in a local store: choose a free name and claim it with a temporary under the lock.
    const lock = await acquireStoreLock(sftpLockDir(sftp, dir, this.base), {
      ...this.lockOptions,
      purpose: this.lockOptions.purpose ?? 'backup: choosing a bundle name',
    });
    try {
      const list = await this.listing(sftp);
      for (const n of staleRemoteTemps(list)) {
        await call<void>(`remove ${n}`, (cb) => sftp.unlink(path.join(dir, n), cb)).catch(() => {});
      }
      const free = uniqueBundleName(
        list.map((e) => e.filename),
        name,
      );
      return await this.openTemp(sftp, path.join(dir, free));
    } finally {
      await lock.release();
    }
  }

  private async openTemp(sftp: SFTPWrapper, final: string): Promise<BundleSink> {
    const temp = path.join(path.dirname(final), tempName(process.pid, path.basename(final)));
    const handle = await call<Buffer>(`create ${temp}`, (cb) => sftp.open(temp, 'wx', { mode: 0o600 }, cb));
    return new SftpSink(sftp, handle, temp, final, `${this.base}${final}`);
  }

  async open(name: string, range?: ByteRange): Promise<OpenedBundle> {
    const sftp = await this.sftp();
    const p = this.at(name);
    const where = this.describe(name);
    const st = await call<{ size: number; isDirectory(): boolean }>(`stat ${where}`, (cb) => sftp.stat(p, cb)).catch(
      () => {
        throw new NotFoundError(`no bundle at ${where}`);
      },
    );
    if (st.isDirectory()) throw new UsageError(`${where} is a directory`, 'name a bundle file in it');
    const bounds = range ? byteBounds(range) : {};
    if (!bounds) return { stream: Readable.from([]), location: where, size: st.size };
    const stream: Readable = sftp.createReadStream(p, { highWaterMark: 1 << 20, ...bounds });
    // Once every byte has been read, the stream still closes its handle: a connection closed
    // meanwhile fails that, which is nothing to the reader (and must not be an uncaught error).
    stream.once('end', () => stream.on('error', () => {}));
    return { stream, location: where, size: st.size };
  }

  /** The bundles (`*.tar`, not temporaries) in this directory on the remote host. */
  async list(): Promise<BundleInfo[]> {
    const list = await this.listing(await this.sftp());
    return list
      .filter((e) => isBundleName(e.filename) && e.attrs.isFile())
      .map((e) => ({
        name: e.filename,
        location: this.describe(e.filename),
        size: e.attrs.size,
        mtime: new Date(e.attrs.mtime * 1000),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async stat(name: string): Promise<BundleInfo | undefined> {
    const sftp = await this.sftp();
    const st = await call<Attrs>(`stat ${this.describe(name)}`, (cb) => sftp.stat(this.at(name), cb)).catch((err) => {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    });
    if (!st?.isFile()) return undefined;
    return { name, location: this.describe(name), size: st.size, mtime: new Date(st.mtime * 1000) };
  }

  /** Remove one bundle of this store. */
  async remove(name: string): Promise<void> {
    checkBundleName(name);
    const sftp = await this.sftp();
    await call<void>(`remove ${this.describe(name)}`, (cb) => sftp.unlink(this.at(name), cb));
  }

  async rename(name: string, to: string): Promise<void> {
    checkBundleName(name);
    checkBundleName(to);
    const sftp = await this.sftp();
    const from = this.at(name);
    const dest = this.at(to);
    const what = `rename ${this.describe(name)}`;
    await call<void>(what, (cb) => sftp.ext_openssh_rename(from, dest, cb)).catch(async () => {
      await call<void>(what, (cb) => sftp.rename(from, dest, cb));
    });
  }

  async close(): Promise<void> {}
}

/** `ssh://[user@]host[:port]` of an ssh:// URL (no password, no path). */
function sshBase(url: string): string {
  const u = new URL(url);
  return `ssh://${u.username ? u.username + '@' : ''}${u.host}`;
}

/** An ssh:// URL naming one bundle, as the URL of its directory and the bundle's name. */
export function splitSshUrl(url: string): { store: string; name: string } {
  const loc = parseSshLocation(url);
  const p = path.normalize(loc.path).replace(/(.)\/+$/, '$1');
  const u = new URL(url);
  const auth = u.username ? `${u.username}${u.password ? ':' + u.password : ''}@` : '';
  return { store: `ssh://${auth}${u.host}${encodeURI(path.dirname(p))}`, name: path.basename(p) };
}

/**
 * @deprecated An ssh:// bundle location as a Transport; use the registry (writeTarget/readTarget
 * in registry.ts). Kept so that code written against it goes on working.
 */
export class SftpTransport extends StoreTarget {
  constructor(url: string, pool: SshPool) {
    parseSshLocation(url);
    super(redactUrl(url), {
      write: () => {
        if (!url.endsWith('.tar')) return { store: new SftpStore(url, pool) };
        const s = splitSshUrl(url);
        return { store: new SftpStore(s.store, pool), name: s.name };
      },
      read: () => {
        const s = splitSshUrl(url);
        return { store: new SftpStore(s.store, pool), name: s.name };
      },
    });
  }
}
