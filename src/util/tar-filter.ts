/**
 * TarEntryFilter passes a tar archive through block for block, in order, and asks a subclass of
 * each entry whether it passes or is dropped (with its PAX and GNU long-name headers and its
 * data). ExcludeFilter (data/excludes.ts) drops what a volume's path excludes name; EscapingLinks
 * (data/tar-links.ts) drops, and keeps aside, the symlinks the engine's archive PUT refuses.
 *
 * What it does with the blocks, written once:
 *  - an entry's data (its size from a PAX `size` record, else the header's octal or base-256
 *    field) passes, or is dropped, as it arrives: nothing is buffered beyond one entry's headers;
 *  - PAX (`x`) and GNU long-name (`L`, `K`) headers are held until the entry they precede is
 *    decided, and go with it;
 *  - a global PAX header (`g`) is not an entry: it always passes (with what is held before it,
 *    in order: nothing is ever reordered);
 *  - from the end-of-archive marker (a zero block) on, everything passes untouched, and so does
 *    whatever is left of an archive cut short.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { num, parsePax } from './tar-root.js';

const BLOCK = 512;

/** One entry of the archive as its headers give it. */
export interface TarEntry {
  /** The type flag: '0' (or '\0') a file, '1' a hard link, '2' a symlink, '5' a directory, … */
  type: string;
  /** Its path: a PAX `path` record, else a GNU long name, else the ustar prefix and name. */
  name: string;
  /** A link's target, by the same rules (`linkpath`, GNU long link, the header's field). */
  linkname: string;
  /** The size of its data in bytes. */
  size: number;
  /** Its ustar header block (512 bytes; valid only during the call). */
  header: Buffer;
  /** The records of the PAX headers before it. */
  pax: Record<string, string>;
}

/** What becomes of an entry: its blocks pass, or are left out of the archive. */
export type TarDecision = 'pass' | 'drop';

/** A NUL-terminated string field of a header block. */
function field(h: Buffer, off: number, len: number): string {
  const s = h.toString('utf8', off, off + len);
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

/** The text of a GNU long-name (or long-link) header's data. */
function longText(body: Buffer): string {
  const s = body.toString('utf8');
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

/**
 * The name a ustar header gives: its prefix field joined to its name field in a POSIX ustar
 * header (magic `ustar\0`). GNU's old format (magic `ustar  `) keeps other fields (atime, ctime)
 * where POSIX has the prefix, and a v7 header has no prefix: there the name field alone.
 */
export function headerName(h: Buffer): string {
  const short = field(h, 0, 100);
  if (h.toString('latin1', 257, 263) !== 'ustar\0') return short;
  const prefix = field(h, 345, 155);
  return prefix ? `${prefix}/${short}` : short;
}

export abstract class TarEntryFilter extends Transform {
  /** What becomes of `entry`. Called once per entry, in archive order. */
  protected abstract decide(entry: TarEntry): TarDecision;

  private buf: Buffer = Buffer.alloc(0);
  /** Bytes of the current entry's data (padded) still to pass, or (when `dropping`) to drop. */
  private dataLeft = 0;
  private dropping = false;
  /** The PAX and long-name header blocks (with their data) of the next entry. */
  private pending: Buffer[] = [];
  private pax: Record<string, string> = {};
  private longName?: string;
  private longLink?: string;
  private ended = false;

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
    // an archive cut short: what could not be decided passes as it is
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
        if (!this.dropping) this.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        this.dataLeft -= n;
        continue;
      }
      if (this.buf.length < BLOCK) return;
      const h = this.buf.subarray(0, BLOCK);
      if (h.every((x) => x === 0)) {
        this.ended = true;
        continue;
      }
      const type = String.fromCharCode(h[156]!);
      if (type === 'x' || type === 'L' || type === 'K') {
        if (!this.holdMeta(type, h)) return;
        continue;
      }
      // a file over 8 GiB has its size in a PAX record (GNU tar), or in base-256 (num)
      const size = type !== 'g' && this.pax.size !== undefined ? Number(this.pax.size) : num(h, 124, 12);
      const decision =
        type === 'g'
          ? 'pass'
          : this.decide({
              type,
              name: this.pax.path ?? this.longName ?? headerName(h),
              linkname: this.pax.linkpath ?? this.longLink ?? field(h, 157, 100),
              size,
              header: h,
              pax: this.pax,
            });
      if (decision === 'pass') {
        if (this.pending.length) this.push(Buffer.concat(this.pending));
        this.push(Buffer.from(h));
      }
      this.pending = [];
      this.pax = {};
      this.longName = undefined;
      this.longLink = undefined;
      this.dropping = decision === 'drop';
      this.buf = this.buf.subarray(BLOCK);
      this.dataLeft = Math.ceil(size / BLOCK) * BLOCK;
    }
  }

  /** Take a PAX or long-name header (and its data) for the next entry; false until it is all here. */
  private holdMeta(type: string, h: Buffer): boolean {
    const size = num(h, 124, 12);
    const end = BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (this.buf.length < end) return false;
    const body = this.buf.subarray(BLOCK, BLOCK + size);
    if (type === 'x') this.pax = { ...this.pax, ...parsePax(body) };
    else if (type === 'L') this.longName = longText(body);
    else this.longLink = longText(body);
    this.pending.push(Buffer.from(this.buf.subarray(0, end)));
    this.buf = this.buf.subarray(end);
    return true;
  }
}
