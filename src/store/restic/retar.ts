/**
 * `restic dump` of a directory writes a tar whose entry names carry the directory's path in the
 * snapshot (`volumes/data/a.txt`) and which leaves the directory itself out. A bundle member's
 * archive has relative names from the root (`./`, `./a.txt`: docs/format.md, "Volume and bind
 * members"). rebase() turns one into the other as it streams: each entry renamed, its data passed
 * through untouched, and (for a volume) the root entry `./` put first with the directory's own
 * mode, owner and mtime.
 */
import { pipeline } from 'node:stream/promises';
import { PassThrough, type Readable } from 'node:stream';
import * as tar from 'tar-stream';

export interface RootEntry {
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
}

/** `volumes/data/sub/a` under `volumes/data` -> `./sub/a`; undefined for a name outside it. Pure. */
export function rebaseName(name: string, prefix: string, dotSlash: boolean): string | undefined {
  const p = prefix.replace(/^\/+|\/+$/g, '') + '/';
  const n = name.replace(/^\/+/, '');
  if (!n.startsWith(p)) return undefined;
  const rest = n.slice(p.length);
  if (!rest || rest === '/') return undefined;
  return dotSlash ? `./${rest}` : rest;
}

/** The archive of `prefix` in `dump`, renamed (see the top of this file). Errors of either side end it. */
export function rebase(dump: Readable, prefix: string, opts: { dotSlash: boolean; root?: RootEntry }): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  if (opts.root)
    pack.entry({
      name: './',
      type: 'directory',
      mode: opts.root.mode & 0o7777,
      uid: opts.root.uid,
      gid: opts.root.gid,
      mtime: new Date(opts.root.mtime * 1000),
    });
  extract.on('entry', (header, stream, next) => {
    const name = rebaseName(header.name, prefix, opts.dotSlash);
    if (name === undefined) {
      stream.on('end', next);
      stream.resume();
      return;
    }
    header.name = header.type === 'directory' && !name.endsWith('/') ? `${name}/` : name;
    if (header.type === 'link' && header.linkname)
      header.linkname = rebaseName(header.linkname, prefix, opts.dotSlash) ?? header.linkname;
    // Long names go as PAX records (tar-stream writes them from `pax` when a name does not fit).
    if (header.pax) header.pax = { ...header.pax, path: header.name };
    const into = pack.entry(header, (err) => (err ? extract.destroy(err) : undefined));
    pipeline(stream, into).then(
      () => next(),
      (err: unknown) => extract.destroy(err as Error),
    );
  });
  extract.on('finish', () => pack.finalize());
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  pipeline(dump, extract).catch((err: unknown) => out.destroy(err as Error));
  pipeline(pack, out).catch((err: unknown) => out.destroy(err as Error));
  return out;
}
