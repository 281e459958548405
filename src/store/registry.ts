/**
 * Stores by URL scheme: the one place that turns a location from the command line into a Store.
 * `-` is the stream store (stdout/stdin), `ssh://[user@]host[:port]/path` a directory over SFTP,
 * anything without a scheme a local path. A new kind of store registers its scheme here
 * (registerStore), and every command accepts it; see "Adding a store" in store.ts.
 */
import path from 'node:path';
import { UsageError } from '../errors.js';
import type { SshPool } from '../ssh/client.js';
import { EncryptedStore, type EncryptOptions } from './encrypted.js';
import { LocalStore } from './local.js';
import type { LockOptions } from './lock.js';
import { parseS3Url, S3Store, splitS3Url, type S3Settings } from './s3.js';
import { parseSshLocation, SftpStore, splitSshUrl } from './sftp.js';
import { redactUrl, type BundleMeta, type Store } from './store.js';
import { StreamStore } from './stream.js';
import { StoreTarget } from './target.js';

/** What stores may need from the run. */
export interface StoreDeps {
  /** The run's SSH connections (ssh:// stores). */
  ssh?: () => SshPool;
  /** The run's S3 settings (--s3-endpoint, --s3-path-style) for s3:// stores. */
  s3?: () => S3Settings;
}

/** How a store is opened. */
export interface StoreOptions {
  /** How create() waits for the store's lock (lockable stores), e.g. --lock-timeout, SIGINT. */
  lock?: Partial<LockOptions>;
  /** Encrypt the bundles written, decrypt those read (EncryptedStore). */
  encrypt?: EncryptOptions;
}

export interface StoreFactory {
  /** The store at `url`: a URL (or path) naming a directory, a prefix, a repository (or one that split() gave). */
  open(url: string, deps: StoreDeps, opts: StoreOptions): Store;
  /** Optional: reject (UsageError) a location as given on the command line that names nothing (`ssh://host/`). */
  check?(url: string): void;
  /** A URL naming one bundle, as the URL of its store and the bundle's name there. */
  split(url: string): { store: string; name: string };
  /** What its locations look like, for messages (`ssh://host/path`). */
  readonly usage: string;
}

/** The key of the stream store (`-`) and of plain paths (no scheme) in the registry. */
export const STREAM = '-';
export const PATH = '';

const factories = new Map<string, StoreFactory>();

/** Register the store of a URL scheme (`s3` for `s3://...`; or STREAM, PATH). A later registration replaces an earlier one. */
export function registerStore(scheme: string, factory: StoreFactory): void {
  factories.set(scheme.toLowerCase(), factory);
}

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

/** The factory for a location, or a UsageError naming what is supported. */
function factoryFor(url: string): StoreFactory {
  const f = lookup(url);
  f.check?.(url);
  return f;
}

function lookup(url: string): StoreFactory {
  const m = SCHEME.exec(url);
  const key = url === '-' ? STREAM : m ? m[1]!.toLowerCase() : PATH;
  const f = factories.get(key);
  if (f) return f;
  const kinds = [
    ...new Set([...factories.entries()].filter(([k]) => k !== PATH && k !== STREAM).map(([, v]) => v.usage)),
  ];
  throw new UsageError(
    `unsupported bundle location ${redactUrl(url)}`,
    `use a local path, - for stdout/stdin, or ${kinds.join(', or ')}`,
  );
}

function wrap(store: Store, opts: StoreOptions): Store {
  return opts.encrypt ? new EncryptedStore(store, opts.encrypt) : store;
}

/** The store at a location (a directory of bundles; `-` the stream). */
export function openStore(url: string, deps: StoreDeps = {}, opts: StoreOptions = {}): Store {
  return wrap(factoryFor(url).open(url, deps, opts), opts);
}

/** A location naming one bundle, as its store and its name there. */
export function openBundleAt(
  url: string,
  deps: StoreDeps = {},
  opts: StoreOptions = {},
): { store: Store; name: string } {
  const f = factoryFor(url);
  const s = f.split(url);
  return { store: wrap(f.open(s.store, deps, opts), opts), name: s.name };
}

/**
 * A location to write a bundle to: a file ending in .tar is that bundle (replaced atomically);
 * anything else is a store, in which a free name is chosen (`-` writes to stdout).
 */
export function writeTarget(
  url: string,
  deps: StoreDeps = {},
  opts: StoreOptions & { meta?: BundleMeta } = {},
): StoreTarget {
  const t = new StoreTarget(redactUrl(url), {
    write: () =>
      url !== '-' && url.endsWith('.tar') ? openBundleAt(url, deps, opts) : { store: openStore(url, deps, opts) },
    read: () => openBundleAt(url, deps, opts),
  });
  if (opts.meta) t.meta = opts.meta;
  void t.writeSide; // a location that is wrong fails here, before anything is done
  return t;
}

/** A location to read one bundle from (`-`: stdin). */
export function readTarget(url: string, deps: StoreDeps = {}, opts: StoreOptions = {}): StoreTarget {
  const t = new StoreTarget(redactUrl(url), {
    write: () => openBundleAt(url, deps, opts),
    read: () => openBundleAt(url, deps, opts),
  });
  void t.readSide;
  return t;
}

function sshPool(url: string, deps: StoreDeps): SshPool {
  if (!deps.ssh) throw new UsageError(`${redactUrl(url)}: ssh stores need an SSH session`);
  return deps.ssh();
}

registerStore(PATH, {
  usage: 'a local path',
  open: (p, _deps, opts) => new LocalStore(p, opts),
  split: (p) => ({ store: path.dirname(p), name: path.basename(p) }),
});

registerStore(STREAM, {
  usage: '-',
  open: () => new StreamStore(),
  split: () => ({ store: '-', name: '-' }),
});

registerStore('ssh', {
  usage: 'ssh://host/path',
  check: (url) => void parseSshLocation(url),
  open: (url, deps, opts) => new SftpStore(url, sshPool(url, deps), opts),
  split: (url) => splitSshUrl(url),
});

for (const scheme of ['s3', 's3+http', 's3+https'])
  registerStore(scheme, {
    usage: 's3://bucket/prefix (s3+http://host:port/bucket/prefix for another S3 server)',
    check: (url) => void parseS3Url(url),
    open: (url, deps, opts) => new S3Store(url, deps.s3?.() ?? {}, opts),
    split: (url) => splitS3Url(url),
  });
