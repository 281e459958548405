/**
 * Where bundles are kept: one interface, `Store`, for every kind of storage (a local directory,
 * a directory on another host over SFTP, stdout/stdin, the encrypting wrapper, and next object
 * stores and restic repositories). A store holds named bundles; what a store can do beyond
 * writing one bundle and reading it back is declared in its `capabilities`, and callers ask
 * those, never the class.
 *
 * Adding a store
 * --------------
 * 1. Implement `Store` (this file) in `src/store/<kind>.ts`:
 *    - `capabilities`: declare exactly what it does (see StoreCapabilities). Claim nothing it
 *      does not do: the writer patches headers only where `seekable` (each sink's own
 *      `seekable` and `rewind` must agree with the flags), restore reads a bundle twice only
 *      where `rereadable`, backup verifies what it wrote only where `rereadable` and compares
 *      with earlier bundles only where `listable`, prune and create() lock only where `lockable`.
 *    - `create(name, opts)`: a BundleSink whose bytes appear under their final name only at
 *      commit(), complete, and never (abort) otherwise. Without `opts.replace`, never overwrite
 *      an existing bundle: choose a free name near the one asked for (`uniqueBundleName`), under
 *      the store's lock where the store is lockable; the sink's `name` says which.
 *    - `open(name, range?)`, and, where `listable`, `list`, `stat`, `remove`, `rename`; `lock`
 *      where `lockable` (lock.ts does the protocol: give it a LockDir with an exclusive create).
 *      An operation a store cannot do throws a UsageError saying so.
 *    - `describe(name?)`: where it is, for messages, with credentials (URL passwords, keys,
 *      tokens in a query) left out: it is printed and written to JSON output.
 * 2. Register its URL scheme in registry.ts, next to `ssh`:
 *
 *      registerStore('s3', {
 *        usage: 's3://bucket/prefix',                 // for the "unsupported location" hint
 *        check: (url) => ...,                         // optional: reject a URL naming nothing
 *        open: (url, deps, opts) => new S3Store(url, deps, opts),  // opts.lock: create()'s lock wait
 *        split: (url) => ({ store: 's3://bucket/prefix', name: 'x.tar' }),  // a URL naming one bundle
 *      });
 *
 *    `open` gets the URL of a directory/prefix/repository (or one that `split` returned);
 *    `split` cuts a URL naming one bundle into its store's URL and the bundle's name. The
 *    registry is the only place that parses a scheme: every command then accepts the new one
 *    (backup -o, restore, inspect, verify, drill, ls, prune), `--encrypt` wraps it
 *    (EncryptedStore) and `-o <url>.tar` writes one exact name in it (create with `replace`).
 *    What a store needs from the run (an SSH pool, credentials) comes in StoreDeps.
 * 3. Run the conformance suite against it: a test file that calls
 *
 *      describeStoreConformance('s3', async () => ({ store, cleanup, residue, plantStaleLock }),
 *        { capabilities: { ...what it declares } });
 *
 *    from test/unit/store-conformance.ts (see test/unit/store-local.test.ts; a store that needs
 *    a server goes in test/e2e/, as test/e2e/store-sftp.test.ts does with the lab's sshd). The
 *    suite checks that the store declares exactly those capabilities, runs the cases of each
 *    capability it has (byte-identical round trip, abort leaves nothing, no overwrite, list sees
 *    only complete bundles, remove/rename, lock exclusion and stale takeover, writeAt, rewind,
 *    range reads, rereads), and checks that it refuses the operations of those it has not.
 *    Run it with `npx vitest run --project unit test/unit/store-` (e2e ones: `npm run build &&
 *    npx vitest run --project e2e test/e2e/store-<kind>.test.ts`).
 */
import type { Readable } from 'node:stream';
import { UsageError } from '../errors.js';
import type { LockOptions, StoreLock } from './lock.js';
import type { BundleSink } from './transport.js';

export type { BundleSink } from './transport.js';

/** What a store can do beyond writing a bundle once and reading it back once. */
export interface StoreCapabilities {
  /**
   * A sink's writeAt() patches bytes already written (the writer writes each member as one tar
   * entry and patches its header with the size at the end). When false, writeAt() rejects and the
   * writer cuts members into parts (a pipe, an encrypted stream, an object upload).
   */
  readonly seekable: boolean;
  /** open() with a range reads just those bytes of a bundle (else it rejects a range). */
  readonly rangeReads: boolean;
  /**
   * open() can be called again on the same bundle for a second, independent read of the same
   * bytes (also while the first is under way). When false (a pipe), a second open() rejects
   * rather than giving other bytes.
   */
  readonly rereadable: boolean;
  /**
   * A sink has rewind(position): everything written from `position` on is forgotten and the
   * next write goes there (a member whose source failed half-way is written again). When false,
   * sinks have no rewind.
   */
  readonly rewindable: boolean;
  /**
   * lock() gives the store's one exclusive lock (lock.ts): a second lock() waits or fails with
   * LockedError until it is released; one left by a run that died is taken over. create()
   * without `replace` chooses its name under it. When false, lock() rejects.
   */
  readonly lockable: boolean;
  /**
   * The store holds bundles by name: list() gives every complete one (never one being written
   * or aborted), and stat(), remove() and rename() work. When false (a stream), they reject.
   */
  readonly listable: boolean;
  /**
   * commit() is atomic: a bundle is at its final name whole or not at all, also when the run is
   * killed half-way (temporary name, then rename). When false (a stream), a reader may see the
   * first bytes of a bundle that is never finished (and must check its trailer, as ferry does).
   */
  readonly atomicCommit: boolean;
  /**
   * Once commit() resolves, the bundle survives a crash or power loss of the store's host: its
   * data and the rename are fsynced. False where that is best effort (SFTP's fsync extension is
   * optional, and it cannot sync the directory).
   */
  readonly durableCommit: boolean;
}

/** What create() may be told. */
export interface CreateOptions {
  /**
   * Write exactly at `name`, replacing a bundle there atomically at commit() (an operator named
   * the file). The store's directory must exist then. Without it a free name near `name` is
   * chosen (`-2`, `-3`, ...; under the lock where lockable) and nothing is ever overwritten; the
   * store's directory is created when missing.
   */
  replace?: boolean;
  /** What the bundle holds, for stores that keep it beside the data (the encrypted store's clear header). */
  meta?: BundleMeta;
}

export interface BundleMeta {
  createdAt: string;
  containers: string[];
}

/** A bundle of a store, as list() and stat() see it. */
export interface BundleInfo {
  /** Its name in the store. */
  name: string;
  /** Where it is (a path or URL), for messages; as describe(name). */
  location: string;
  /** Bytes stored (for an encrypted store: of the ciphertext). */
  size: number;
  mtime: Date;
}

export interface OpenedBundle {
  stream: Readable;
  /** Where it is, for messages. */
  location: string;
  /** Bytes stored, when known. */
  size?: number;
}

/** Bytes of a bundle to read: from `offset`, `length` of them (to the end when absent). */
export interface ByteRange {
  offset: number;
  length?: number;
}

export interface Store {
  readonly capabilities: StoreCapabilities;
  /** Where the store is (or, with a name, one bundle of it), for messages; credentials left out. */
  describe(name?: string): string;
  /** Whether the store is there (its directory exists and is one); false for a stream. */
  exists(): Promise<boolean>;
  /** Start writing a bundle; see CreateOptions. Nothing is at its final name until the sink's commit(). */
  create(name: string, opts?: CreateOptions): Promise<BundleSink>;
  /** Read a bundle (NotFoundError when there is none), whole or, where rangeReads, a range of it. */
  open(name: string, range?: ByteRange): Promise<OpenedBundle>;
  /**
   * Every complete bundle (`*.tar`; hidden files, temporaries and the lock left out), in name
   * order. NotFoundError when the store is not there, UsageError when it is not a directory.
   */
  list(): Promise<BundleInfo[]>;
  /** One bundle, or undefined when there is none by that name. */
  stat(name: string): Promise<BundleInfo | undefined>;
  /** Remove a bundle; NotFoundError when there is none. */
  remove(name: string): Promise<void>;
  /** Give a bundle another name in the store (a quarantine: `<name>.corrupt`), replacing one there. */
  rename(name: string, to: string): Promise<void>;
  /** Take the store's lock (the store must exist). */
  lock(opts: LockOptions): Promise<StoreLock>;
  close(): Promise<void>;
}

/** Whether a file name in a store directory is a bundle to list: `*.tar`, not hidden, not a temporary. */
export function isBundleName(name: string): boolean {
  return name.endsWith('.tar') && !name.startsWith('.');
}

/** A bundle name to write, remove or rename: one name in the store, never a path out of it. */
export function checkBundleName(name: string): string {
  if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0'))
    throw new UsageError(`${JSON.stringify(name)} is not a bundle name`, 'a bundle name is one file name, without /');
  return name;
}

/** A store's capabilities with every flag false (a starting point for stores that add some). */
export const NO_CAPABILITIES: StoreCapabilities = Object.freeze({
  seekable: false,
  rangeReads: false,
  rereadable: false,
  rewindable: false,
  lockable: false,
  listable: false,
  atomicCommit: false,
  durableCommit: false,
});

/** `ssh://user:secret@host/x?token=y` -> `ssh://user@host/x`: a URL's password and query left out. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url;
  }
  if (!u.password && !u.search) return url;
  u.password = '';
  u.search = '';
  return u.toString();
}
