/**
 * The bundle manifest (first member, manifest.json) and trailer (last members, trailer.json and
 * SHA256SUMS). Pure: build, serialize, parse and validate. The format is described in docs/format.md.
 */
import { BundleError } from '../errors.js';
import type { ContainerSpec, NetworkSpec } from '../model/spec.js';
import type { Codec } from './codec.js';
import { CODECS } from './codec.js';

export const FORMAT = 'ferry-bundle';
export const FORMAT_VERSION = 1;
/** Oldest format version this ferry still reads. */
export const MIN_READABLE_VERSION = 1;

export const MANIFEST_MEMBER = 'manifest.json';
export const TRAILER_MEMBER = 'trailer.json';
export const SUMS_MEMBER = 'SHA256SUMS';
/** Signed bundles: the SSHSIG signature of SHA256SUMS, the last entry (docs/format.md, Signed bundles). */
export const SIG_MEMBER = 'SHA256SUMS.sig';
/** Largest manifest/trailer accepted, so a hostile bundle cannot make ferry read gigabytes of JSON. */
export const MAX_JSON_MEMBER = 32 << 20;

export type MemberKind = 'image' | 'volume' | 'bind';

export interface MemberPlan {
  name: string;
  kind: MemberKind;
  codec: Codec;
  /**
   * Bytes before compression, declared before the data (bundles written to a file or over SFTP:
   * the writer patches the manifest in place when the member is done). A reader stops a member
   * that inflates past it.
   */
  rawBytes?: number;
}

export interface ImageEntry {
  /**
   * The committed image's reference (repo:tag): as tagged inside the image archive, or, in push
   * mode, as pushed (`<registry host>/<prefix>/<name>:<stamp>`).
   */
  ref: string;
  /** The image member (imageMode "archive"). */
  member?: string;
  /**
   * imageMode "push": the image is in a registry, not in the bundle. `host` is the registry
   * (host[:port], for credentials); `ref` starts with it. The digest it was pushed with is only
   * known after the push, so it is in the trailer (ImageFacts.digest).
   */
  registry?: { host: string };
}

export type ImageMode = 'archive' | 'push';

/** Facts known only once the image is committed: recorded in the trailer. */
export interface ImageFacts {
  ref: string;
  id: string;
  /** RootFS layer diff ids (sha256 of each uncompressed layer), to skip what a target already has. */
  layers: string[];
  /** imageMode "push": the manifest digest the registry stored (`sha256:...`); pull `<repo>@<digest>`. */
  digest?: string;
}

export interface VolumeEntry {
  /** Volume name on the source engine (a 64-hex name for an anonymous volume). */
  name: string;
  anonymous: boolean;
  driver: string;
  driverOpts?: Record<string, string>;
  labels?: Record<string, string>;
  member: string;
  /**
   * Path excludes (patterns relative to the volume's root, data/excludes.ts): what matched them
   * was left out of the member on purpose. Absent: nothing was left out (and in older bundles).
   */
  excludePaths?: string[];
}

export interface BindEntry {
  container: string;
  hostPath: string;
  destination: string;
  member: string;
}

export interface ContainerEntry {
  spec: ContainerSpec;
  image: ImageEntry;
  /** Names of the volumes (entries of Manifest.volumes) this container mounts. */
  volumes: string[];
  binds: BindEntry[];
  consistency: 'pause' | 'stop' | 'none';
}

export interface Manifest {
  format: typeof FORMAT;
  formatVersion: number;
  ferryVersion: string;
  createdAt: string;
  /** How images are stored; absent means "archive" (image members). "push": in a registry. */
  imageMode?: ImageMode;
  /** The engine backed up; `hostname` is the host ferry ran on (the engine's host for a local socket). */
  source: { engine: string; serverVersion: string; apiVersion: string; os: string; arch: string; hostname: string };
  containers: ContainerEntry[];
  volumes: VolumeEntry[];
  networks: NetworkSpec[];
  /** Every data member the bundle holds, in the order they appear. */
  members: MemberPlan[];
  /**
   * Bundles written to a stream: every compressed member is cut into parts, each an independent
   * compressed frame holding at most this many bytes before compression (all but the last exactly
   * this many). A reader decompresses each part on its own and stops one that inflates past it.
   */
  partRawBytes?: number;
  /**
   * Signed bundles: the key that signs them, declared before any data (so that --trust refuses
   * an unknown signer before anything is changed). The signature itself is the last entry,
   * SHA256SUMS.sig, over SHA256SUMS, which then also lists manifest.json and trailer.json.
   */
  signature?: ManifestSignature;
}

export interface ManifestSignature {
  /** The SSHSIG namespace (trust.ts: BUNDLE_NAMESPACE). */
  namespace: string;
  /** The public key, as in allowed_signers: `ssh-ed25519 AAAA...`. */
  key: string;
  /** `SHA256:...`, as ssh-keygen -l prints it. */
  fingerprint: string;
}

/** Largest partRawBytes a reader accepts (a part is buffered by the writer). */
export const MAX_PART_RAW = 256 << 20;

export interface TrailerMember {
  name: string;
  /** Bytes stored in the bundle (after compression). */
  bytes: number;
  /** sha256 of the stored bytes. */
  sha256: string;
  /** Bytes before compression. */
  rawBytes: number;
  /** When the member was written to a stream: the tar entries it was cut into, in order. */
  parts?: number;
}

export interface Trailer {
  format: typeof FORMAT;
  formatVersion: number;
  complete: true;
  finishedAt: string;
  members: TrailerMember[];
  images: ImageFacts[];
}

function fail(msg: string, member = MANIFEST_MEMBER): never {
  throw new BundleError(`${member}: ${msg}`, { member, hint: 'the bundle is damaged or was not written by ferry' });
}

const SAFE_MEMBER = /^(images|volumes|binds)\/[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$/;

/** A member name is safe when it is relative, has no `..`, and lives under a known folder. */
export function isSafeMemberName(name: string): boolean {
  return SAFE_MEMBER.test(name) && !name.split('/').includes('..');
}

export function parseManifest(text: string): Manifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (err) {
    fail(`not valid JSON (${(err as Error).message})`);
  }
  if (!m || typeof m !== 'object') fail('not a JSON object');
  const o = m as Record<string, unknown>;
  if (o.format !== FORMAT) fail(`format is ${JSON.stringify(o.format)}, expected "${FORMAT}"`);
  if (typeof o.formatVersion !== 'number' || !Number.isInteger(o.formatVersion)) fail('formatVersion is missing');
  if (o.formatVersion > FORMAT_VERSION)
    throw new BundleError(
      `bundle format version ${o.formatVersion} is newer than this ferry understands (${FORMAT_VERSION})`,
      {
        member: MANIFEST_MEMBER,
        hint: 'upgrade ferry to read it',
      },
    );
  if (o.formatVersion < MIN_READABLE_VERSION) fail(`format version ${o.formatVersion} is no longer supported`);
  for (const k of ['containers', 'volumes', 'networks', 'members'] as const)
    if (!Array.isArray(o[k])) fail(`"${k}" is missing or not a list`);
  if (!o.source || typeof o.source !== 'object') fail('"source" is missing');
  const members = o.members as MemberPlan[];
  const seen = new Set<string>();
  for (const mp of members) {
    if (!mp || typeof mp.name !== 'string') fail('a member entry has no name');
    if (!isSafeMemberName(mp.name)) fail(`member name ${JSON.stringify(mp.name)} is not allowed`);
    if (seen.has(mp.name)) fail(`member ${mp.name} is listed twice`);
    seen.add(mp.name);
    if (!['image', 'volume', 'bind'].includes(mp.kind))
      fail(`member ${mp.name} has unknown kind ${JSON.stringify(mp.kind)}`);
    if (!CODECS.includes(mp.codec)) fail(`member ${mp.name} uses unknown codec ${JSON.stringify(mp.codec)}`);
    if (mp.rawBytes !== undefined && !(Number.isSafeInteger(mp.rawBytes) && mp.rawBytes >= 0))
      fail(`member ${mp.name} declares an invalid size ${JSON.stringify(mp.rawBytes)}`);
  }
  if (
    o.partRawBytes !== undefined &&
    !(
      Number.isSafeInteger(o.partRawBytes) &&
      (o.partRawBytes as number) > 0 &&
      (o.partRawBytes as number) <= MAX_PART_RAW
    )
  )
    fail(`partRawBytes ${JSON.stringify(o.partRawBytes)} is not a size between 1 and ${MAX_PART_RAW}`);
  const man = o as unknown as Manifest;
  if (o.signature !== undefined) {
    const sig = o.signature as Record<string, unknown> | null;
    if (
      !sig ||
      typeof sig !== 'object' ||
      typeof sig.namespace !== 'string' ||
      typeof sig.fingerprint !== 'string' ||
      typeof sig.key !== 'string' ||
      !/^[a-z0-9@.-]+ [A-Za-z0-9+/]+=*$/.test(sig.key)
    )
      fail('"signature" is not a key declaration (namespace, key, fingerprint)');
  }
  if (o.imageMode !== undefined && o.imageMode !== 'archive' && o.imageMode !== 'push')
    fail(`unknown imageMode ${JSON.stringify(o.imageMode)}`);
  const push = o.imageMode === 'push';
  for (const c of man.containers) {
    if (!c || !c.spec || typeof c.spec.name !== 'string' || !c.image || typeof c.image.ref !== 'string')
      fail('a container entry is incomplete');
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(c.spec.name))
      fail(`container name ${JSON.stringify(c.spec.name)} is not a valid name`);
    if (push) {
      // In a registry: no image member, and a reference under the registry host that pulls by digest.
      const reg = c.image.registry;
      if (c.image.member !== undefined)
        fail(`container ${c.spec.name}: imageMode is "push", yet it has an image member`);
      if (!reg || typeof reg.host !== 'string' || !/^[a-z0-9.-]+(:\d{1,5})?$/.test(reg.host))
        fail(`container ${c.spec.name}: imageMode is "push", but its image has no registry host`);
      if (!c.image.ref.startsWith(`${reg.host}/`) || !isTaggedRef(c.image.ref))
        fail(
          `container ${c.spec.name}: image reference ${JSON.stringify(c.image.ref)} is not a tagged reference in ${reg.host}`,
        );
    } else {
      if (typeof c.image.member !== 'string') fail('a container entry is incomplete');
      if (c.image.registry !== undefined)
        fail(`container ${c.spec.name}: its image has a registry, but imageMode is not "push"`);
      if (!seen.has(c.image.member))
        fail(`container ${c.spec.name} refers to member ${c.image.member}, which the bundle does not list`);
    }
    for (const b of c.binds ?? [])
      if (!seen.has(b.member))
        fail(`container ${c.spec.name} refers to member ${b.member}, which the bundle does not list`);
  }
  for (const v of man.volumes) {
    if (!v || typeof v.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(v.name))
      fail('a volume entry has an invalid name');
    if (!seen.has(v.member)) fail(`volume ${v.name} refers to member ${v.member}, which the bundle does not list`);
    if (
      v.excludePaths !== undefined &&
      (!Array.isArray(v.excludePaths) || !v.excludePaths.every((p) => typeof p === 'string'))
    )
      fail(`volume ${v.name}: excludePaths is not a list of patterns`);
  }
  return man;
}

export function parseTrailer(text: string, manifest: Manifest): Trailer {
  let t: Trailer;
  try {
    t = JSON.parse(text) as Trailer;
  } catch (err) {
    fail(`not valid JSON (${(err as Error).message})`, TRAILER_MEMBER);
  }
  if (!t || t.format !== FORMAT || t.complete !== true || !Array.isArray(t.members))
    fail('not a complete ferry trailer', TRAILER_MEMBER);
  const planned = new Set(manifest.members.map((m) => m.name));
  for (const m of t.members) {
    if (!m || typeof m !== 'object') fail('a member entry is not an object', TRAILER_MEMBER);
    if (!planned.has(m.name)) fail(`lists member ${JSON.stringify(m.name)} that the manifest does not`, TRAILER_MEMBER);
    if (typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256))
      fail(`member ${m.name} has no valid sha256`, TRAILER_MEMBER);
    if (!Number.isSafeInteger(m.bytes) || m.bytes < 0) fail(`member ${m.name} has no valid size`, TRAILER_MEMBER);
    const declared = manifest.members.find((p) => p.name === m.name)?.rawBytes;
    if (declared !== undefined && m.rawBytes !== declared)
      fail(
        `member ${m.name} has ${m.rawBytes} bytes before compression, the manifest declares ${declared}`,
        TRAILER_MEMBER,
      );
  }
  for (const name of planned)
    if (!t.members.some((m) => m.name === name)) fail(`has no checksum for member ${name}`, TRAILER_MEMBER);
  if (manifest.imageMode === 'push') {
    // The image is only in the registry: the trailer's digest is what restore pulls.
    if (!Array.isArray(t.images))
      fail('has no image facts, which a bundle whose images are in a registry needs', TRAILER_MEMBER);
    for (const c of manifest.containers) {
      const f = t.images.find((i) => i && i.ref === c.image.ref);
      if (!f || typeof f.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(f.digest))
        fail(
          `has no sha256 digest for image ${c.image.ref} (container ${c.spec.name}), which is in a registry`,
          TRAILER_MEMBER,
        );
    }
  }
  return t;
}

/** The digest a push-mode bundle's image was pushed with (parseTrailer has checked it is there). */
export function registryDigest(t: Trailer, ref: string): string | undefined {
  return t.images?.find((i) => i.ref === ref)?.digest;
}

/** `name:tag` with a tag Docker accepts (the part after the last `/` has a `:`). */
function isTaggedRef(ref: string): boolean {
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  return colon > slash && /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(ref.slice(colon + 1)) && !ref.includes('@');
}

export function sha256sums(t: Trailer): string {
  return t.members.map((m) => `${m.sha256}  ${m.name}\n`).join('');
}

/**
 * SHA256SUMS of a signed bundle (what SHA256SUMS.sig signs): manifest.json first, then every
 * data member as sha256sums() has them, then trailer.json; each the sha256 of its bytes as stored.
 */
export function signedSums(manifestSha: string, t: Trailer, trailerSha: string): string {
  return `${manifestSha}  ${MANIFEST_MEMBER}\n${sha256sums(t)}${trailerSha}  ${TRAILER_MEMBER}\n`;
}

/** A member name from a volume or container name; falls back to an index when the name is long. */
export function memberName(folder: 'images' | 'volumes' | 'binds', base: string, index: number, ext: string): string {
  const safe = base.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[^A-Za-z0-9]+/, '');
  const name = safe && safe.length <= 80 ? safe : `${String(index).padStart(3, '0')}`;
  return `${folder}/${name}.tar${ext}`;
}
