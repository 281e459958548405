/**
 * The files inside a bundle's volume and bind members (`ferry ls <bundle> --files`) and one of
 * them to a stream (`ferry cat <bundle> <volume>:<path>`), read in one pass through the bundle
 * reader (decrypted, decompressed, held to the declared sizes): each member's tar is walked entry
 * by entry and nothing but the entry being written is ever held. The whole bundle is read, so
 * that its trailer is checked: a damaged bundle fails (BundleError, exit 7) after what was printed.
 */
import path from 'node:path';
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import * as tar from 'tar-stream';
import { BundleReader } from '../bundle/reader.js';
import type { Manifest } from '../bundle/manifest.js';
import { BundleError, NotFoundError, UsageError } from '../errors.js';
import { checkAborted, type RunContext } from '../context.js';
import type { Transport } from '../store/transport.js';

type Entry = Readable & { header: tar.Header };

/** The visitor's own error, passed through walk() as it is. */
class Stop extends Error {
  constructor(override readonly cause: unknown) {
    super('stopped');
  }
}

export interface FileEntry {
  /** `volume` (a named or anonymous volume) or `bind` (a bind mount's host path). */
  source: 'volume' | 'bind';
  /** The volume's name; for a bind, `<container>:<destination>`. */
  name: string;
  /** The path inside the volume, from its root: `/`, `/sub`, `/sub/a.txt`. */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'link' | 'fifo' | 'character-device' | 'block-device' | 'other';
  /** Bytes of a file (a sparse file: its full size); 0 otherwise. */
  size: number;
  /** Permission bits with setuid, setgid and sticky (e.g. 0o755). */
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  /** A symlink's target, or the path a hard link names. */
  linkname?: string;
  /** Stored as a GNU sparse file (read from the engine's host). */
  sparse?: boolean;
}

/** An entry name in a volume member (`./sub/a.txt`, `./` for the root) as a path from the root. Pure. */
export function memberPath(name: string): string {
  const p = path.posix.normalize('/' + name.replace(/^\.\/?/, '')).replace(/\/+$/, '');
  return p || '/';
}

/** `<volume>:<path>` as cat takes it; the path made absolute and normalized. Pure. */
export function parseVolumePath(spec: string): { volume: string; path: string } {
  const i = spec.indexOf(':');
  if (i <= 0 || i === spec.length - 1)
    throw new UsageError(`${spec}: expected <volume>:<path>`, 'e.g. ferry cat web.tar web-data:/html/index.html');
  return { volume: spec.slice(0, i), path: memberPath(spec.slice(i + 1)) };
}

const TYPES: Record<string, FileEntry['type']> = {
  file: 'file',
  'contiguous-file': 'file',
  directory: 'directory',
  symlink: 'symlink',
  link: 'link',
  fifo: 'fifo',
  'character-device': 'character-device',
  'block-device': 'block-device',
};

function entryOf(h: tar.Header, source: FileEntry['source'], name: string): FileEntry {
  const pax = (h.pax ?? {}) as Record<string, string>;
  const sparseName = pax['GNU.sparse.name'];
  const type = TYPES[h.type ?? 'file'] ?? 'other';
  return {
    source,
    name,
    path: memberPath(sparseName ?? h.name),
    type,
    size: type === 'file' ? Number(pax['GNU.sparse.realsize'] ?? h.size ?? 0) : 0,
    mode: (h.mode ?? 0) & 0o7777,
    uid: h.uid ?? 0,
    gid: h.gid ?? 0,
    mtime: h.mtime ?? new Date(0),
    ...(h.linkname ? { linkname: type === 'link' ? memberPath(h.linkname) : h.linkname } : {}),
    ...(sparseName ? { sparse: true } : {}),
  };
}

/** The volume and bind members of a manifest, by member name. Pure. */
function sources(m: Manifest): Map<string, { source: FileEntry['source']; name: string }> {
  const out = new Map<string, { source: FileEntry['source']; name: string }>();
  for (const v of m.volumes) out.set(v.member, { source: 'volume', name: v.name });
  for (const c of m.containers)
    for (const b of c.binds ?? []) out.set(b.member, { source: 'bind', name: `${b.container}:${b.destination}` });
  return out;
}

/**
 * Walk the bundle's volume and bind members; `visit` sees every entry (its data, for a file, is
 * the entry stream: consume it or leave it). Resolves once the whole bundle is read and checked.
 */
async function walk(
  transport: Transport,
  ctx: Pick<RunContext, 'passphrase' | 'trust' | 'signal'>,
  want: (m: Manifest, member: string) => boolean,
  visit: (e: FileEntry, data: Entry, h: tar.Header) => Promise<void>,
  onManifest?: (m: Manifest) => void,
): Promise<{ location: string; manifest: Manifest }> {
  const src = await transport.openBundle();
  const reader = await BundleReader.open(src.stream, src.location, {
    passphrase: ctx.passphrase,
    ...(ctx.trust ? { trust: ctx.trust } : {}),
  });
  try {
    onManifest?.(reader.manifest);
    const of = sources(reader.manifest);
    for await (const m of reader.members({ decode: true })) {
      checkAborted(ctx.signal);
      const s = of.get(m.plan.name);
      if (!s || !want(reader.manifest, m.plan.name)) continue; // the reader drains it
      const extract = tar.extract();
      const feeding = pipeline(m.stream, extract);
      feeding.catch(() => {});
      try {
        for await (const e of extract as AsyncIterable<Entry>) {
          checkAborted(ctx.signal);
          try {
            await visit(entryOf(e.header, s.source, s.name), e, e.header);
          } catch (err) {
            // What the visitor refused (or its output failed): stop reading, say that.
            extract.destroy();
            m.stream.destroy();
            throw new Stop(err);
          }
          e.resume();
        }
        await feeding;
      } catch (err) {
        if (err instanceof Stop) throw err.cause;
        const root = (await feeding.then(
          () => undefined,
          (x: unknown) => x,
        )) as Error | undefined;
        const e = root ?? (err as Error);
        if (e instanceof Error && 'exitCode' in e) throw e; // a FerryError: the reader's own, or an abort
        throw new BundleError(`${src.location}: member ${m.plan.name} is not a well-formed tar archive: ${e.message}`, {
          member: m.plan.name,
          cause: e,
          hint: 'run ferry verify on the bundle',
        });
      }
    }
    return { location: src.location, manifest: reader.manifest };
  } finally {
    reader.close();
  }
}

/** Every file of the bundle's volume and bind members, to `onEntry` as it is read (await it for backpressure). */
export async function listFiles(
  transport: Transport,
  ctx: Pick<RunContext, 'passphrase' | 'trust' | 'signal'>,
  onEntry: (e: FileEntry) => void | Promise<void>,
  opts: { volume?: string } = {},
): Promise<{ location: string; manifest: Manifest }> {
  return walk(
    transport,
    ctx,
    (m, member) => !opts.volume || m.volumes.some((v) => v.member === member && v.name === opts.volume),
    async (e) => {
      await onEntry(e);
    },
    (m) => {
      if (opts.volume && !m.volumes.some((v) => v.name === opts.volume))
        throw new NotFoundError(
          `the bundle has no volume ${opts.volume}`,
          m.volumes.length ? `its volumes: ${m.volumes.map((v) => v.name).join(', ')}` : 'it holds no volumes',
        );
    },
  );
}

/**
 * Write one file of a volume in the bundle to `out` (not ended), streaming. A NotFoundError when
 * the volume or the path is not in the bundle; a UsageError for a directory, a link or a special
 * file (saying what it is); what was written stands only once this resolves (the bundle checked).
 */
export async function catFile(
  transport: Transport,
  ctx: Pick<RunContext, 'passphrase' | 'trust' | 'signal'>,
  spec: { volume: string; path: string },
  out: Writable,
): Promise<{ location: string; bytes: number; entry: FileEntry }> {
  let found: FileEntry | undefined;
  let bytes = 0;
  const res = await walk(
    transport,
    ctx,
    (m, member) => !found && m.volumes.some((v) => v.member === member && v.name === spec.volume),
    async (e, data) => {
      if (found || e.path !== spec.path) return;
      found = e;
      if ((e as { sparse?: boolean }).sparse)
        throw new UsageError(
          `${spec.volume}:${spec.path} is stored as a sparse file, which ferry cat does not expand`,
          'extract the volume member with GNU tar (see docs/format.md) or restore the volume',
        );
      if (e.type === 'link')
        throw new UsageError(
          `${spec.volume}:${spec.path} is a hard link to ${e.linkname}`,
          `ferry cat ${spec.volume}:${e.linkname}`,
        );
      if (e.type === 'symlink')
        throw new UsageError(
          `${spec.volume}:${spec.path} is a symbolic link to ${e.linkname}`,
          'name the file it points to (a relative target is relative to the link’s directory)',
        );
      if (e.type !== 'file')
        throw new UsageError(
          `${spec.volume}:${spec.path} is a ${e.type}, not a file`,
          e.type === 'directory' ? `list it with ferry ls <bundle> --files --volume ${spec.volume}` : undefined,
        );
      // By hand, not pipeline(…, { end: false }): that can wait for a 'finish' that never comes.
      for await (const c of data as AsyncIterable<Buffer>) {
        bytes += c.length;
        if (!out.write(c)) await once(out, 'drain'); // rejects if `out` fails
      }
    },
    (m) => {
      if (!m.volumes.some((v) => v.name === spec.volume))
        throw new NotFoundError(
          `the bundle has no volume ${spec.volume}`,
          m.volumes.length ? `its volumes: ${m.volumes.map((v) => v.name).join(', ')}` : 'it holds no volumes',
        );
    },
  );
  if (!found)
    throw new NotFoundError(
      `${spec.path} is not in volume ${spec.volume} of the bundle`,
      `list its files with ferry ls <bundle> --files --volume ${spec.volume}`,
    );
  return { location: res.location, bytes, entry: found };
}
