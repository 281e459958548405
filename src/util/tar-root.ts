/**
 * The engine's archive PUT does not apply the `./` entry to the directory it extracts into, so a
 * volume's root would lose its owner, mode and mtime (PostgreSQL refuses a data dir that is not
 * 0700). RootTap passes a tar stream through untouched while reading the first entry's header
 * (after any PAX header); the caller then applies those attributes with a one-entry tar.
 */
import { Transform, type TransformCallback } from 'node:stream';
import * as tar from 'tar-stream';

export interface RootAttrs {
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

/** A numeric tar header field: octal, or GNU base-256 (high bit of the first byte set). */
export function num(buf: Buffer, off: number, len: number): number {
  if (buf[off]! & 0x80) {
    // base-256
    let v = 0n;
    for (let i = off + 1; i < off + len; i++) v = (v << 8n) | BigInt(buf[i]!);
    return Number(v);
  }
  const s = buf
    .toString('ascii', off, off + len)
    .replace(/\0.*$/s, '')
    .trim();
  return s ? parseInt(s, 8) : 0;
}

/** The records of a PAX extended header (`<len> <key>=<value>\n`...). */
export function parsePax(b: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < b.length) {
    const sp = b.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(b.toString('ascii', i, sp), 10);
    if (!len || len < 0) break;
    const rec = b.toString('utf8', sp + 1, i + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}

/** The mode bits, owner and mtime of an entry: its header's fields, or the PAX records before it. */
export function headerAttrs(h: Buffer, pax: Record<string, string>): RootAttrs {
  return {
    mode: num(h, 100, 8) & 0o7777,
    uid: pax.uid !== undefined ? Number(pax.uid) : num(h, 108, 8),
    gid: pax.gid !== undefined ? Number(pax.gid) : num(h, 116, 8),
    mtime: new Date((pax.mtime !== undefined ? Number(pax.mtime) : num(h, 136, 12)) * 1000),
  };
}

export class RootTap extends Transform {
  root?: RootAttrs;
  private head: Buffer[] = [];
  private headLen = 0;
  private done = false;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (!this.done) {
      this.head.push(chunk);
      this.headLen += chunk.length;
      this.tryParse(false);
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (!this.done) this.tryParse(true);
    cb();
  }

  private tryParse(final: boolean) {
    const b = Buffer.concat(this.head, this.headLen);
    let off = 0;
    let pax: Record<string, string> = {};
    for (;;) {
      if (b.length < off + 512) {
        if (final || this.headLen > 1 << 20) this.done = true;
        return;
      }
      const h = b.subarray(off, off + 512);
      if (h.every((x) => x === 0)) {
        this.done = true;
        return;
      }
      const type = String.fromCharCode(h[156]!);
      const size = num(h, 124, 12);
      if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
        const dataEnd = off + 512 + Math.ceil(size / 512) * 512;
        if (b.length < dataEnd) {
          if (final || this.headLen > 1 << 20) this.done = true;
          return;
        }
        if (type === 'x') pax = { ...pax, ...parsePax(b.subarray(off + 512, off + 512 + size)) };
        off = dataEnd;
        continue;
      }
      const name = pax.path ?? h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
      this.done = true;
      this.head = [];
      if ((type === '5' || name.endsWith('/')) && (name === './' || name === '.' || name === '/')) {
        this.root = headerAttrs(h, pax);
      }
      return;
    }
  }
}

/** A tar holding one directory entry `name/` with the given attributes (PAX for large ids). */
export function rootEntryTar(name: string, a: RootAttrs): tar.Pack {
  const pack = tar.pack();
  const big = a.uid > 0o777777 || a.gid > 0o777777;
  pack.entry({
    name: `${name}/`,
    type: 'directory',
    mode: a.mode,
    uid: big ? 0 : a.uid,
    gid: big ? 0 : a.gid,
    mtime: a.mtime,
    ...(big ? { pax: { uid: String(a.uid), gid: String(a.gid) } } : {}),
  });
  pack.finalize();
  return pack;
}
