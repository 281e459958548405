/**
 * Checking a bundle: read it whole, one pass, streaming, and say whether it is whole (ferry verify,
 * restore before it overwrites anything, backup --verify, a restic snapshot's check).
 *
 * The bundle reader already checks the outer structure: member order, unknown members, non-file
 * entries, and each member's size and sha256 against the trailer. On top of that every member is
 * decompressed and parsed as it streams past:
 *   - an image member must be a docker image archive: a tar whose manifest.json lists, for each
 *     image, a Config file and Layers files that are present in the archive; and where it has an
 *     OCI index.json (Docker 25+), each image it names must have a manifest in the archive whose
 *     config and layer blobs are all there (data/image-complete.ts);
 *   - a volume or bind member must be a well-formed tar, ending with its end-of-archive blocks,
 *     whose entry names are relative and have no `..` component, and whose hard links do not point
 *     at an absolute path or outside the archive.
 * Nothing is buffered but docker's (small) manifest.json, and an OCI layout's index.json and
 * small blobs (manifests, configs: at most 32 MiB of them); memory stays flat whatever the size.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { PassThrough, Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { decompressor, type Codec } from './codec.js';
import { SizeLimit } from './limit.js';
import type { MemberKind } from './manifest.js';
import { BundleReader, type DataMember, type SignerInfo } from './reader.js';
import { BLOCK } from './tar.js';
import { BundleError } from '../errors.js';
import { imageArchiveGaps, SMALL_FILE, SMALL_TOTAL, type ArchiveFile } from '../data/image-complete.js';
import { checkAborted, type RunContext } from '../context.js';

export interface MemberCheck {
  /** Member name (or manifest.json / trailer.json / SHA256SUMS for the bundle's own entries). */
  name: string;
  kind: MemberKind | 'bundle';
  codec?: Codec;
  /** Stored bytes read. */
  bytes?: number;
  ok: boolean;
  problems: string[];
}

export interface VerifyReport {
  bundle: string;
  ok: boolean;
  members: MemberCheck[];
  /**
   * Set where the bundle could not be read at all for a reason that says nothing about its
   * content (no passphrase, permission denied): it was not verified, and is not called damaged.
   */
  unverified?: { code: string; exitCode: number; message: string };
  /** A signed bundle whose signature checked out: who signed it (with --trust: as allowed_signers names them). */
  signer?: SignerInfo;
}

/** Largest docker manifest.json read from an image archive. */
const MAX_IMAGE_MANIFEST = 8 << 20;
/** Problems of one kind reported per member before summarising. */
const MAX_LISTED = 5;

type Entry = Readable & { header: tar.Header };

/** Why an entry name is not acceptable, if it is not. */
export function unsafeEntryName(name: string): string | undefined {
  if (name.startsWith('/')) return 'is an absolute path';
  if (name.split('/').includes('..')) return 'climbs out with ..';
  return undefined;
}

/** Why a hard link target is not acceptable (targets are relative to the archive root). */
export function unsafeLinkTarget(target: string): string | undefined {
  if (target.startsWith('/')) return 'points at an absolute path';
  const n = path.posix.normalize(target);
  if (n === '..' || n.startsWith('../')) return 'points outside the archive';
  return undefined;
}

function normalizeName(name: string): string {
  const n = path.posix.normalize(name).replace(/\/+$/, '');
  return n === '.' ? '' : n.replace(/^\.\//, '');
}

/** Keeps the last 1024 bytes that passed: a tar must end with two zero blocks. */
class TailTap extends Transform {
  tail = Buffer.alloc(0);
  total = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void) {
    this.total += chunk.length;
    const keep = BLOCK * 2;
    this.tail =
      chunk.length >= keep
        ? Buffer.from(chunk.subarray(chunk.length - keep))
        : Buffer.concat([this.tail, chunk]).subarray(-keep);
    cb(null, chunk);
  }
  endsWithEndOfArchive(): boolean {
    return this.total >= BLOCK * 2 && this.tail.length === BLOCK * 2 && this.tail.every((b) => b === 0);
  }
}

/** Collects problems about entries, listing the first few of each kind. */
class Problems {
  readonly list: string[] = [];
  private readonly counts = new Map<string, number>();
  add(kind: string, message: string) {
    const n = (this.counts.get(kind) ?? 0) + 1;
    this.counts.set(kind, n);
    if (n <= MAX_LISTED) this.list.push(message);
  }
  finish(): string[] {
    for (const [kind, n] of this.counts)
      if (n > MAX_LISTED) this.list.push(`... and ${n - MAX_LISTED} more entries that ${kind}`);
    return this.list;
  }
}

function checkEntryHeader(h: tar.Header, problems: Problems) {
  const why = unsafeEntryName(h.name);
  if (why) problems.add(why, `entry ${JSON.stringify(h.name)} ${why}`);
  if (h.type === 'link') {
    const lwhy = unsafeLinkTarget(h.linkname ?? '');
    if (lwhy)
      problems.add(
        `are hard links that ${lwhy}`,
        `hard link ${JSON.stringify(h.name)} -> ${JSON.stringify(h.linkname)} ${lwhy}`,
      );
  }
  // A device node is content, not damage: backup writes it (a volume may hold one) and restore
  // creates it again, so verify agrees with them. Whether an untrusted bundle may bring one onto
  // a host is a restore policy (docs/security.md), not a check of the bundle's integrity.
}

/**
 * Entries written through a symlink an earlier entry of the same archive made (`./a -> /etc`,
 * then `./a/cron.d/x`): extracted, they land wherever the link points. Restore's tar refuses
 * them, so verify calls such a member bad too. Holds the names of the symlinks seen (only those).
 */
export class SymlinkGuard {
  private readonly links = new Set<string>();

  /** Why entry `h` is not acceptable here, if it is written through a symlink; then records it. */
  check(h: { name: string; type?: string | null }): string | undefined {
    const n = normalizeName(h.name);
    let why: string | undefined;
    if (this.links.size)
      for (let i = n.indexOf('/'); i > 0; i = n.indexOf('/', i + 1)) {
        const parent = n.slice(0, i);
        if (this.links.has(parent)) {
          why = `is written through the symlink ${JSON.stringify(parent)}`;
          break;
        }
      }
    if (h.type === 'symlink') this.links.add(n);
    else if (this.links.size) this.links.delete(n); // replaced by what comes now
    return why;
  }
}

async function readCapped(e: Entry, max: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of e) {
    n += (c as Buffer).length;
    if (n > max) {
      e.resume();
      return undefined;
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** What the image-archive check learns while the archive streams past. */
class ImageArchive {
  readonly entries = new Map<string, { type: string; link?: string }>();
  /** The OCI layout's files: sizes, and the bytes of index.json and of small blobs. */
  readonly files = new Map<string, ArchiveFile>();
  kept = 0;
  manifestText?: string;
  manifestTooLarge = false;

  /** Whether an entry's bytes are kept for the OCI check (index.json, a small blob). */
  keeps(name: string, size: number): boolean {
    return (
      (name === 'index.json' || name.startsWith('blobs/sha256/')) &&
      size <= SMALL_FILE &&
      this.kept + size <= SMALL_TOTAL
    );
  }

  present(name: string): boolean {
    let n = normalizeName(name);
    for (let hops = 0; hops < 16; hops++) {
      const e = this.entries.get(n);
      if (!e) return false;
      if (e.type === 'file' || e.type === 'contiguous-file') return true;
      if (e.type === 'symlink' && e.link !== undefined)
        n = normalizeName(path.posix.join(path.posix.dirname(n), e.link));
      else if (e.type === 'link' && e.link !== undefined) n = normalizeName(e.link);
      else return false;
    }
    return false;
  }

  problems(): string[] {
    const out: string[] = [];
    if (this.manifestTooLarge)
      return [`not a docker image archive: manifest.json is larger than ${MAX_IMAGE_MANIFEST} bytes`];
    if (this.manifestText === undefined) return ['not a docker image archive: it has no manifest.json'];
    let m: unknown;
    try {
      m = JSON.parse(this.manifestText);
    } catch (err) {
      return [`not a docker image archive: manifest.json is not valid JSON (${(err as Error).message})`];
    }
    if (!Array.isArray(m) || m.length === 0)
      return ['not a docker image archive: manifest.json is not a non-empty list of images'];
    for (const [i, img] of m.entries()) {
      const o = img as { Config?: unknown; Layers?: unknown };
      const what = `manifest.json entry ${i}`;
      if (!o || typeof o.Config !== 'string') {
        out.push(`${what} has no Config`);
        continue;
      }
      if (!this.present(o.Config)) out.push(`${what}: its Config ${o.Config} is not in the archive`);
      if (!Array.isArray(o.Layers) || o.Layers.some((l) => typeof l !== 'string')) {
        out.push(`${what} has no valid Layers list`);
        continue;
      }
      for (const l of o.Layers as string[])
        if (!this.present(l)) out.push(`${what}: its layer ${l} is not in the archive`);
    }
    // An OCI layout (Docker 25+): what its index.json names must be there too.
    if (this.files.has('index.json') && !out.length) {
      const oci = new Map(this.files);
      oci.delete('manifest.json');
      out.push(...imageArchiveGaps(oci).map((g) => `incomplete image: ${g}`));
    }
    return out.length > 10 ? [...out.slice(0, 10), `... and ${out.length - 10} more`] : out;
  }
}

/** Read one data member to its end: hash it, decompress it, parse its tar. */
async function checkMember(
  m: DataMember,
  partRawBytes: number | undefined,
  ctx: RunContext,
): Promise<{ sha256?: string; bytes: number; raw?: number; problems: string[] }> {
  const { name, kind, codec } = m.plan;
  const hash = createHash('sha256');
  let bytes = 0;
  // The progress line counts against the size before compression where the manifest declares it
  // (as restore does: a percentage and an ETA), else the stored bytes.
  const total = m.plan.rawBytes;
  const tap = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      if (total === undefined) ctx.progress.bytes(name, bytes);
      cb(null, chunk);
    },
  });
  let raw = 0;
  const rawTap = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb) {
      raw += chunk.length;
      if (total !== undefined) ctx.progress.bytes(name, raw, total);
      cb(null, chunk);
    },
  });
  let dec;
  try {
    dec = decompressor(codec, name);
  } catch (err) {
    // cannot read the contents here; still hash it so the checksum is known
    await pipeline(m.stream, tap, new Writable({ write: (_c, _e, cb) => cb() }));
    return { sha256: hash.digest('hex'), bytes, problems: [(err as Error).message] };
  }
  const tail = new TailTap();
  const extract = tar.extract();
  const problems = new Problems();
  const image = kind === 'image' ? new ImageArchive() : undefined;
  // When one stream of the pipeline fails, the pipeline destroys the others with the same error:
  // the first to report it is where it came from.
  let first: 'decompress' | 'tar' | undefined;
  dec.once('error', () => (first ??= 'decompress'));
  extract.once('error', () => (first ??= 'tar'));
  // Held to the raw size the manifest declares before the data, as restore is: rawBytes (bundles
  // written to a file), else partRawBytes for each part read so far (written to a stream: restore
  // holds each part to it; here the parts go through one decompressor, and a bomb stops within a
  // part or two of where it starts).
  const limit =
    m.plan.rawBytes !== undefined
      ? new SizeLimit(m.plan.rawBytes, name)
      : partRawBytes !== undefined
        ? new SizeLimit(() => m.partsRead() * partRawBytes, name)
        : new PassThrough({ highWaterMark: 1 << 20 });
  // Volume and bind data only: an image archive's own symlinks (layers shared by images) are read, never extracted through.
  const links = image ? undefined : new SymlinkGuard();
  const feeding = pipeline(m.stream, tap, dec, limit, rawTap, tail, extract);
  feeding.catch(() => {});
  let failure: string | undefined;
  try {
    for await (const e of extract as AsyncIterable<Entry>) {
      const h = e.header;
      checkEntryHeader(h, problems);
      const through = links?.check(h);
      if (through) problems.add('are written through a symlink', `entry ${JSON.stringify(h.name)} ${through}`);
      if (image) {
        const n = normalizeName(h.name);
        image.entries.set(n, {
          type: h.type ?? 'file',
          ...(h.type === 'symlink' || h.type === 'link' ? { link: h.linkname ?? '' } : {}),
        });
        if (n === 'manifest.json' && h.type === 'file') {
          const text = await readCapped(e, MAX_IMAGE_MANIFEST);
          if (text === undefined) image.manifestTooLarge = true;
          else image.manifestText = text;
          continue;
        }
        if ((h.type ?? 'file') === 'file') {
          const size = h.size ?? 0;
          if (image.keeps(n, size)) {
            const chunks: Buffer[] = [];
            for await (const c of e) chunks.push(c as Buffer);
            const body = Buffer.concat(chunks);
            image.kept += body.length;
            image.files.set(n, { size, body });
            continue;
          }
          image.files.set(n, { size });
        }
      }
      e.resume();
    }
    await feeding;
  } catch (err) {
    const root = ((await feeding.then(
      () => undefined,
      (e: unknown) => e,
    )) ?? err) as Error;
    if (root instanceof BundleError) failure = root.message;
    else if (first === 'decompress' && codec !== 'none') failure = `cannot be decompressed (${codec}): ${root.message}`;
    else failure = `not a well-formed tar archive: ${root.message}`;
  }
  checkAborted(ctx.signal);
  const out = problems.finish();
  if (failure) {
    out.unshift(failure);
    return { bytes, problems: out };
  }
  if (!tail.endsWithEndOfArchive())
    out.unshift(
      tail.total === 0
        ? 'empty: not a tar archive'
        : 'not a well-formed tar archive: it ends without the end-of-archive blocks (truncated)',
    );
  if (image) out.push(...image.problems());
  return { sha256: hash.digest('hex'), bytes, raw: tail.total, problems: out };
}

/** Verify a bundle read from a stream. Bundle problems are reported, not thrown; I/O and abort errors are thrown. */
export async function verifyStream(stream: Readable, location: string, ctx: RunContext): Promise<VerifyReport> {
  let reader: BundleReader;
  try {
    reader = await BundleReader.open(stream, location, {
      passphrase: ctx.passphrase,
      identities: ctx.identities,
      trust: ctx.trust,
    });
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    return {
      bundle: location,
      ok: false,
      members: [{ name: err.member ?? 'manifest.json', kind: 'bundle', ok: false, problems: [err.message] }],
    };
  }
  const checks = new Map<string, MemberCheck>();
  for (const p of reader.manifest.members)
    checks.set(p.name, { name: p.name, kind: p.kind, codec: p.codec, ok: true, problems: [] });
  const extra: MemberCheck[] = [];
  const reached = new Set<string>();
  const digests = new Map<string, { sha256: string; bytes: number }>();
  const raws = new Map<string, number>();
  let failure: BundleError | undefined;
  try {
    for await (const m of reader.members()) {
      checkAborted(ctx.signal);
      const c = checks.get(m.plan.name)!;
      reached.add(c.name);
      ctx.progress.step(`verify ${c.name}`);
      const r = await checkMember(m, reader.manifest.partRawBytes, ctx);
      c.bytes = r.bytes;
      c.problems.push(...r.problems);
      if (r.sha256) digests.set(c.name, { sha256: r.sha256, bytes: r.bytes });
      if (r.raw !== undefined) raws.set(c.name, r.raw);
    }
    // A member must inflate to exactly the size its trailer declares (restore holds it to that).
    for (const tm of reader.trailer.members) {
      const raw = raws.get(tm.name);
      if (raw !== undefined && tm.rawBytes >= 0 && raw !== tm.rawBytes)
        checks.get(tm.name)?.problems.push(`it decompresses to ${raw} bytes, the trailer declares ${tm.rawBytes}`);
    }
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    failure = err;
  }
  checkAborted(ctx.signal);
  if (failure) {
    // Every member whose checksum disagrees with the trailer, not only the first the reader met.
    const t = reader.unverifiedTrailer;
    const flagged = new Set<string>();
    for (const tm of t?.members ?? []) {
      const d = digests.get(tm.name);
      const c = checks.get(tm.name);
      if (!d || !c) continue;
      if (d.bytes !== tm.bytes) c.problems.push(`it has ${d.bytes} bytes, the trailer says ${tm.bytes}`);
      else if (d.sha256 !== tm.sha256) c.problems.push('damaged: its sha256 does not match the trailer');
      else continue;
      flagged.add(tm.name);
    }
    const at = failure.member;
    if (at && checks.has(at)) {
      if (!flagged.has(at)) checks.get(at)!.problems.push(failure.message);
    } else {
      extra.push({ name: at ?? 'bundle', kind: 'bundle', ok: false, problems: [failure.message] });
    }
    for (const c of checks.values())
      if (!reached.has(c.name) && !c.problems.length)
        c.problems.push('missing: the bundle is damaged or ends before it');
  }
  const members = [...checks.values(), ...extra];
  for (const c of members) c.ok = c.problems.length === 0;
  return {
    bundle: location,
    ok: members.every((c) => c.ok),
    members,
    ...(reader.signer ? { signer: reader.signer } : {}),
  };
}

/** The names of the bad members, for one-line messages. */
export function badMembers(r: VerifyReport): string[] {
  return r.members.filter((m) => !m.ok).map((m) => m.name);
}
