/**
 * Bundles on another host over SFTP, on the run's one SSH connection to that host: written to a
 * hidden temporary name, fsynced (fsync@openssh.com), renamed into place (posix-rename), exactly
 * as a local store. `ssh://[user@]host[:port]/path`: a directory, or a file ending in .tar.
 */
import path from 'node:path/posix';
import type { Readable } from 'node:stream';
import type { SFTPWrapper } from 'ssh2';
import { IoError, NotFoundError, UsageError } from '../errors.js';
import type { SshPool } from '../ssh/client.js';
import { TEMP_PREFIX, TEMP_SUFFIX } from './local.js';
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
  if (u.protocol !== 'ssh:' || !u.hostname) throw new UsageError(`cannot parse ${url}`, 'use ssh://[user@]host[:port]/path');
  const p = decodeURIComponent(u.pathname);
  if (!p || p === '/') throw new UsageError(`${url} names no directory or file`, 'use ssh://host/backups or ssh://host/backups/web.tar');
  return { user: u.username ? decodeURIComponent(u.username) : undefined, host: u.hostname, port: u.port ? Number(u.port) : undefined, path: p };
}

function sftpError(err: Error & { code?: number }, what: string): Error {
  // SFTP status codes: 2 no such file, 3 permission denied, 4 failure (often: disk full)
  if (err.code === 2) return new NotFoundError(`${what}: no such file or directory`);
  if (err.code === 3) return new IoError(`${what}: permission denied`);
  return new IoError(`${what}: ${err.message}`, { cause: err });
}

function call<T>(what: string, fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(sftpError(err as Error, what)) : resolve(v as T))));
}

class SftpSink implements BundleSink {
  readonly seekable = true;
  private done = false;
  // Several writes in flight: one round trip per chunk would cap throughput by latency.
  private readonly writes = new PositionedWrites(
    (bufs, pos) => {
      const buf = Buffer.concat(bufs); // a copy, which ssh2 may keep while the write is under way
      return call<void>(`write ${this.location}`, (cb) => this.sftp.write(this.handle, buf, 0, buf.length, pos, cb as never));
    },
    16,
  );

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
    await call<void>(`fsync ${this.location}`, (cb) => (this.sftp as unknown as { ext_openssh_fsync(h: Buffer, cb: unknown): void }).ext_openssh_fsync(this.handle, cb)).catch(() => {});
    await call<void>(`close ${this.location}`, (cb) => this.sftp.close(this.handle, cb as never));
    await call<void>(`rename ${this.tempPath} to ${this.finalPath}`, (cb) => this.sftp.ext_openssh_rename(this.tempPath, this.finalPath, cb as never)).catch(async () => {
      await call<void>(`rename ${this.tempPath} to ${this.finalPath}`, (cb) => this.sftp.rename(this.tempPath, this.finalPath, cb as never));
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

  async createBundle(suggestedName: string): Promise<BundleSink> {
    const sftp = await this.sftp();
    let final: string;
    if (this.loc.path.endsWith('.tar')) {
      final = this.loc.path;
    } else {
      const st = await call<{ isDirectory(): boolean }>(`stat ${this.loc.path}`, (cb) => sftp.stat(this.loc.path, cb as never)).catch(() => undefined);
      if (!st) await call<void>(`mkdir ${this.loc.path}`, (cb) => sftp.mkdir(this.loc.path, { mode: 0o700 }, cb as never));
      else if (!st.isDirectory()) throw new UsageError(`${this.url} exists and is not a directory`);
      final = path.join(this.loc.path, suggestedName);
      const exists = await call(`stat ${final}`, (cb) => sftp.stat(final, cb as never)).then(() => true, () => false);
      if (exists) throw new IoError(`${final} already exists on ${this.loc.host}`, { hint: 'another backup started in the same second; retry' });
    }
    const temp = path.join(path.dirname(final), `${TEMP_PREFIX}${process.pid}-${path.basename(final)}${TEMP_SUFFIX}`);
    const handle = await call<Buffer>(`create ${temp}`, (cb) => sftp.open(temp, 'wx', { mode: 0o600 }, cb as never));
    return new SftpSink(sftp, handle, temp, final, `${this.base()}${final}`);
  }

  async openBundle(): Promise<{ stream: Readable; location: string; size?: number }> {
    const sftp = await this.sftp();
    const st = await call<{ size: number; isDirectory(): boolean }>(`stat ${this.url}`, (cb) => sftp.stat(this.loc.path, cb as never)).catch(() => {
      throw new NotFoundError(`no bundle at ${this.url}`);
    });
    if (st.isDirectory()) throw new UsageError(`${this.url} is a directory`, 'name a bundle file in it');
    const stream = sftp.createReadStream(this.loc.path, { highWaterMark: 1 << 20 } as never) as unknown as Readable;
    return { stream, location: this.url, size: st.size };
  }

  /** The bundles (`*.tar`, not temporaries) in this directory on the remote host. */
  async listBundles(): Promise<{ url: string; size: number; mtime: Date }[]> {
    const sftp = await this.sftp();
    const list = await call<{ filename: string; attrs: { size: number; mtime: number; isFile(): boolean } }[]>(`list ${this.url}`, (cb) =>
      sftp.readdir(this.loc.path, cb as never),
    );
    const base = this.url.replace(/\/+$/, '');
    return list
      .filter((e) => e.filename.endsWith('.tar') && !e.filename.startsWith('.') && e.attrs.isFile())
      .map((e) => ({ url: `${base}/${e.filename}`, size: e.attrs.size, mtime: new Date(e.attrs.mtime * 1000) }));
  }

  async close(): Promise<void> {}
}
