/**
 * `restic dump` of a directory writes a tar whose entry names carry the directory's path in the
 * snapshot (`volumes/data/a.txt`) and which leaves the directory itself out. A bundle member's
 * archive has relative names from the root (`./`, `./a.txt`: docs/format.md, "Volume and bind
 * members"). rebase() turns one into the other as it streams: each entry renamed, its data passed
 * through untouched, and (for a volume) the root entry `./` put first with the directory's own
 * mode, owner and mtime.
 *
 * Two things restic 0.14's dump loses are put back: mtimes (its tar rounds them to the nearest
 * second; `restic ls --json`, read in step with the dump, has them to the nanosecond, and they go
 * in as PAX `mtime` records), and owner ids above 262143 (which a plain ustar header cannot hold:
 * PAX `uid`/`gid` records, as Go's tar writes them).
 */
import { createInterface } from 'node:readline';
import { pipeline } from 'node:stream/promises';
import { PassThrough, type Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { rfc3339Nanos } from '../../data/host-volume.js';

export interface RootEntry {
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
}

/** The largest id an ustar header holds (6 octal digits, as tar-stream writes them). */
const USTAR_MAX_ID = 0o777777;

/** `volumes/data/sub/a` under `volumes/data` -> `./sub/a`; undefined for a name outside it. Pure. */
export function rebaseName(name: string, prefix: string, dotSlash: boolean): string | undefined {
  const p = prefix.replace(/^\/+|\/+$/g, '') + '/';
  const n = name.replace(/^\/+/, '');
  if (!n.startsWith(p)) return undefined;
  const rest = n.slice(p.length);
  if (!rest || rest === '/') return undefined;
  return dotSlash ? `./${rest}` : rest;
}

/** restic's walk order: component by component, each directory's names sorted bytewise. Pure. */
export function walkCompare(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++)
    if (x[i] !== y[i]) return Buffer.compare(Buffer.from(x[i]!), Buffer.from(y[i]!));
  return x.length - y.length;
}

/** `2026-12-07T06:21:47.825583066Z` -> `1796624507.825583066` (a PAX time). Pure. */
export function paxTime(rfc3339: string): string | undefined {
  const ns = rfc3339Nanos(rfc3339);
  if (ns === undefined) return undefined;
  const s = ns / 1_000_000_000n;
  const frac = ns % 1_000_000_000n;
  return `${s}.${frac.toString().padStart(9, '0')}`;
}

/** Each node's exact mtime, looked up in restic's walk order from `restic ls --json --recursive` (one JSON object a line). */
export class NodeTimes {
  private readonly lines: AsyncIterator<string>;
  private ahead?: { path: string; mtime: string };
  private ended = false;

  constructor(ls: Readable) {
    this.lines = createInterface({ input: ls, crlfDelay: Infinity })[Symbol.asyncIterator]();
  }

  /** The mtime of the node at `path` (`/volumes/data/a`), or undefined when the listing has none. */
  async mtime(path: string): Promise<string | undefined> {
    for (;;) {
      if (!this.ahead) {
        if (this.ended) return undefined;
        const r = await this.lines.next();
        if (r.done) {
          this.ended = true;
          return undefined;
        }
        const v = JSON.parse(r.value) as { struct_type?: string; path?: string; mtime?: string };
        if (v.struct_type !== 'node' || !v.path || !v.mtime) continue;
        this.ahead = { path: v.path, mtime: v.mtime };
      }
      const c = walkCompare(this.ahead.path, path);
      if (c === 0) {
        const m = this.ahead.mtime;
        this.ahead = undefined;
        return m;
      }
      if (c > 0) return undefined; // past it: the listing has no such node
      this.ahead = undefined;
    }
  }

  /** Read the rest (so that restic ls can exit). */
  async drain(): Promise<void> {
    while (!this.ended) if ((await this.lines.next()).done) this.ended = true;
  }
}

/** The PAX records an entry needs beyond its ustar header. Pure. */
export function paxFor(
  header: { uid?: number; gid?: number; pax?: Record<string, string> | null },
  mtime?: string,
): Record<string, string> | undefined {
  const pax: Record<string, string> = {};
  for (const [k, v] of Object.entries(header.pax ?? {})) if (k !== 'path' && k !== 'linkpath') pax[k] = v;
  if ((header.uid ?? 0) > USTAR_MAX_ID) pax.uid = String(header.uid);
  if ((header.gid ?? 0) > USTAR_MAX_ID) pax.gid = String(header.gid);
  if (mtime) pax.mtime = mtime;
  return Object.keys(pax).length ? pax : undefined;
}

/** The archive of `prefix` in `dump`, renamed (see the top of this file). Errors of either side end it. */
export function rebase(
  dump: Readable,
  prefix: string,
  opts: { dotSlash: boolean; root?: RootEntry; times?: NodeTimes },
): Readable {
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
    const original = '/' + header.name.replace(/^\/+|\/+$/g, '');
    void (async () => {
      const exact = opts.times ? await opts.times.mtime(original) : undefined;
      const t = exact ? paxTime(exact) : undefined;
      header.name = header.type === 'directory' && !name.endsWith('/') ? `${name}/` : name;
      if (header.type === 'link' && header.linkname)
        header.linkname = rebaseName(header.linkname, prefix, opts.dotSlash) ?? header.linkname;
      if (t) header.mtime = new Date(Number(t.split('.')[0]) * 1000);
      const pax = paxFor(
        { uid: header.uid, gid: header.gid, pax: header.pax as Record<string, string> | undefined },
        t,
      );
      if (pax) header.pax = pax;
      else delete header.pax;
      const into = pack.entry(header, (err) => (err ? extract.destroy(err) : undefined));
      await pipeline(stream, into);
      next();
    })().catch((err: unknown) => extract.destroy(err as Error));
  });
  extract.on('finish', () => {
    pack.finalize();
    void opts.times?.drain().catch(() => {});
  });

  const out = new PassThrough({ highWaterMark: 1 << 20 });
  pipeline(dump, extract).catch((err: unknown) => out.destroy(err as Error));
  pipeline(pack, out).catch((err: unknown) => out.destroy(err as Error));
  return out;
}
