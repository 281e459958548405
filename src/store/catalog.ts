/**
 * The catalogue of a store (any Store that is listable: a directory here or on another host),
 * its bundles each described from its manifest alone. Only the first member is read (the file is
 * opened, the manifest parsed, the file closed), so listing a store of large bundles is quick. A
 * file that is not a readable bundle is listed with the reason, never dropped and never fatal.
 */
import { IdentityError, readAgeHeader } from '../bundle/age.js';
import { PassphraseError, readEncHeader } from '../bundle/crypto.js';
import type { Readable } from 'node:stream';
import { BundleReader } from '../bundle/reader.js';
import type { Manifest } from '../bundle/manifest.js';
import { toFerryError, type FerryError } from '../errors.js';
import type { Store } from './store.js';

export interface CatalogEntry {
  /** Where the bundle is: the absolute path of the file, or its URL. */
  bundle: string;
  /** Its name in its store. */
  name: string;
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
  /** A signed bundle: the key its manifest declares (the signature itself is checked by verify and restore --trust). */
  signer?: { key: string; fingerprint: string };
  /** Why the file could not be read as a bundle. */
  error?: string;
  /** The same, as the error it was (its code and hint). */
  failure?: FerryError;
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
      if (n >= 16384) break;
    }
  } finally {
    stream.destroy();
  }
  const head = Buffer.concat(chunks, n);
  const h = readEncHeader(head) ?? readAgeHeader(head);
  return h ? (h.meta ?? {}) : undefined;
}

/**
 * The entry for a bundle whose manifest could not be read. Encrypted, without (or with another)
 * passphrase: what its header says in the clear. Otherwise the reason.
 */
async function unreadableEntry(
  base: { bundle: string; name: string; bytes: number; mtime: string },
  err: unknown,
  head: () => Promise<Readable>,
): Promise<CatalogEntry> {
  const locked = err instanceof PassphraseError || err instanceof IdentityError;
  const facts = locked
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
  const failure = toFerryError(err);
  return {
    ...base,
    error: failure.message,
    failure,
    ...(facts || locked ? { encrypted: true } : {}),
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
  return m.imageMode ?? 'archive';
}

export function isEncrypted(m: Manifest): boolean {
  return (m as unknown as Record<string, unknown>).encrypted === true;
}

/**
 * Describe one bundle from its manifest: open it, parse the first member, close it, reading
 * nothing more. A bundle that cannot be read gets `error` (see unreadableEntry).
 */
async function describeOpened(
  base: { bundle: string; name: string; bytes: number; mtime: string },
  open: () => Promise<Readable>,
  passphrase?: string,
  identities?: string[],
): Promise<CatalogEntry> {
  try {
    const reader = await BundleReader.open(await open(), base.bundle, { passphrase, identities });
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
      ...(m.signature ? { signer: { key: m.signature.key, fingerprint: m.signature.fingerprint } } : {}),
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

/** A choice of a store's bundles by file name; absent: all of them. */
export type NameFilter = (name: string) => boolean;

/**
 * Every bundle of a store (or those whose name `only` takes), oldest first, each described from
 * its manifest (read with `passphrase` where encrypted).
 */
export async function listCatalog(
  store: Store,
  passphrase: string | undefined = process.env.FERRY_PASSPHRASE,
  only?: NameFilter,
  identities?: string[],
): Promise<CatalogEntry[]> {
  const entries: CatalogEntry[] = [];
  for (const b of await store.list()) {
    if (only && !only(b.name)) continue;
    const open = async () => (await store.open(b.name)).stream;
    entries.push(
      await describeOpened(
        { bundle: b.location, name: b.name, bytes: b.size, mtime: b.mtime.toISOString() },
        open,
        passphrase,
        identities,
      ),
    );
  }
  entries.sort((a, b) => entryTime(a) - entryTime(b) || a.bundle.localeCompare(b.bundle));
  return entries;
}

/** A store's catalogue, read with one passphrase (what `ls`, `prune` and the shrink check list). */
export class Catalog {
  constructor(
    readonly store: Store,
    private readonly passphrase: string | undefined = process.env.FERRY_PASSPHRASE,
    /** age identities (--identity, FERRY_AGE_IDENTITY) for bundles encrypted to recipients. */
    private readonly identities?: string[],
  ) {}

  /** Every bundle (or those whose name `only` takes), oldest first. */
  list(only?: NameFilter): Promise<CatalogEntry[]> {
    return listCatalog(this.store, this.passphrase, only, this.identities);
  }
}

/** What `ferry ls --json` prints for an entry (docs/json.md, "ls"). */
export function catalogJson(e: CatalogEntry): Record<string, unknown> {
  if (e.error)
    return {
      bundle: e.bundle,
      fileBytes: e.bytes,
      ...(e.encrypted ? { encrypted: true } : {}),
      error: {
        code: e.failure?.code ?? 'BUNDLE',
        exitCode: e.failure?.exitCode ?? 7,
        message: e.error,
        hint: e.failure?.hint ?? null,
      },
    };
  return {
    bundle: e.bundle,
    createdAt: e.created,
    containers: e.containers,
    fileBytes: e.bytes,
    imageMode: e.imageMode,
    compression: e.compression,
    encrypted: e.encrypted,
    ...(e.ferryVersion !== undefined ? { ferryVersion: e.ferryVersion } : {}),
    ...(e.formatVersion !== undefined ? { formatVersion: e.formatVersion } : {}),
    ...(e.signer ? { signer: e.signer } : {}),
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
    // the container's own environment, and its origin image's (docs/format.md, Lineage)
    for (const cfg of [c.spec?.config, c.spec?.origin?.config] as ({ Env?: unknown } | undefined)[])
      if (cfg && Array.isArray(cfg.Env))
        cfg.Env = cfg.Env.map((e: unknown) => (typeof e === 'string' ? envName(e) : e));
  }
  return copy;
}
