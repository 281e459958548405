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
import * as tar from 'tar-stream';
import { TarEntryFilter, type TarDecision, type TarEntry } from '../util/tar-filter.js';
import { headerAttrs } from '../util/tar-root.js';

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

export class EscapingLinks extends TarEntryFilter {
  /** The links held back, their parent directories after them. */
  readonly held: HeldEntry[] = [];
  /** The most levels any held link reaches above the root. */
  depth = 0;
  /** The directories on the path of the latest entry (a parent precedes its children). */
  private dirs: HeldEntry[] = [];
  private heldNames = new Set<string>();
  private heldDirs = new Set<string>();

  protected decide(e: TarEntry): TarDecision {
    const name = clean(e.name);
    // the directories on this entry's path
    while (this.dirs.length && !name.startsWith(`${this.dirs[this.dirs.length - 1]!.name}/`)) this.dirs.pop();
    const depth = e.type === '2' ? escapeDepth(e.name, e.linkname) : 0;
    const hardToHeld = e.type === '1' && this.heldNames.has(clean(e.linkname));
    if (depth === 0 && !hardToHeld) {
      if (e.type === '5' && name) this.dirs.push(heldEntry(e, name));
      return 'pass';
    }
    this.held.push(heldEntry(e, name));
    this.heldNames.add(name);
    this.depth = Math.max(this.depth, depth);
    for (const d of this.dirs)
      if (!this.heldDirs.has(d.name)) {
        this.heldDirs.add(d.name);
        this.held.push(d);
      }
    return 'drop';
  }
}

/** An entry as it is held (or kept as a held link's parent directory): its attributes and xattrs. */
function heldEntry(e: TarEntry, name: string): HeldEntry {
  const entry: HeldEntry = {
    name,
    type: e.type === '2' ? 'symlink' : e.type === '1' ? 'link' : 'directory',
    ...(e.type === '1' || e.type === '2' ? { linkname: e.linkname } : {}),
    ...headerAttrs(e.header, e.pax),
  };
  const xattrs = Object.fromEntries(Object.entries(e.pax).filter(([k]) => k.startsWith('SCHILY.xattr.')));
  if (Object.keys(xattrs).length) entry.pax = xattrs;
  return entry;
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
