/**
 * A volume's listing, folded into a few numbers: how many entries a tar of it holds, the bytes of
 * its regular files, and a digest of every entry's path, type, size and link target that does not
 * depend on their order (the sum, modulo 2^64, of a hash of each). Two tars of the same tree read
 * the same way give the same tally, whatever order their directories were walked in; a tree with
 * a file missing, cut short, renamed or added does not. Owners, modes and times are left out: the
 * engine's archive endpoint does not keep owners on every engine (Podman), and a tally is the
 * proof that a copy is whole, not that it is exact in every attribute (the copy itself is).
 *
 * It streams: nothing but the running sums is held, whatever the volume's size.
 */
import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import * as tar from 'tar-stream';

export interface Tally {
  entries: number;
  bytes: number;
  /** 16 hex digits. */
  digest: string;
}

/** An entry's name as the listing knows it: relative to the volume's root, `''` for the root. */
export function entryPath(name: string): string {
  return name
    .replace(/^(\.\/)+/, '')
    .replace(/^\.$/, '')
    .replace(/\/+$/, '');
}

/** Fold one entry into a running tally. Pure. */
export function addEntry(
  t: { entries: number; bytes: number; sum: bigint },
  e: { name: string; type?: string | null; size?: number | null; linkname?: string | null },
): void {
  const type = e.type ?? 'file';
  const size = type === 'file' || type === 'contiguous-file' ? (e.size ?? 0) : 0;
  const h = createHash('sha256')
    .update(`${type}\0${entryPath(e.name)}\0${size}\0${e.linkname ?? ''}`)
    .digest();
  t.entries++;
  t.bytes += size;
  t.sum = (t.sum + h.readBigUInt64BE(0)) & 0xffff_ffff_ffff_ffffn;
}

/** The tally of a tar stream, read to its end. */
export async function tallyTar(src: Readable): Promise<Tally> {
  const t = { entries: 0, bytes: 0, sum: 0n };
  const extract = tar.extract();
  const done = new Promise<Tally>((resolve, reject) => {
    extract.on('entry', (h, s, next) => {
      addEntry(t, h);
      s.on('end', next);
      s.resume();
    });
    extract.once('finish', () =>
      resolve({ entries: t.entries, bytes: t.bytes, digest: t.sum.toString(16).padStart(16, '0') }),
    );
    extract.once('error', reject);
    src.once('error', (err) => extract.destroy(err));
  });
  src.pipe(extract);
  return done;
}

/**
 * `src` read once by two: what the returned stream gives is `src`'s bytes, and `tally` resolves to
 * their tally once they were all read. Backpressure is kept: the slower reader sets the pace.
 */
export function tallied(src: Readable): { stream: Readable; tally: Promise<Tally> } {
  const out = new PassThrough();
  const side = new PassThrough();
  src.pipe(out);
  src.pipe(side);
  src.once('error', (err) => {
    out.destroy(err);
    side.destroy(err);
  });
  out.once('close', () => {
    if (!src.readableEnded) src.destroy();
  });
  const tally = tallyTar(side);
  tally.catch(() => {});
  return { stream: out, tally };
}

export function sameTally(a: Tally, b: Tally): boolean {
  return a.entries === b.entries && a.bytes === b.bytes && a.digest === b.digest;
}

export function describeTally(t: Tally): string {
  return `${t.entries} entries, ${t.bytes} bytes`;
}
