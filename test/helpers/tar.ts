/**
 * Tar archives in tests, with tar-stream: pack a list of entries into a Buffer, read a tar (a
 * Buffer or a stream) back into its entries or a name → content Map, collect a stream into a
 * Buffer. Only what every caller wants is decided here; a test's own defaults (mtime, owner,
 * mode, a symlink's target) stay at its call sites, so its archives stay what they were.
 */
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';

/** An entry to pack: its header, and for a file its content (none: empty). */
export type TarEntry = Partial<tar.Header> & { name: string; data?: Buffer | string };

/** An entry read back: its header as tar-stream decodes it, and its content (empty for a directory or link). */
export type ReadTarEntry = tar.Header & { data: Buffer };

const isFile = (h: Partial<tar.Header>) => !h.type || h.type === 'file' || h.type === 'contiguous-file';

/**
 * A tar of these entries in this order. A file gets its data as body (its size is the data's);
 * a directory, link or other entry gets no body. Unset header fields take tar-stream's defaults
 * (mode 0644 or 0755, uid/gid 0, mtime now). The entries are not changed.
 */
export async function packTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const out = collect(pack);
  for (const { data, ...header } of entries)
    if (isFile(header)) pack.entry(header, data ?? Buffer.alloc(0));
    else pack.entry(header);
  pack.finalize();
  return out;
}

/** Every entry of a tar, in order, with its content. An error of a source stream fails the read. */
export async function tarEntries(src: Buffer | Readable): Promise<ReadTarEntry[]> {
  const stream = Buffer.isBuffer(src) ? Readable.from([src]) : src;
  const extract = tar.extract();
  stream.on('error', (err) => extract.destroy(err));
  stream.pipe(extract);
  const out: ReadTarEntry[] = [];
  for await (const e of extract) out.push({ ...e.header, data: await collect(e) });
  return out;
}

/** A tar's entries as name → content (a name that repeats: its last content, at its first place). */
export async function tarFiles(src: Buffer | Readable): Promise<Map<string, Buffer>> {
  return new Map((await tarEntries(src)).map((e) => [e.name, e.data]));
}

/** All a stream gives, as one Buffer (strings as UTF-8); rejects with the stream's error. */
export async function collect(r: Readable | AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r)
    chunks.push(Buffer.isBuffer(c) ? c : c instanceof Uint8Array ? Buffer.from(c) : Buffer.from(String(c)));
  return Buffer.concat(chunks);
}
