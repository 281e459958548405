/**
 * What changed in a volume between two listings of it: the pre-copy's change detection
 * (docs/precopy.md). Pure; unit-tested.
 *
 * A listing is every entry of the volume (`find . -printf`, on the volume's host) with its type,
 * inode, size, mtime, ctime, permission bits, owner and symlink target, and the time the listing
 * began (that host's clock). An entry whose every field is the same in a later listing did not
 * change between the two: a write changes mtime and ctime, a chmod, chown, rename, link or
 * `touch -m -d <old time>` changes ctime, which no program can set back, and a file replaced by
 * another (rename over it) has another inode. So a file read after the first listing and unchanged
 * in the second holds, on the target, what the source held at the second.
 *
 * Two limits of timestamps, and how they are met:
 *  - The kernel stamps times from a clock that advances by ticks (1-10 ms), so a write in the
 *    same tick as the listing's stat of that file, just after it, leaves ctime as the stat saw it.
 *    An entry whose ctime is at or after the listing's start less RACY_NS is "racy" (git's racy
 *    clean entries): it is sent again whatever the next listing says.
 *  - A directory replaced (another inode, or another type at that path) is removed on the target
 *    and sent again with everything under it: a path under it that looks unchanged may have been
 *    read through what stood there before.
 * And the directory of every entry sent or removed is sent too: writing there changes its mtime
 * on the target, which the directory's own entry, extracted after, puts back.
 */

/** How far before a listing's start a ctime makes an entry racy (sent again whatever follows). */
export const RACY_NS = 1_000_000_000n;

/** One entry of a volume: path relative to its root (`.`, `./a`, `./a/b`). */
export interface Entry {
  path: string;
  /** find's %y: f regular, d directory, l symlink, p fifo, s socket, c/b device. */
  type: string;
  ino: string;
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** Permission bits, with setuid, setgid and sticky (octal as find prints them, as a number). */
  mode: number;
  uid: number;
  gid: number;
  /** A symlink's target ('' otherwise). */
  link: string;
}

export interface Listing {
  /** When the listing began, by the clock of the volume's host (ns since the epoch). */
  takenAtNs: bigint;
  entries: Map<string, Entry>;
}

/**
 * The find format that parseListing reads: per entry three NUL-terminated fields, the metadata
 * (`type/inode/size/mtime/ctime/mode/uid/gid`), the path, the symlink target.
 */
export const FIND_FORMAT = '%y/%i/%s/%T@/%C@/%m/%U/%G\\0%p\\0%l\\0';

/** `1796635515.8739811220` (seconds, a fraction of up to 10 digits) as nanoseconds. */
export function parseSecondsNs(s: string): bigint | undefined {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(s.trim());
  if (!m) return undefined;
  return BigInt(m[1]!) * 1_000_000_000n + BigInt((m[2] ?? '').slice(0, 9).padEnd(9, '0'));
}

/**
 * A listing as the host printed it: the start time (`date +%s.%N`) as the first NUL-terminated
 * field, then FIND_FORMAT's records. Throws on anything else.
 */
export function parseListing(out: Buffer | string): Listing {
  const fields = (typeof out === 'string' ? out : out.toString('utf8')).split('\0');
  // The text after the last NUL is empty when the output is whole.
  if (fields.pop() !== '') throw new Error('volume listing: cut short');
  const takenAtNs = parseSecondsNs(fields[0] ?? '');
  if (takenAtNs === undefined) throw new Error(`volume listing: no start time (${JSON.stringify(fields[0])})`);
  if ((fields.length - 1) % 3) throw new Error('volume listing: records cut short');
  const entries = new Map<string, Entry>();
  for (let i = 1; i < fields.length; i += 3) {
    const meta = fields[i]!.split('/');
    const path = fields[i + 1]!;
    const mtimeNs = parseSecondsNs(meta[3] ?? '');
    const ctimeNs = parseSecondsNs(meta[4] ?? '');
    if (meta.length !== 8 || mtimeNs === undefined || ctimeNs === undefined || !(path === '.' || path.startsWith('./')))
      throw new Error(`volume listing: unreadable record for ${JSON.stringify(path)}`);
    entries.set(path, {
      path,
      type: meta[0]!,
      ino: meta[1]!,
      size: Number(meta[2]),
      mtimeNs,
      ctimeNs,
      mode: parseInt(meta[5]!, 8),
      uid: Number(meta[6]),
      gid: Number(meta[7]),
      link: fields[i + 2]!,
    });
  }
  return { takenAtNs, entries };
}

/** What to do on the target so that it holds what the later listing saw. */
export interface Delta {
  /** Paths to remove first (never one under another in the list), sorted. */
  remove: string[];
  /** Paths to send (a tar of them, without recursion), parents before children. */
  send: string[];
  /** Bytes of the regular files in `send`. */
  bytes: number;
}

function parentOf(path: string): string | undefined {
  const i = path.lastIndexOf('/');
  return i < 0 ? undefined : path.slice(0, i);
}

/** Whether `a` and `b` describe the same, unchanged entry. */
export function sameEntry(a: Entry, b: Entry): boolean {
  return (
    a.type === b.type &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs &&
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.link === b.link
  );
}

/** Whether an entry of `listing` is racy: changed so close to the listing that a later change may not show. */
export function isRacy(e: Entry, listing: Listing, racyNs = RACY_NS): boolean {
  return e.ctimeNs >= listing.takenAtNs - racyNs;
}

/** Compare two listings of one volume (`prev` the older). */
export function diffListings(prev: Listing, next: Listing, racyNs = RACY_NS): Delta {
  const remove = new Set<string>();
  const replacedDirs = new Set<string>();
  const send: string[] = [];
  let bytes = 0;
  const under = (path: string): boolean => {
    for (let p = parentOf(path); p !== undefined; p = parentOf(p)) if (replacedDirs.has(p)) return true;
    return false;
  };
  for (const path of [...next.entries.keys()].sort()) {
    const e = next.entries.get(path)!;
    const old = prev.entries.get(path);
    let changed: boolean;
    if (!old) changed = true;
    else if (old.type !== e.type || old.ino !== e.ino) {
      // Another object at this path: what the target has there goes first (a directory with all it held).
      if (path !== '.') remove.add(path);
      if (e.type === 'd' || old.type === 'd') replacedDirs.add(path);
      changed = true;
    } else changed = !sameEntry(old, e) || isRacy(old, prev, racyNs) || under(path);
    if (!changed) continue;
    send.push(path);
    if (e.type === 'f') bytes += e.size;
  }
  for (const path of prev.entries.keys()) if (!next.entries.has(path)) remove.add(path);
  // Writing or removing an entry on the target changes its directory's mtime there: the directory
  // goes too, after its entries in time (tar sets a directory's times once it is done with it).
  const sending = new Set(send);
  for (const path of [...send, ...remove]) {
    const dir = parentOf(path);
    const e = dir === undefined ? undefined : next.entries.get(dir);
    if (e && !sending.has(dir!)) sending.add(dir!);
  }
  if (sending.size > send.length) send.splice(0, send.length, ...[...sending].sort());
  // Only the topmost: removing a directory removes what it held.
  const removeList = [...remove].sort().filter((p) => {
    for (let q = parentOf(p); q !== undefined; q = parentOf(q)) if (remove.has(q)) return false;
    return true;
  });
  return { remove: removeList, send, bytes };
}

/** Policy: copy passes while the source runs. */
export const PRECOPY = {
  /** Passes while the source runs, the first (whole) one included. */
  maxPasses: 4,
  /** A delta at most this big is left for the frozen pass. */
  smallBytes: 8 << 20,
  /** Another pass only while each delta is at most this share of the one before. */
  shrink: 0.5,
};

/**
 * Whether to send `delta` (bytes) while the source still runs, after `passes` passes whose
 * deltas were `previous` (bytes, the whole copy first): only while it is worth it and shrinking.
 * After the whole first pass a big delta always earns a second pass: a large file written while
 * the first pass copied it is in the delta whole, however briefly it was written, and comparing
 * with the whole copy says nothing about whether the writes go on. From the second pass on, a
 * delta must shrink against the one before.
 */
export function copyAgain(passes: number, previous: number[], delta: number, policy = PRECOPY): boolean {
  if (passes >= policy.maxPasses) return false;
  if (delta <= policy.smallBytes) return false;
  if (previous.length < 2) return true;
  return delta <= previous[previous.length - 1]! * policy.shrink;
}

/**
 * About how much disk a copy of what `listing` holds takes: each regular file rounded up to 4 KiB
 * blocks, 4 KiB for any other entry (a directory's block, an inode's share). For the free space a
 * staging copy needs (ops/steps/stage.ts), not an exact figure.
 */
export function listingDiskBytes(listing: Listing): number {
  let n = 0;
  for (const e of listing.entries.values()) n += e.type === 'f' ? Math.ceil(e.size / 4096) * 4096 : 4096;
  return n;
}
