/**
 * How a ferry backup lies in a restic repository, and the restic arguments that write and read
 * it. Pure: every function here is unit-tested; runner.ts runs what they build.
 *
 * One backup is one restic snapshot, taken with the staging directory as restic's working
 * directory, so that the snapshot's paths are relative and the same on every host:
 *
 *   /manifest.json          the bundle's manifest (every member uncompressed: codec none)
 *   /ferry-restic.json      this layout: where each member of the manifest is in the snapshot
 *   /images/<c>/...         the committed image's archive, unpacked: one file per layer
 *                           (`<chain id>/layer.tar`, or `blobs/sha256/<digest>`), so unchanged
 *                           layers are stored once, whatever snapshot they are in
 *   /volumes/<v>/...        a volume as a file tree (its directory on the engine's host, bind-mounted
 *                           read-only into the staging directory while restic reads it), or
 *   /volumes/<v>.tar        a volume as the engine's (stable) tar stream, where ferry cannot
 *                           read the volume's directory itself
 *
 * Snapshots are tagged `ferry`, `ferry-set=<names>` (the sorted container names, joined by `+`)
 * and `ferry-container=<name>` per container, with restic's host set to ferry's host name.
 *
 * A signed backup (--sign-key) adds a second, tiny snapshot: `/SHA256SUMS.sig`, the SSHSIG
 * signature of the bundle the first one rebuilds into, tagged `ferry-signature` and
 * `ferry-signs=<the first one's id>` (not `ferry`: ls, restore and prune's rules never see it).
 */
import { UsageError } from '../../errors.js';
import type { Manifest, ImageFacts } from '../../bundle/manifest.js';

export const RESTIC_PREFIX = 'restic:';
export const LAYOUT_FILE = 'ferry-restic.json';
export const MANIFEST_FILE = 'manifest.json';
export const LAYOUT = 'ferry-restic';
export const LAYOUT_VERSION = 1;
export const TAG = 'ferry';
/** A signed backup's signature: its own snapshot (see above). */
export const SIG_FILE = 'SHA256SUMS.sig';
export const SIG_TAG = 'ferry-signature';
const SIGNS = 'ferry-signs=';

/** A restic location from the command line: `restic:<repo>[#<snapshot id or container>]`. */
export interface ResticLocation {
  /** Anything restic takes as a repository (a path, sftp:, s3:, rest:, rclone:). */
  repo: string;
  /** A snapshot id (8 to 64 hex digits), when the fragment is one. */
  snapshot?: string;
  /** A container name: the latest snapshot that holds it. */
  container?: string;
}

export function isResticLocation(loc: string | undefined): boolean {
  return !!loc && loc.startsWith(RESTIC_PREFIX);
}

/** `restic:/srv/repo#web` -> { repo: '/srv/repo', container: 'web' }. Pure. */
export function parseResticLocation(loc: string): ResticLocation {
  if (!isResticLocation(loc)) throw new UsageError(`${loc} is not a restic location`, 'write restic:<repository>');
  const rest = loc.slice(RESTIC_PREFIX.length);
  const i = rest.lastIndexOf('#');
  const repo = i >= 0 ? rest.slice(0, i) : rest;
  const sel = i >= 0 ? rest.slice(i + 1) : '';
  if (!repo)
    throw new UsageError(`${loc} names no repository`, 'write restic:<repository>, e.g. restic:/srv/restic-repo');
  if (!sel) return { repo };
  if (/^[0-9a-f]{8,64}$/.test(sel)) return { repo, snapshot: sel };
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(sel))
    throw new UsageError(
      `${loc}: #${sel} is neither a snapshot id nor a container name`,
      'write restic:<repository>#<snapshot id> or restic:<repository>#<container>',
    );
  return { repo, container: sel };
}

/** What a backup's snapshot is tagged with. Pure. */
export function snapshotTags(containers: string[]): string[] {
  return [TAG, `ferry-set=${setKey(containers)}`, ...containers.map((c) => `ferry-container=${c}`)];
}

/** What the signature snapshot of a backup's snapshot is tagged with. Pure. */
export function signatureTags(snapshot: string): string[] {
  if (!/^[0-9a-f]{64}$/.test(snapshot)) throw new Error(`not a full snapshot id: ${snapshot}`);
  return [SIG_TAG, SIGNS + snapshot];
}

/** The snapshot a signature snapshot signs (its full id), if it is one. Pure. */
export function signedSnapshot(s: ResticSnapshot): string | undefined {
  if (!(s.tags ?? []).includes(SIG_TAG)) return undefined;
  return (s.tags ?? []).find((t) => t.startsWith(SIGNS))?.slice(SIGNS.length);
}

/** The container set of a snapshot: sorted names joined by `+` (names cannot hold `+` or `,`). */
export function setKey(containers: string[]): string {
  return [...containers].sort().join('+');
}

/** `restic -r <repo>`: the global arguments of every call. */
export function repoArgs(repo: string): string[] {
  return ['-r', repo];
}

/**
 * restic's own `-o key=value` options (backend settings such as `sftp.command=ssh -p 2222 backup@nas
 * -s sftp`, `s3.storage-class=...`): one per line of `text` (blank lines are skipped). Each is one
 * argument of its own on restic's command line, never through a shell. Throws an Error naming the
 * line that is not `key=value`. Pure.
 */
export function parseResticOptions(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!line.trim()) continue;
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*=/.test(line))
      throw new Error(`${JSON.stringify(line)} is not a restic option: write key=value, e.g. sftp.command=ssh ...`);
    out.push(line);
  }
  return out;
}

/** restic's `-o` arguments of these options (each `key=value`, as parseResticOptions gives them). Pure. */
export function optionArgs(options: readonly string[]): string[] {
  return options.flatMap((o) => ['-o', o]);
}

/** `restic backup` of the staging directory's entries (relative paths), as one snapshot. Pure. */
export function backupArgs(
  repo: string,
  opts: { host: string; tags: string[]; parent?: string; paths: string[] },
): string[] {
  if (!opts.paths.length) throw new Error('a restic backup needs paths');
  for (const p of opts.paths)
    if (p.startsWith('/') || p.startsWith('-') || p.split('/').includes('..'))
      throw new Error(`not a staging path: ${p}`);
  return [
    ...repoArgs(repo),
    'backup',
    '--json',
    '--host',
    opts.host,
    '--tag',
    opts.tags.join(','),
    ...(opts.parent ? ['--parent', opts.parent] : []),
    '--',
    ...[...opts.paths].sort(),
  ];
}

/** `restic snapshots --json`, only ferry's (and those of one set or container, when given). Pure. */
export function snapshotsArgs(repo: string, filter: { tags?: string[]; host?: string } = {}): string[] {
  return [
    ...repoArgs(repo),
    'snapshots',
    '--json',
    '--tag',
    (filter.tags ?? [TAG]).join(','),
    ...(filter.host ? ['--host', filter.host] : []),
  ];
}

/**
 * `restic snapshots --json` of ferry's snapshots and their signature snapshots, in one call (each
 * `--tag` is one alternative): a restore finds its snapshot and the signature of it in one list.
 * Pure.
 */
export function snapshotsAndSignaturesArgs(repo: string): string[] {
  return [...repoArgs(repo), 'snapshots', '--json', '--tag', TAG, '--tag', SIG_TAG];
}

/** `restic dump <snapshot> /<path>`: a file as it is, a directory as a tar. Pure. */
export function dumpArgs(repo: string, snapshot: string, path: string): string[] {
  return [...repoArgs(repo), 'dump', '--archive', 'tar', snapshot, `/${path.replace(/^\/+/, '')}`];
}

/**
 * `restic restore <snapshot> --target <dir> --include /<path>`: one directory of the snapshot
 * written under `dir`, at `dir/<path>`, with its owners, modes, times to the nanosecond, extended
 * attributes, hard links, symlinks and special files (restic 0.14 has no strip-components).
 * `sparse` (restic 0.15 and newer): runs of zeros written as holes. Pure.
 */
export function restoreArgs(repo: string, snapshot: string, path: string, target: string, sparse = false): string[] {
  const p = path.replace(/^\/+|\/+$/g, '');
  // a volume's name: no pattern characters, which restic's --include would expand
  if (!p || p.split('/').includes('..') || /[*?[\]\\]/.test(p)) throw new Error(`not a snapshot path: ${path}`);
  return [
    ...repoArgs(repo),
    'restore',
    snapshot,
    '--target',
    target,
    '--include',
    `/${p}`,
    ...(sparse ? ['--sparse'] : []),
  ];
}

/** Whether a restic version writes holes on restore (`restore --sparse`: 0.15 and newer). Pure. */
export function restoresSparse(version: string): boolean {
  const [maj, min] = version.split('.').map(Number) as [number, number];
  return maj > 0 || min >= 15;
}

/**
 * restic run in a mount namespace of its own, where each volume's directory is bind-mounted
 * read-only at its place in the staging directory: the mounts exist only for that one process and
 * vanish with it, also when ferry or restic is killed. `binds`: [host directory, staging path].
 * Pure.
 */
export function bindWrap(binds: [string, string][]): string[] {
  if (!binds.length) return [];
  return [
    'unshare',
    '--mount',
    '--propagation',
    'private',
    'sh',
    '-c',
    'n=$1; shift; while [ "$n" -gt 0 ]; do mount --bind -o ro "$1" "$2" || exit 125; shift 2; n=$((n-1)); done; exec "$@"',
    'sh',
    String(binds.length),
    ...binds.flat(),
  ];
}

/** `restic ls --json --recursive <snapshot> /<path>`: every node under a path, with its exact mtime, in restic's walk order. Pure. */
export function lsArgs(repo: string, snapshot: string, path: string): string[] {
  return [...repoArgs(repo), 'ls', '--json', '--recursive', snapshot, `/${path.replace(/^\/+/, '')}`];
}

/** `restic forget --prune <ids>`: remove these snapshots and the data only they held. Pure. */
export function forgetArgs(repo: string, ids: string[]): string[] {
  if (!ids.length) throw new Error('restic forget needs snapshot ids');
  for (const id of ids) if (!/^[0-9a-f]{8,64}$/.test(id)) throw new Error(`not a snapshot id: ${id}`);
  return [...repoArgs(repo), 'forget', '--prune', '--', ...ids];
}

/** `restic check`: the repository's structure (with `--read-data-subset`, also that much of its data). Pure. */
export function checkArgs(repo: string, readData?: string): string[] {
  return [...repoArgs(repo), 'check', ...(readData ? [`--read-data-subset=${readData}`] : [])];
}

/** A snapshot as `restic snapshots --json` lists it. */
export interface ResticSnapshot {
  id: string;
  short_id: string;
  time: string;
  hostname: string;
  tags?: string[];
  paths: string[];
}

/** Parse `restic snapshots --json` (restic prints `null` for none). Pure. */
export function parseSnapshots(out: string): ResticSnapshot[] {
  const v = JSON.parse(out.trim() || '[]') as unknown;
  if (v === null) return [];
  if (!Array.isArray(v)) throw new Error('restic snapshots --json did not give a list');
  return (v as ResticSnapshot[]).filter((s) => typeof s.id === 'string' && typeof s.time === 'string');
}

/** The containers a ferry snapshot holds, from its tags. Pure. */
export function snapshotContainers(s: ResticSnapshot): string[] {
  return (s.tags ?? []).filter((t) => t.startsWith('ferry-container=')).map((t) => t.slice('ferry-container='.length));
}

/** The set a ferry snapshot holds, from its tags. Pure. */
export function snapshotSet(s: ResticSnapshot): string {
  return (s.tags ?? []).find((t) => t.startsWith('ferry-set='))?.slice('ferry-set='.length) ?? '';
}

/** Newest first (restic lists oldest first). Pure. */
export function newestFirst(list: ResticSnapshot[]): ResticSnapshot[] {
  return [...list].sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
}

/**
 * The snapshot a location names: by id (a prefix of one, unique), else the newest one that holds
 * the container, else the newest ferry snapshot when the repository holds one container set only.
 * NotFound/Usage errors say what to write instead. Pure.
 */
export function selectSnapshot(list: ResticSnapshot[], loc: ResticLocation): ResticSnapshot | string {
  const mine = newestFirst(list.filter((s) => (s.tags ?? []).includes(TAG)));
  if (loc.snapshot) {
    const hits = mine.filter((s) => s.id.startsWith(loc.snapshot!));
    if (hits.length === 1) return hits[0]!;
    return hits.length ? `snapshot ${loc.snapshot} is ambiguous` : `no ferry snapshot ${loc.snapshot}`;
  }
  if (loc.container) {
    const hit = mine.find((s) => snapshotContainers(s).includes(loc.container!));
    return hit ?? `no ferry snapshot holds a container ${loc.container}`;
  }
  if (!mine.length) return 'the repository holds no ferry snapshot';
  const sets = new Set(mine.map(snapshotSet));
  if (sets.size > 1)
    return `the repository holds snapshots of ${sets.size} container sets (${[...sets].join(', ')}): name one`;
  return mine[0]!;
}

/** The summary line of `restic backup --json` (the last line whose message_type is summary). Pure. */
export interface BackupSummary {
  snapshot_id: string;
  files_new: number;
  files_changed: number;
  files_unmodified: number;
  data_added: number;
  total_bytes_processed: number;
  total_duration: number;
}

export function parseBackupSummary(out: string): BackupSummary {
  for (const line of out.trim().split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    const v = JSON.parse(line) as { message_type?: string } & BackupSummary;
    if (v.message_type === 'summary' && v.snapshot_id) return v;
  }
  throw new Error('restic backup --json gave no summary');
}

/** Where a volume lies in the snapshot: a file tree, or the engine's tar stream as one file. */
export interface LayoutVolume {
  name: string;
  /** Its member in the manifest. */
  member: string;
  kind: 'tree' | 'tar';
  /** Its path in the snapshot (no leading slash). */
  path: string;
  /** tree: the volume directory's own mode, owner and mtime (restic's dump of a directory leaves the directory itself out). */
  root?: { mode: number; uid: number; gid: number; mtime: number };
}

export interface LayoutImage {
  member: string;
  /** The directory in the snapshot that holds the unpacked image archive. */
  path: string;
  facts: ImageFacts;
}

/** /ferry-restic.json */
export interface Layout {
  layout: typeof LAYOUT;
  version: number;
  images: LayoutImage[];
  volumes: LayoutVolume[];
}

/** The snapshot path of a member: `volumes/data.tar` -> tree `volumes/data`, tar `volumes/data.tar`. Pure. */
export function memberPath(member: string, kind: 'tree' | 'tar' | 'image'): string {
  return kind === 'tar' ? member : member.replace(/\.tar$/, '');
}

/** Check a layout read back from a snapshot against its manifest; the layout, or a UsageError. Pure. */
export function checkLayout(v: unknown, manifest: Manifest): Layout {
  const l = v as Layout;
  if (!l || l.layout !== LAYOUT) throw new UsageError('the snapshot is not a ferry backup (no ferry-restic.json)');
  if (l.version !== LAYOUT_VERSION)
    throw new UsageError(`the snapshot's layout version ${l.version} is not one this ferry reads (${LAYOUT_VERSION})`);
  const placed = new Set([...l.images.map((i) => i.member), ...l.volumes.map((x) => x.member)]);
  for (const m of manifest.members)
    if (!placed.has(m.name)) throw new UsageError(`the snapshot's layout does not place member ${m.name}`);
  for (const p of [...l.images.map((i) => i.path), ...l.volumes.map((x) => x.path)])
    if (p.startsWith('/') || p.split('/').includes('..')) throw new UsageError(`bad path in the snapshot layout: ${p}`);
  return l;
}
