/**
 * Symlinks that point above a volume's root, through the engine (issue 22). A relative symlink
 * such as `d/up -> ../../../etc/passwd` is just a link, and a volume may hold one (a container
 * that mounts the volume deeper sees it resolve inside its own tree). The engine's archive PUT
 * refuses any link whose target, joined to the link's directory, leaves the directory it
 * extracts into ("invalid symlink"), so a restore through the engine failed on such a volume.
 *
 * EscapingLinks passes a volume archive through untouched, block for block, except the entries
 * of such links (and of hard links to them), which it holds back with the attributes of their
 * parent directories. Once the archive is in, escapingLinksTar() makes a small archive of them
 * with every name under `prefix` (the volume mounted that many levels deeper than where the
 * archive is put), so that the engine's check passes; their parent directories' attributes go
 * in again after them (creating a link changes its directory's mtime). Pure streams; unit-tested.
 */
import path from 'node:path/posix';
import { Transform, type TransformCallback } from 'node:stream';
import * as tar from 'tar-stream';
import { num, parsePax } from '../util/tar-root.js';

export interface HeldEntry {
  name: string;
  type: 'symlink' | 'link' | 'directory';
  linkname?: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  /** PAX records to carry along (xattrs). */
  pax?: Record<string, string>;
}

/** Strip `./` and slashes: a name relative to the volume's root (`''` for the root). */
function clean(name: string): string {
  return name
    .replace(/^(\.\/)+/, '')
    .replace(/^\/+/, '')
    .replace(/\/+$/, '');
}

/**
 * How many levels above the volume's root a relative symlink at `name` pointing at `target`
 * reaches (0 when it stays inside; absolute targets are not the engine's concern). Pure.
 */
export function escapeDepth(name: string, target: string): number {
  if (target.startsWith('/')) return 0;
  const joined = path.normalize(path.join(path.dirname(clean(name)) || '.', target));
  let n = 0;
  for (const seg of joined.split('/')) {
    if (seg !== '..') break;
    n++;
  }
  return n;
}

export class EscapingLinks extends Transform {
  /** The links held back, their parent directories after them. */
  readonly held: HeldEntry[] = [];
  /** The most levels any held link reaches above the root. */
  depth = 0;
  private buf: Buffer = Buffer.alloc(0);
  /** Bytes of the current entry's data (padded) still to pass through. */
  private dataLeft = 0;
  /** Header blocks of the current entry (PAX, long names) not yet passed. */
  private pending: Buffer[] = [];
  private pax: Record<string, string> = {};
  private longName?: string;
  private longLink?: string;
  private ended = false;
  /** The directories on the path of the latest entry (a parent precedes its children). */
  private dirs: HeldEntry[] = [];
  private heldNames = new Set<string>();
  private heldDirs = new Set<string>();

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
      this.drain();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (this.pending.length) this.push(Buffer.concat(this.pending));
    if (this.buf.length) this.push(this.buf);
    cb();
  }

  private drain(): void {
    while (this.buf.length) {
      if (this.ended) {
        this.push(this.buf);
        this.buf = Buffer.alloc(0);
        return;
      }
      if (this.dataLeft > 0) {
        const n = Math.min(this.dataLeft, this.buf.length);
        this.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        this.dataLeft -= n;
        continue;
      }
      if (this.buf.length < 512) return;
      const h = this.buf.subarray(0, 512);
      if (h.every((x) => x === 0)) {
        this.ended = true;
        continue;
      }
      const type = String.fromCharCode(h[156]!);
      // a file over 8 GiB has its size in a PAX record (GNU tar), or in base-256 (num)
      const size =
        type !== 'x' && type !== 'L' && type !== 'K' && this.pax.size !== undefined
          ? Number(this.pax.size)
          : num(h, 124, 12);
      const padded = Math.ceil(size / 512) * 512;
      if (type === 'x' || type === 'L' || type === 'K') {
        // Metadata for the next entry: kept until that entry's fate is known.
        if (this.buf.length < 512 + padded) return;
        const block = this.buf.subarray(0, 512 + padded);
        const body = this.buf.subarray(512, 512 + size);
        if (type === 'x') this.pax = { ...this.pax, ...parsePax(body) };
        else if (type === 'L') this.longName = body.toString('utf8').replace(/\0.*$/s, '');
        else this.longLink = body.toString('utf8').replace(/\0.*$/s, '');
        this.pending.push(Buffer.from(block));
        this.buf = this.buf.subarray(512 + padded);
        continue;
      }
      const prefix = h.toString('utf8', 345, 500).replace(/\0.*$/s, '');
      const short = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
      const name = this.pax.path ?? this.longName ?? (prefix ? `${prefix}/${short}` : short);
      const linkname = this.pax.linkpath ?? this.longLink ?? h.toString('utf8', 157, 257).replace(/\0.*$/s, '');
      const entry: HeldEntry = {
        name: clean(name),
        type: type === '2' ? 'symlink' : type === '1' ? 'link' : 'directory',
        ...(type === '1' || type === '2' ? { linkname } : {}),
        mode: num(h, 100, 8) & 0o7777,
        uid: this.pax.uid !== undefined ? Number(this.pax.uid) : num(h, 108, 8),
        gid: this.pax.gid !== undefined ? Number(this.pax.gid) : num(h, 116, 8),
        mtime: new Date((this.pax.mtime !== undefined ? Number(this.pax.mtime) : num(h, 136, 12)) * 1000),
      };
      const xattrs = Object.fromEntries(Object.entries(this.pax).filter(([k]) => k.startsWith('SCHILY.xattr.')));
      if (Object.keys(xattrs).length) entry.pax = xattrs;
      this.pax = {};
      this.longName = undefined;
      this.longLink = undefined;
      // the directories on this entry's path
      while (this.dirs.length && !entry.name.startsWith(`${this.dirs[this.dirs.length - 1]!.name}/`)) this.dirs.pop();
      const depth = type === '2' ? escapeDepth(name, linkname) : 0;
      const hardToHeld = type === '1' && this.heldNames.has(clean(linkname));
      if (depth > 0 || hardToHeld) {
        this.held.push(entry);
        this.heldNames.add(entry.name);
        this.depth = Math.max(this.depth, depth);
        for (const d of this.dirs)
          if (!this.heldDirs.has(d.name)) {
            this.heldDirs.add(d.name);
            this.held.push(d);
          }
        this.pending = [];
        this.buf = this.buf.subarray(512 + padded);
        continue;
      }
      if (type === '5' && entry.name) this.dirs.push(entry);
      if (this.pending.length) this.push(Buffer.concat(this.pending));
      this.pending = [];
      this.push(Buffer.from(h));
      this.buf = this.buf.subarray(512);
      this.dataLeft = padded;
    }
  }
}

/**
 * The held links (and their parent directories, after them: their mtimes are set last) as a tar
 * whose names are all under `prefix`; hard links point under it too. Pure.
 */
export function escapingLinksTar(held: HeldEntry[], prefix: string): tar.Pack {
  const pack = tar.pack();
  const links = held.filter((e) => e.type !== 'directory');
  const dirs = held.filter((e) => e.type === 'directory').sort((a, b) => b.name.length - a.name.length);
  for (const e of [...links, ...dirs]) {
    const big = e.uid > 0o777777 || e.gid > 0o777777;
    const pax = { ...(e.pax ?? {}), ...(big ? { uid: String(e.uid), gid: String(e.gid) } : {}) };
    pack.entry({
      name: `${prefix}/${e.name}${e.type === 'directory' ? '/' : ''}`,
      type: e.type,
      ...(e.type === 'symlink' ? { linkname: e.linkname } : {}),
      ...(e.type === 'link' ? { linkname: `${prefix}/${clean(e.linkname ?? '')}` } : {}),
      mode: e.mode,
      uid: big ? 0 : e.uid,
      gid: big ? 0 : e.gid,
      mtime: e.mtime,
      ...(Object.keys(pax).length ? { pax } : {}),
    });
  }
  pack.finalize();
  return pack;
}
