/**
 * The bundle's outer tar, written by hand because ferry streams members whose size is not known
 * when they start: on a seekable target the header is written with size 0 and patched after the
 * data; on a stream the member is cut into parts (see writer.ts). POSIX ustar headers; sizes past
 * 8 GiB use GNU base-256, which GNU tar, bsdtar and tar-stream read.
 */
export const BLOCK = 512;

const MAX_OCTAL_SIZE = 0o77777777777; // 8 GiB - 1

function writeString(buf: Buffer, off: number, len: number, s: string) {
  const b = Buffer.from(s, 'utf8');
  if (b.length > len) throw new Error(`tar field too long: ${s}`);
  b.copy(buf, off);
}

function writeOctal(buf: Buffer, off: number, len: number, n: number) {
  const s = n.toString(8).padStart(len - 1, '0');
  buf.write(s + '\0', off, len, 'ascii');
}

export interface TarHeader {
  name: string;
  size: number;
  mode?: number;
  mtime?: Date;
  type?: 'file' | 'directory';
}

export function encodeHeader(h: TarHeader): Buffer {
  const buf = Buffer.alloc(BLOCK);
  let name = h.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const i = name.lastIndexOf('/', 155);
    if (i <= 0 || Buffer.byteLength(name.slice(i + 1)) > 100) throw new Error(`member name too long: ${name}`);
    prefix = name.slice(0, i);
    name = name.slice(i + 1);
  }
  writeString(buf, 0, 100, name);
  writeOctal(buf, 100, 8, h.mode ?? (h.type === 'directory' ? 0o755 : 0o600));
  writeOctal(buf, 108, 8, 0);
  writeOctal(buf, 116, 8, 0);
  if (h.size <= MAX_OCTAL_SIZE) {
    writeOctal(buf, 124, 12, h.size);
  } else {
    // GNU base-256: high bit set on the first byte, big-endian value in the rest.
    buf[124] = 0x80;
    let v = BigInt(h.size);
    for (let i = 135; i > 124; i--) {
      buf[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  writeOctal(buf, 136, 12, Math.floor((h.mtime ?? new Date()).getTime() / 1000));
  buf.fill(0x20, 148, 156); // checksum placeholder: spaces
  buf[156] = h.type === 'directory' ? 0x35 : 0x30;
  buf.write('ustar\0', 257, 6, 'ascii');
  buf.write('00', 263, 2, 'ascii');
  writeString(buf, 265, 32, 'root');
  writeString(buf, 297, 32, 'root');
  if (prefix) writeString(buf, 345, 155, prefix);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += buf[i]!;
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return buf;
}

export function padding(size: number): Buffer {
  const r = size % BLOCK;
  return r === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - r);
}

/** End of archive: two zero blocks. */
export const END_OF_ARCHIVE = Buffer.alloc(BLOCK * 2);
