/**
 * The catalogue of a store: the bundles in a directory, here or on another host (ssh://, over
 * SFTP), each described from its manifest alone. Only the first member is read (the file is
 * opened, the manifest parsed, the file closed), so listing a store of large bundles is quick. A
 * file that is not a readable bundle is listed with the reason, never dropped and never fatal.
 */
import { createReadStream } from 'node:fs';
import { PassphraseError, readEncHeader } from '../bundle/crypto.js';
import type { SshPool } from '../ssh/client.js';
import { SftpTransport } from './sftp.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BundleReader } from '../bundle/reader.js';
import type { Manifest } from '../bundle/manifest.js';
import { NotFoundError, toFerryError, UsageError } from '../errors.js';
import { TEMP_PREFIX } from './local.js';
import { acquireStoreLock, type LockOptions, type StoreLock } from './lock.js';

export interface CatalogEntry {
  /** Absolute path of the file. */
  bundle: string;
  /** Manifest createdAt (ISO 8601, UTC). */
  created?: string;
  /** Container names, in the manifest's order. */
  containers?: string[];
  /** Size of the file. */
  bytes: number;
  /** How images are stored: "archive" (docker save inside the bundle); registry mode comes later. */
  imageMode?: string;
  /** Codec of the volume/bind members (of the image member when there are none). */
  compression?: string;
  encrypted?: boolean;
  ferryVersion?: string;
  formatVersion?: number;
  /** Why the file could not be read as a bundle. */
  error?: string;
  /** The parsed manifest (not printed by `ferry ls --json`). */
  manifest?: Manifest;
  /** File modification time, used to order unreadable files. */
  mtime: string;
}

/** The plaintext facts of an encrypted bundle's header (no passphrase needed), from its first bytes. */
async function encryptedFacts(stream: Readable): Promise<{ createdAt?: string; containers?: string[] } | undefined> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of stream) {
      chunks.push(c as Buffer);
      n += (c as Buffer).length;
      if (n >= 8192) break;
    }
  } finally {
    stream.destroy();
  }
  const h = readEncHeader(Buffer.concat(chunks, n));
  return h ? (h.meta ?? {}) : undefined;
}

/**
 * The entry for a bundle whose manifest could not be read. Encrypted, without (or with another)
 * passphrase: what its header says in the clear. Otherwise the reason.
 */
async function unreadableEntry(
  base: { bundle: string; bytes: number; mtime: string },
  err: unknown,
  head: () => Promise<Readable>,
): Promise<CatalogEntry> {
  const facts =
    err instanceof PassphraseError
      ? await head()
          .then(encryptedFacts)
          .catch(() => undefined)
      : undefined;
  if (facts?.createdAt && facts.containers)
    return {
      ...base,
      created: facts.createdAt,
      containers: facts.containers,
      imageMode: '?',
      compression: '?',
      encrypted: true,
    };
  return {
    ...base,
    error: toFerryError(err).message,
    ...(facts || err instanceof PassphraseError ? { encrypted: true } : {}),
  };
}

/** The compression of a bundle as one word: the codec(s) of its data members. */
export function bundleCompression(m: Manifest): string {
  const data = m.members.filter((x) => x.kind === 'volume' || x.kind === 'bind');
  const pick = data.length ? data : m.members.filter((x) => x.kind === 'image');
  const codecs = [...new Set(pick.map((x) => x.codec))];
  return codecs.length ? codecs.join(',') : 'none';
}

export function imageMode(m: Manifest): string {
  const v = (m as unknown as Record<string, unknown>).imageMode;
  return typeof v === 'string' && v ? v : 'archive';
}

export function isEncrypted(m: Manifest): boolean {
  return (m as unknown as Record<string, unknown>).encrypted === true;
}

/** Describe one file from its manifest; a file that is not a readable bundle gets `error`. */
export async function describeBundle(
  file: string,
  passphrase: string | undefined = process.env.FERRY_PASSPHRASE,
): Promise<CatalogEntry> {
  const abs = path.resolve(file);
  let bytes = 0;
  let mtime = new Date(0).toISOString();
  try {
    const st = await fs.stat(abs);
    bytes = st.size;
    mtime = st.mtime.toISOString();
  } catch (err) {
    return { bundle: abs, bytes, mtime, error: toFerryError(err).message };
  }
  return describeOpened(
    { bundle: abs, bytes, mtime },
    async () => createReadStream(abs, { highWaterMark: 64 * 1024 }),
    passphrase,
  );
}

/**
 * Describe one bundle from its manifest: open it, parse the first member, close it, reading
 * nothing more. A bundle that cannot be read gets `error` (see unreadableEntry).
 */
async function describeOpened(
  base: { bundle: string; bytes: number; mtime: string },
  open: () => Promise<Readable>,
  passphrase?: string,
): Promise<CatalogEntry> {
  try {
    const reader = await BundleReader.open(await open(), base.bundle, { passphrase });
    reader.close();
    const m = reader.manifest;
    if (reader.encryption) (m as unknown as Record<string, unknown>).encrypted = true;
    return {
      ...base,
      created: m.createdAt,
      containers: m.containers.map((c) => c.spec.name),
      imageMode: imageMode(m),
      compression: bundleCompression(m),
      encrypted: isEncrypted(m),
      ferryVersion: m.ferryVersion,
      formatVersion: m.formatVersion,
      manifest: m,
    };
  } catch (err) {
    return unreadableEntry(base, err, open);
  }
}

/** The time a catalogue entry sorts by: its manifest's createdAt, else the file's mtime. */
export function entryTime(e: CatalogEntry): number {
  const t = e.created ? Date.parse(e.created) : NaN;
  return Number.isNaN(t) ? Date.parse(e.mtime) : t;
}

/** The `*.tar` files of a store directory (hidden files, temporaries and the lock are skipped). */
export async function storeFiles(dir: string): Promise<string[]> {
  const abs = path.resolve(dir);
  const st = await fs.stat(abs).catch(() => undefined);
  if (!st) throw new NotFoundError(`no store at ${abs}`, 'give the directory that backups are written to');
  if (!st.isDirectory())
    throw new UsageError(
      `${abs} is not a directory`,
      'give a store (a directory of bundles); for one bundle use `ferry inspect`',
    );
  const out: string[] = [];
  for (const d of await fs.readdir(abs, { withFileTypes: true })) {
    if (d.name.startsWith('.') || d.name.startsWith(TEMP_PREFIX)) continue;
    if (!d.name.endsWith('.tar')) continue;
    if (!d.isFile() && !d.isSymbolicLink()) continue;
    out.push(path.join(abs, d.name));
  }
  return out;
}

/** A choice of a store's bundles by file name; absent: all of them. */
export type NameFilter = (name: string) => boolean;

/** Every bundle of a store (or those whose file name `only` takes), oldest first. */
export async function listStore(
  dir: string,
  passphrase: string | undefined = process.env.FERRY_PASSPHRASE,
  only?: NameFilter,
): Promise<CatalogEntry[]> {
  const entries: CatalogEntry[] = [];
  for (const f of await storeFiles(dir))
    if (!only || only(path.basename(f))) entries.push(await describeBundle(f, passphrase));
  entries.sort((a, b) => entryTime(a) - entryTime(b) || a.bundle.localeCompare(b.bundle));
  return entries;
}

/** What `ferry ls --json` prints for an entry. */
export function catalogJson(e: CatalogEntry): Record<string, unknown> {
  if (e.error) return { bundle: e.bundle, bytes: e.bytes, error: e.error };
  return {
    bundle: e.bundle,
    created: e.created,
    containers: e.containers,
    bytes: e.bytes,
    imageMode: e.imageMode,
    compression: e.compression,
    encrypted: e.encrypted,
    ferryVersion: e.ferryVersion,
    formatVersion: e.formatVersion,
  };
}

/** The name of an environment entry ("PASSWORD=x" -> "PASSWORD"). */
export function envName(entry: string): string {
  const i = entry.indexOf('=');
  return i < 0 ? entry : entry.slice(0, i);
}

/**
 * A copy of a manifest safe to print: every environment entry reduced to its name, since values
 * are often secrets. The manifest itself is not changed.
 */
export function redactManifest(m: Manifest): Manifest {
  const copy = JSON.parse(JSON.stringify(m)) as Manifest;
  for (const c of copy.containers) {
    const cfg = c.spec?.config as { Env?: unknown } | undefined;
    if (cfg && Array.isArray(cfg.Env)) cfg.Env = cfg.Env.map((e: unknown) => (typeof e === 'string' ? envName(e) : e));
  }
  return copy;
}

/** Every bundle of a store on another host (ssh://host/dir), from their manifests, oldest first. */
export async function listRemoteStore(
  url: string,
  pool: SshPool,
  passphrase?: string,
  only?: NameFilter,
): Promise<CatalogEntry[]> {
  const entries: CatalogEntry[] = [];
  for (const f of await new SftpTransport(url, pool).listBundles()) {
    if (only && !only(f.url.slice(f.url.lastIndexOf('/') + 1))) continue;
    const open = async () => (await new SftpTransport(f.url, pool).openBundle()).stream;
    entries.push(
      await describeOpened({ bundle: f.url, bytes: f.size, mtime: f.mtime.toISOString() }, open, passphrase),
    );
  }
  entries.sort((a, b) => entryTime(a) - entryTime(b) || a.bundle.localeCompare(b.bundle));
  return entries;
}

/** A store, local or over SFTP, as ls and prune see it. */
export interface Store {
  /** The directory (absolute) or ssh:// URL, for messages. */
  readonly where: string;
  /** Fails (not found, not a directory) unless the store is there. */
  check(): Promise<void>;
  /** Every bundle (or those whose file name `only` takes), oldest first. */
  list(only?: NameFilter): Promise<CatalogEntry[]>;
  lock(opts: LockOptions): Promise<StoreLock>;
  /** Remove one bundle that list() gave. */
  remove(bundle: string): Promise<void>;
  /** Whether it is there and a directory (a store, not one bundle). */
  isDirectory(): Promise<boolean>;
  /** Where each of its bundles is (`*.tar`, readable or not; no temporaries), in name order. */
  bundles(): Promise<string[]>;
  /** A bundle of it, as a stream. */
  open(bundle: string): Promise<Readable>;
}

export function openStore(store: string, deps: { ssh?: () => SshPool; passphrase?: string }): Store {
  if (store.startsWith('ssh://')) {
    if (!deps.ssh) throw new UsageError(`${store}: ssh stores need an SSH session`);
    const pool = deps.ssh();
    const t = new SftpTransport(store, pool);
    return {
      where: store,
      check: async () => void (await t.listBundles()),
      list: (only) => listRemoteStore(store, pool, deps.passphrase, only),
      lock: (opts) => t.lockStore(opts),
      remove: (bundle) => t.removeBundle(bundle),
      isDirectory: () => t.isDirectory(),
      bundles: async () => (await t.listBundles()).map((b) => b.url).sort(),
      open: async (bundle) => (await new SftpTransport(bundle, pool).openBundle()).stream,
    };
  }
  const dir = path.resolve(store);
  return {
    where: dir,
    check: async () => void (await storeFiles(dir)),
    list: (only) => listStore(dir, deps.passphrase, only),
    lock: (opts) => acquireStoreLock(dir, opts),
    remove: (bundle) => fs.rm(bundle),
    isDirectory: async () => !!(await fs.stat(dir).catch(() => undefined))?.isDirectory(),
    bundles: async () => (await storeFiles(dir)).sort(),
    open: async (bundle) => createReadStream(bundle, { highWaterMark: 1 << 20 }),
  };
}
