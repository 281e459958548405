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
import type { Readable } from 'node:stream';
import type { SFTPWrapper } from 'ssh2';
import { IoError, NotFoundError, UsageError } from '../errors.js';
import type { SshPool } from '../ssh/client.js';
import { acquireStoreLock, DEFAULT_LOCK_TIMEOUT_S, type LockDir, type LockOptions, type StoreLock } from './lock.js';
import { TEMP_RE, tempName, uniqueBundleName } from './local.js';
import { PositionedWrites } from './positioned.js';
import type { BundleSink, Transport } from './transport.js';

export interface SshLocation {
  user?: string;
  host: string;
  port?: number;
  path: string;
}

export function parseSshLocation(url: string): SshLocation {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`cannot parse ${url}`, 'use ssh://[user@]host[:port]/path');
  }
  if (u.protocol !== 'ssh:' || !u.hostname)
    throw new UsageError(`cannot parse ${url}`, 'use ssh://[user@]host[:port]/path');
  const p = decodeURIComponent(u.pathname);
  if (!p || p === '/')
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
        handle = await call<Buffer>(`create ${at(file)}`, (cb) =>
          sftp.open(at(file), 'wx', { mode: 0o644 }, cb as never),
        );
      } catch (err) {
        // SFTP v3 has no "already exists" status: an exclusive open that fails on a file that
        // is there failed because it is there.
        if (
          await call(`stat ${at(file)}`, (cb) => sftp.lstat(at(file), cb as never)).then(
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
      const raw = await call<Buffer>(`read ${at(file)}`, (cb) => sftp.readFile(at(file), cb as never)).catch((err) => {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      });
      return raw ? { raw: raw.toString('utf8'), mtimeMs: st.mtime * 1000 } : undefined;
    },
    async remove(file) {
      await call<void>(`remove ${at(file)}`, (cb) => sftp.unlink(at(file), cb as never)).catch((err) => {
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
    await call<void>(`fsync ${this.location}`, (cb) =>
      (this.sftp as unknown as { ext_openssh_fsync(h: Buffer, cb: unknown): void }).ext_openssh_fsync(this.handle, cb),
    ).catch(() => {});
    await call<void>(`close ${this.location}`, (cb) => this.sftp.close(this.handle, cb));
    await call<void>(`rename ${this.tempPath} to ${this.finalPath}`, (cb) =>
      this.sftp.ext_openssh_rename(this.tempPath, this.finalPath, cb as never),
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
    await call<void>('close', (cb) => this.sftp.close(this.handle, cb as never)).catch(() => {});
    await call<void>('unlink', (cb) => this.sftp.unlink(this.tempPath, cb as never)).catch(() => {});
  }
}

export class SftpTransport implements Transport {
  readonly rereadable = true;
  /** How createBundle waits for the store's lock (directory stores only). */
  lockOptions: LockOptions = { timeoutMs: DEFAULT_LOCK_TIMEOUT_S * 1000 };
  private readonly loc: SshLocation;
  constructor(
    private readonly url: string,
    private readonly pool: SshPool,
  ) {
    this.loc = parseSshLocation(url);
  }

  describe(): string {
    return this.url;
  }

  private async sftp(): Promise<SFTPWrapper> {
    const conn = await this.pool.get({ user: this.loc.user, host: this.loc.host, port: this.loc.port });
    return conn.sftp();
  }

  private base(): string {
    const u = new URL(this.url);
    return `ssh://${u.username ? u.username + '@' : ''}${u.host}`;
  }

  private dirPath(): string {
    return path.normalize(this.loc.path).replace(/(.)\/+$/, '$1');
  }

  /** The store directory's listing; NotFound or Usage when it is missing or not a directory. */
  private async listing(sftp: SFTPWrapper): Promise<{ filename: string; attrs: Attrs }[]> {
    const dir = this.dirPath();
    const st = await call<Attrs>(`stat ${this.url}`, (cb) => sftp.stat(dir, cb as never)).catch((err) => {
      if (err instanceof NotFoundError)
        throw new NotFoundError(`no store at ${this.url}`, 'give the directory that backups are written to');
      throw err;
    });
    if (!st.isDirectory())
      throw new UsageError(
        `${this.url} is not a directory`,
        'give a store (a directory of bundles); for one bundle use `ferry inspect`',
      );
    return call(`list ${this.url}`, (cb) => sftp.readdir(dir, cb as never));
  }

  /** Whether this location is a directory on the remote host. */
  async isDirectory(): Promise<boolean> {
    const sftp = await this.sftp();
    const st = await call<Attrs>(`stat ${this.url}`, (cb) => sftp.stat(this.dirPath(), cb as never)).catch(
      () => undefined,
    );
    return !!st?.isDirectory();
  }

  /** Take this store's lock (see lock.ts); the directory must exist. */
  async lockStore(opts: LockOptions): Promise<StoreLock> {
    const sftp = await this.sftp();
    await this.listing(sftp);
    return acquireStoreLock(sftpLockDir(sftp, this.dirPath(), this.base()), opts);
  }

  async createBundle(suggestedName: string): Promise<BundleSink> {
    const sftp = await this.sftp();
    if (this.loc.path.endsWith('.tar')) return this.openTemp(sftp, this.loc.path);
    const dir = this.dirPath();
    const st = await call<Attrs>(`stat ${this.loc.path}`, (cb) => sftp.stat(dir, cb as never)).catch(() => undefined);
    if (!st) await call<void>(`mkdir ${this.loc.path}`, (cb) => sftp.mkdir(dir, { mode: 0o700 }, cb as never));
    else if (!st.isDirectory()) throw new UsageError(`${this.url} exists and is not a directory`);
    // As in a local store: choose a free name and claim it with a temporary under the lock.
    const lock = await acquireStoreLock(sftpLockDir(sftp, dir, this.base()), {
      ...this.lockOptions,
      purpose: this.lockOptions.purpose ?? 'backup: choosing a bundle name',
    });
    try {
      const list = await this.listing(sftp);
      for (const n of staleRemoteTemps(list)) {
        await call<void>(`remove ${n}`, (cb) => sftp.unlink(path.join(dir, n), cb as never)).catch(() => {});
      }
      const name = uniqueBundleName(
        list.map((e) => e.filename),
        suggestedName,
      );
      return await this.openTemp(sftp, path.join(dir, name));
    } finally {
      await lock.release();
    }
  }

  private async openTemp(sftp: SFTPWrapper, final: string): Promise<BundleSink> {
    const temp = path.join(path.dirname(final), tempName(process.pid, path.basename(final)));
    const handle = await call<Buffer>(`create ${temp}`, (cb) => sftp.open(temp, 'wx', { mode: 0o600 }, cb as never));
    return new SftpSink(sftp, handle, temp, final, `${this.base()}${final}`);
  }

  async openBundle(): Promise<{ stream: Readable; location: string; size?: number }> {
    const sftp = await this.sftp();
    const st = await call<{ size: number; isDirectory(): boolean }>(`stat ${this.url}`, (cb) =>
      sftp.stat(this.loc.path, cb as never),
    ).catch(() => {
      throw new NotFoundError(`no bundle at ${this.url}`);
    });
    if (st.isDirectory()) throw new UsageError(`${this.url} is a directory`, 'name a bundle file in it');
    const stream = sftp.createReadStream(this.loc.path, { highWaterMark: 1 << 20 }) as unknown as Readable;
    return { stream, location: this.url, size: st.size };
  }

  /** The bundles (`*.tar`, not temporaries) in this directory on the remote host. */
  async listBundles(): Promise<{ url: string; size: number; mtime: Date }[]> {
    const list = await this.listing(await this.sftp());
    const base = `${this.base()}${this.dirPath()}`.replace(/\/+$/, '');
    return list
      .filter((e) => e.filename.endsWith('.tar') && !e.filename.startsWith('.') && e.attrs.isFile())
      .map((e) => ({ url: `${base}/${e.filename}`, size: e.attrs.size, mtime: new Date(e.attrs.mtime * 1000) }));
  }

  /** Remove one bundle of this store (a URL listBundles gave). */
  async removeBundle(url: string): Promise<void> {
    const sftp = await this.sftp();
    const p = parseSshLocation(url).path;
    if (path.dirname(p) !== this.dirPath()) throw new UsageError(`${url} is not in the store ${this.url}`);
    await call<void>(`remove ${url}`, (cb) => sftp.unlink(p, cb));
  }

  /** Rename this bundle to its name plus `suffix` (a quarantine); returns the new URL. */
  async renameBundle(suffix: string): Promise<string> {
    const sftp = await this.sftp();
    const to = `${this.loc.path}${suffix}`;
    await call<void>(`rename ${this.url}`, (cb) => sftp.ext_openssh_rename(this.loc.path, to, cb as never)).catch(
      async () => {
        await call<void>(`rename ${this.url}`, (cb) => sftp.rename(this.loc.path, to, cb));
      },
    );
    return `${this.url}${suffix}`;
  }

  async close(): Promise<void> {}
}
