/**
 * One lock per store (a directory of bundles): the file `<store>/.ferry.lock`, created with
 * O_EXCL, holding the pid and host name of its owner. It is held only for short critical
 * sections (choosing a bundle's name and creating its temporary file; pruning), so that two
 * backups can write into one store at the same time while prune never races with them.
 *
 * A lock whose owner ran on this host and whose pid no longer exists is stale and is taken
 * over. Its holder touches it every LOCK_REFRESH_MS while it holds it, so a lock of another host
 * that nobody has touched for FOREIGN_STALE_MS was left by a run that died there (a crashed
 * host): it is taken over too, with no one at the store at 3 a.m. to remove it by hand. Taking over is itself serialised by a second O_EXCL file (`.ferry.lock.takeover`), so two
 * runs that find the same stale lock cannot both remove it and then each remove the other's.
 *
 * The store is a LockDir: a local directory (localLockDir), or one on another host over SFTP
 * (sftp.ts, with SSH_FXF_EXCL, which OpenSSH's sftp-server maps to O_EXCL).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EXIT, FerryError, toFerryError } from '../errors.js';
import { sleep } from '../util/sleep.js';

export const LOCK_FILE = '.ferry.lock';
const TAKEOVER_FILE = '.ferry.lock.takeover';
/** A lock file without readable content is the trace of a run that died between creating and writing it. */
const UNREADABLE_STALE_MS = 10_000;
/** A takeover file is held for a few file operations; older than this, its owner died. */
const TAKEOVER_STALE_MS = 30_000;
/** How often a held lock is touched. */
export const LOCK_REFRESH_MS = 60_000;
/** A lock of another host untouched this long is stale (well past LOCK_REFRESH_MS: clocks differ). */
export const FOREIGN_STALE_MS = 15 * 60_000;

export const DEFAULT_LOCK_TIMEOUT_S = 60;

export interface LockOptions {
  /** How long to wait for another run's lock; 0 tries once. */
  timeoutMs: number;
  /** Poll interval while waiting. */
  pollMs?: number;
  /** Called once when the lock is busy and we start waiting. */
  onWait?: (message: string) => void;
  /** Stop waiting when aborted (SIGINT). */
  signal?: AbortSignal;
  /** What holds the lock, recorded in it (for messages). */
  purpose?: string;
  /** How often the held lock is touched (default LOCK_REFRESH_MS). */
  refreshMs?: number;
}

export interface LockInfo {
  pid: number;
  hostname: string;
  token: string;
  since: string;
  purpose?: string;
}

/** The store is locked by another ferry run for longer than --lock-timeout. */
export class LockedError extends FerryError {
  constructor(message: string, hint?: string) {
    super('LOCKED', EXIT.CONFLICT, message, { hint });
  }
}

export interface StoreLock {
  readonly path: string;
  readonly info: LockInfo;
  release(): Promise<void>;
}

export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The few file operations the lock needs, in one store directory. */
export interface LockDir {
  /** The directory, for messages. */
  readonly name: string;
  /** Where `file` (a name in the directory) is, for messages. */
  where(file: string): string;
  /** Create `file` exclusively and write `content` into it; false when it already exists. */
  create(file: string, content: string): Promise<boolean>;
  /** Its content and modification time, or undefined when there is none. */
  read(file: string): Promise<{ raw: string; mtimeMs: number } | undefined>;
  /** Remove `file`; no error when it is gone already. */
  remove(file: string): Promise<void>;
  /** Set `file`'s modification time to now. */
  touch(file: string): Promise<void>;
}

export function localLockDir(dir: string): LockDir {
  return {
    name: dir,
    where: (file) => path.join(dir, file),
    async create(file, content) {
      let fh: fs.FileHandle;
      try {
        fh = await fs.open(path.join(dir, file), 'wx', 0o644);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw toFerryError(err);
      }
      try {
        await fh.writeFile(content);
      } finally {
        await fh.close();
      }
      return true;
    },
    async read(file) {
      const p = path.join(dir, file);
      try {
        const [raw, st] = await Promise.all([fs.readFile(p, 'utf8'), fs.stat(p)]);
        return { raw, mtimeMs: st.mtimeMs };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    },
    remove: (file) => fs.rm(path.join(dir, file), { force: true }),
    touch: async (file) => {
      const now = new Date();
      await fs.utimes(path.join(dir, file), now, now);
    },
  };
}

async function readLock(
  dir: LockDir,
  file: string,
): Promise<{ raw: string; info?: LockInfo; mtimeMs: number } | undefined> {
  const got = await dir.read(file);
  if (!got) return undefined;
  try {
    const o = JSON.parse(got.raw) as LockInfo;
    if (o && Number.isInteger(o.pid) && typeof o.hostname === 'string' && typeof o.token === 'string')
      return { ...got, info: o };
  } catch {
    // unreadable: judged by its age below
  }
  return got;
}

/**
 * Stale: its owner ran on this host and is gone; or ran on another host and has not touched it
 * for FOREIGN_STALE_MS; or it was never written and is old. Pure but for the pid check.
 */
export function isStale(l: { info?: LockInfo; mtimeMs: number }, now = Date.now()): boolean {
  if (!l.info) return now - l.mtimeMs > UNREADABLE_STALE_MS;
  if (l.info.hostname !== os.hostname()) return now - l.mtimeMs > FOREIGN_STALE_MS;
  return !processAlive(l.info.pid);
}

function describeHolder(l: { info?: LockInfo }): string {
  if (!l.info) return 'an unknown process (the lock file is empty or unreadable)';
  return `pid ${l.info.pid} on ${l.info.hostname}${l.info.purpose ? ` (${l.info.purpose})` : ''} since ${l.info.since}`;
}

/** Remove a stale lock, unless someone else is doing so. True when the caller should retry at once. */
async function breakStale(dir: LockDir, staleRaw: string): Promise<boolean> {
  if (!(await dir.create(TAKEOVER_FILE, `${process.pid}\n`))) {
    const st = await dir.read(TAKEOVER_FILE).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > TAKEOVER_STALE_MS) await dir.remove(TAKEOVER_FILE);
    return false;
  }
  try {
    // Only the holder of the takeover file removes a lock it did not create, and a dead owner
    // cannot release it: so if the content is still the stale one, it is still the stale lock.
    const again = await readLock(dir, LOCK_FILE);
    if (again && again.raw === staleRaw) await dir.remove(LOCK_FILE);
    return true;
  } finally {
    await dir.remove(TAKEOVER_FILE);
  }
}

/** Take the lock of the store `dir`, waiting up to opts.timeoutMs for another run to release it. */
export async function acquireStoreLock(store: string | LockDir, opts: LockOptions): Promise<StoreLock> {
  const dir = typeof store === 'string' ? localLockDir(store) : store;
  const file = dir.where(LOCK_FILE);
  const info: LockInfo = {
    pid: process.pid,
    hostname: os.hostname(),
    token: randomBytes(8).toString('hex'),
    since: new Date().toISOString(),
    ...(opts.purpose ? { purpose: opts.purpose } : {}),
  };
  const content = JSON.stringify(info) + '\n';
  const deadline = Date.now() + Math.max(0, opts.timeoutMs);
  const poll = opts.pollMs ?? 100;
  let waited = false;
  for (;;) {
    if (opts.signal?.aborted) throw opts.signal.reason as Error;
    if (await dir.create(LOCK_FILE, content)) {
      // Touched while held, so that other hosts can tell it from one left by a run that died.
      const refresh = setInterval(() => void dir.touch(LOCK_FILE).catch(() => {}), opts.refreshMs ?? LOCK_REFRESH_MS);
      refresh.unref();
      return {
        path: file,
        info,
        async release() {
          clearInterval(refresh);
          const now = await readLock(dir, LOCK_FILE).catch(() => undefined);
          if (now?.info?.token === info.token) await dir.remove(LOCK_FILE);
        },
      };
    }
    const held = await readLock(dir, LOCK_FILE).catch(() => undefined);
    if (!held) continue; // released between our attempt and the read
    if (isStale(held)) {
      if (await breakStale(dir, held.raw)) continue;
    }
    if (Date.now() >= deadline) {
      throw new LockedError(
        `the store ${dir.name} is locked by another ferry run: ${describeHolder(held)}`,
        held.info && held.info.hostname !== os.hostname()
          ? `wait for it and retry, or raise --lock-timeout; a lock of another host that is not touched for ${FOREIGN_STALE_MS / 60_000} minutes is taken over (its run died); to go on now, if no ferry runs on ${held.info.hostname} any more, remove ${file}`
          : `wait for it and retry, or raise --lock-timeout (now ${Math.round(opts.timeoutMs / 1000)}s)`,
      );
    }
    if (!waited) {
      waited = true;
      opts.onWait?.(`waiting for the lock of ${dir.name}, held by ${describeHolder(held)}`);
    }
    await sleep(Math.min(poll + Math.floor(Math.random() * poll), Math.max(1, deadline - Date.now())), opts.signal);
  }
}

/** Run fn while holding the store's lock. */
export async function withStoreLock<T>(dir: string | LockDir, opts: LockOptions, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireStoreLock(dir, opts);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
