/**
 * Volume data read and written straight on the engine host's disk: GNU tar on the volume's
 * directory, run on that host (this machine for a local engine, the SSH host for ssh://) as root.
 * Reading and writing this way is several times faster than through the engine's archive
 * endpoint (`docker cp`), which also puts the engine's own CPU on the critical path of the
 * maintenance window (docs/performance.md, Volume data on the hosts' disks).
 *
 * Only where the archive is the one the engine would give: the same entries in the same order
 * (sorted by name), numeric owners (no names: a hand-run `tar x` on another host cannot map them
 * to other ids), second-resolution mtimes, no atime/ctime; and more than the engine gives where
 * it can: the file capability, user and trusted xattrs (the engine's archive carries only the
 * capability), and sparse files with their holes (PAX sparse 1.0, which the engine and GNU tar
 * read; the engine writes the holes as zeros).
 * Everything else goes through the engine as before:
 *  - FERRY_HOST_VOLUMES=0, a TCP engine (no way onto its host), not root there (`id -u`), Podman,
 *    rootless or user-namespace remapped (owners on disk are not the container's);
 *  - a volume of another driver, or with driver options (an NFS or bind mount of the local driver
 *    is only there while a container runs);
 *  - a directory that is not the one the engine sees: its mode and mtime (to the nanosecond) must
 *    be what the engine reports for a container's mount point of the volume (a socket forwarded
 *    from a VM, a chroot, another mount namespace);
 *  - no GNU tar 1.28 or newer on the host.
 * Writing extracts with the engine's own semantics: numeric owners, permissions, xattrs, the
 * `./` entry applied to the volume's root. The data is then flushed to the disk (`sync -f`, the
 * filesystem holding the volume) before ferry says it is there; while tar writes, the same flush
 * runs every WRITE_BEHIND_MS, so that the disk works while the data arrives and the last flush
 * has little left to do. Without it the host's page cache takes the whole volume (up to
 * dirty_background_ratio of its memory) and the flush, whoever does it (ferry, or the engine at
 * the next container's creation), stalls the end of the run (docs/performance.md, Write-behind,
 * and fewer shells).
 */
import { excludeTarArgs } from './excludes.js';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Engine } from '../engine/engine.js';
import { localShell, type HostProcess, type HostShell } from '../hostaccess/shell.js';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { HostAccess } from '../hostaccess/access.js';
import { HOST_VOLUMES_ENV, hostAccessRefusal } from '../hostaccess/refusals.js';
import { isRefused, refused, type Refused } from './paths.js';
import { gatedOutput } from '../util/gated-output.js';
import { keepText } from '../util/keep-text.js';
import { TarEndTrim } from '../util/tar-end.js';
import { IoError } from '../errors.js';
import { faultPoint } from '../util/fault.js';
import { FIND_FORMAT, parseListing, type Listing } from './delta.js';
import type { Progress } from '../context.js';

/** How often the filesystem a volume is being written into is flushed while tar writes. */
export const WRITE_BEHIND_MS = 500;

/** The write script's exit status when tar succeeded and only the last flush failed. */
const FLUSH_FAILED = 199;

/**
 * After VETTED_PREFIX ($d the volume's directory; $1 the write-behind period in seconds, then
 * tar's arguments): tar extracts stdin while a loop flushes the filesystem (`sync -f`) every
 * period, for as long as this shell lives; then one last flush. tar's status, or FLUSH_FAILED.
 */
const WRITE_SCRIPT = [
  't=$1; shift',
  '( while kill -0 $$ 2>/dev/null && sleep "$t"; do sync -f -- "$d"; done ) </dev/null >/dev/null 2>&1 & w=$!',
  'tar "$@"; s=$?',
  'kill $w 2>/dev/null',
  '[ $s -eq 0 ] || exit $s',
  `sync -f -- "$d" || exit ${FLUSH_FAILED}`,
].join('\n');

const GO_MODE_DIR = 2 ** 31;

/** Nanoseconds since the epoch of an RFC 3339 time with up to 9 fraction digits (as Go writes it). */
export function rfc3339Nanos(s: string): bigint | undefined {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(s);
  if (!m) return undefined;
  const secs = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(secs)) return undefined;
  return BigInt(secs) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/** `stat --format=%f:%.9Y` (raw mode in hex, mtime with nanoseconds) as mode and mtimeNs. Pure; unit-tested. */
export function parseStat(out: string): { mode: number; mtimeNs: bigint; isDirectory: boolean } | undefined {
  const m = /^([0-9a-f]+):(\d+)\.(\d{9})\s*$/.exec(out);
  if (!m) return undefined;
  const mode = parseInt(m[1]!, 16);
  return { mode, mtimeNs: BigInt(m[2]!) * 1_000_000_000n + BigInt(m[3]!), isDirectory: (mode & 0o170000) === 0o040000 };
}

/**
 * Whether what the engine reports for a container's mount point (Go FileMode bits, RFC 3339
 * mtime) is this directory on the host (mode, mtimeNs). Pure; unit-tested.
 */
export function sameDirectory(
  engine: { mode: number; mtime: string },
  local: { mode: number; mtimeNs: bigint; isDirectory: boolean },
): boolean {
  if (!local.isDirectory) return false;
  if ((engine.mode & GO_MODE_DIR) === 0) return false;
  if ((engine.mode & 0o777) !== (local.mode & 0o777)) return false;
  const t = rfc3339Nanos(engine.mtime);
  return t !== undefined && t === local.mtimeNs;
}

/**
 * GNU tar's record, in 512-byte blocks, on both sides: 64 KiB (a pipe's capacity, and what Node
 * reads from one at a time) instead of tar's 10 KiB. tar reads files, writes the pipe and reads it
 * a record at a time: with 10 KiB records ferry got the archive in 10 KiB reads and sent it in as
 * many SSH packets. 64 KiB records made the second migration over ssh:// faster, and larger
 * ones (256 KiB, 1 MiB) were no faster still (docs/performance.md, 64 KiB tar records). The zeros
 * that fill the last record (up to 64 KiB) are left out of what is read (TarEndTrim): the engine
 * ends its archive at the end-of-archive marker, and Podman's archive PUT fails on what follows.
 * tar reading stdin takes a short last record.
 */
export const TAR_RECORD_BLOCKS = 128;

/** The arguments of the GNU tar that writes a volume's archive to stdout. Pure; unit-tested. */
export function hostTarArgs(dir: string, exclude: readonly string[] = []): string[] {
  return [
    '--create',
    '--file=-',
    `--blocking-factor=${TAR_RECORD_BLOCKS}`,
    `--directory=${dir}`,
    '--format=posix',
    '--numeric-owner',
    '--sort=name',
    '--xattrs',
    '--xattrs-include=security.capability',
    '--xattrs-include=user.*',
    '--xattrs-include=trusted.*',
    // holes stay holes (PAX sparse 1.0): a 2 GiB sparse disk image is a few blocks in the archive
    '--sparse',
    '--pax-option=delete=atime,delete=ctime,delete=mtime',
    '--warning=no-file-ignored',
    // the volume's path excludes (excludes.ts: the same ones every other path leaves out)
    ...excludeTarArgs(exclude),
    '.',
  ];
}

/**
 * The arguments of a GNU tar that only measures the archive hostTarArgs would write: into
 * /dev/null (which GNU tar recognises and then reads no file's content, only the metadata) in
 * 512-byte records, with --totals: its "Total bytes written" is then the archive's size to the
 * byte, end marker included, as the reader trims it (TarEndTrim). Pure; unit-tested.
 */
export function hostTarSizeArgs(dir: string, exclude: readonly string[] = []): string[] {
  const args = hostTarArgs(dir, exclude).map((a) =>
    a === '--file=-' ? '--file=/dev/null' : a.startsWith('--blocking-factor=') ? '--blocking-factor=1' : a,
  );
  return [...args.slice(0, -1), '--totals', ...args.slice(-1)];
}

/** `Total bytes written: 3005440 (2.9MiB, 16GiB/s)` from GNU tar's --totals. Pure. */
export function parseTarTotals(stderr: string): number | undefined {
  const m = /^Total bytes written: (\d+)/m.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

/**
 * The arguments of the GNU tar that writes the archive of only the entries named on its stdin
 * (NUL-separated, `./`-relative, parents first: a pre-copy's delta, docs/precopy.md), each
 * without what it holds. `running`: the volume's container still runs, and an entry may be gone
 * by the time tar reaches it (the next listing finds that out). Pure; unit-tested.
 */
export function hostDeltaTarArgs(dir: string, running: boolean, exclude: readonly string[] = []): string[] {
  const args = hostTarArgs(dir, exclude).filter((a) => a !== '.' && a !== '--sort=name');
  return [
    ...args,
    '--no-recursion',
    '--null',
    '--no-unquote',
    ...(running ? ['--ignore-failed-read', '--warning=no-failed-read'] : []),
    '--files-from=-',
  ];
}

/** The arguments of the GNU tar that extracts a volume's archive from stdin, as the engine would. Pure; unit-tested. */
export function hostUntarArgs(dir: string): string[] {
  return [
    '--extract',
    '--file=-',
    `--blocking-factor=${TAR_RECORD_BLOCKS}`,
    `--directory=${dir}`,
    '--numeric-owner',
    '--same-owner',
    '--preserve-permissions',
    '--xattrs',
    '--xattrs-include=*',
    '--warning=no-unknown-keyword',
    '--warning=no-timestamp',
  ];
}

type EngineStat = { mode: number; mtime: string } | undefined;

/**
 * The volume's directory on the engine's host, where ferry may reach it there as root: the host
 * offers it (`access`: root there, GNU tar 1.28+, decided once per engine in hostaccess/access.ts)
 * and the volume is not refused (hostAccessRefusal). Whether it is the directory the engine
 * mounts is settled by runVetted.
 */
async function hostVolumeDir(
  engine: Engine,
  volume: string,
  access: HostAccess | Promise<HostAccess>,
): Promise<{ shell: HostShell; dir: string } | Refused> {
  const a = await access;
  if (!a.volumes.use || !a.shell) return refused(a.volumes.reason);
  const shell = a.shell;
  const info = await engine.inspectVolume(volume);
  const refusal = hostAccessRefusal({ ...engine.facts, ...engine.quirks, host: true }, info, undefined);
  if (refusal) return refused(refusal);
  return { shell, dir: info!.Mountpoint };
}

/**
 * The start of every script run on a volume's directory ($1): it prints the directory's stat,
 * then waits for ferry's answer on stdin (`go`, once that is what the engine sees) before it does
 * anything else. One exec channel, where a stat of its own would be another (each one a login
 * shell on the host, slow to start where its rc files do much: docs/performance.md, Write-behind,
 * and fewer shells). `read` takes no byte past its line, so what follows on stdin is the script's.
 */
const VETTED_PREFIX =
  'd=$1; shift; stat --format=%f:%.9Y -- "$d" || exit 197; IFS= read -r go && [ "$go" = go ] || exit 198; ';

/** The first line of a stream (without it), the stream paused just after it; undefined at its end or after max bytes without one. */
function firstLine(stream: Readable, max = 4096): Promise<string | undefined> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const done = (line?: string, rest?: Buffer) => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onEnd);
      stream.pause();
      if (rest?.length) stream.unshift(rest);
      resolve(line);
    };
    const onData = (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      const i = buf.indexOf(10);
      if (i >= 0) done(buf.subarray(0, i).toString('utf8'), buf.subarray(i + 1));
      else if (buf.length > max) done();
    };
    const onEnd = () => done();
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onEnd);
  });
}

/**
 * The directories found to be the engine's, per host shell (a run's): a volume's directory does
 * not move while the run uses it, and a volume in use changes its root's mtime at any moment
 * (the pre-copy reads volumes of running containers), so it is compared once.
 */
const vetted = new WeakMap<HostShell, Set<string>>();

/**
 * How often a directory whose mtime differs from the engine's view is compared again before it is
 * refused, a running container's (a new file in the volume's root changes its mtime between the
 * two stats).
 */
const VET_TRIES_RUNNING = 10;

/** runVetted, where the volume's container runs: compared again a few times before it is refused. */
async function runVettedRunning(
  shell: HostShell,
  dir: string,
  seen: () => Promise<EngineStat>,
  body: string,
  args: string[],
  running: boolean,
): Promise<HostProcess | undefined> {
  for (let i = 1; ; i++) {
    const child = await runVetted(shell, dir, seen, body, args);
    if (child || !running || i >= VET_TRIES_RUNNING) return child;
    await new Promise((r) => setTimeout(r, 20 * i));
  }
}

/**
 * Run `body` (a shell script after VETTED_PREFIX: $d the directory, "$@" args) on the host once
 * the directory there is the one the engine mounts (`seen`: the engine's stat of a container's
 * mount point of the volume: mode and mtime to the nanosecond); undefined, with nothing run, where
 * it is not (a socket forwarded from a VM, a chroot, another mount namespace) or not there.
 */
async function runVetted(
  shell: HostShell,
  dir: string,
  seen: () => Promise<EngineStat>,
  body: string,
  args: string[],
): Promise<HostProcess | undefined> {
  const viewing = seen().catch(() => undefined);
  const child = await shell.run(['sh', '-c', VETTED_PREFIX + body, 'sh', dir, ...args]);
  const [line, engineView] = await Promise.all([firstLine(child.stdout), viewing]);
  const local = line !== undefined ? parseStat(line) : undefined;
  let known = vetted.get(shell);
  if (local && (known?.has(dir) || (engineView && sameDirectory(engineView, local)))) {
    if (!known) vetted.set(shell, (known = new Set()));
    known.add(dir);
    child.stdin.write('go\n');
    return child;
  }
  child.stdin.end('no\n');
  child.stdout.resume();
  child.stderr.resume();
  await child.exit;
  return undefined;
}

export interface HostVolumeReader {
  stream: Readable;
  done: () => Promise<void>;
  /** The directory read, and where. */
  dir: string;
  where: string;
}

/** Why a directory on the host is not used: it is not the one the engine mounts. */
const NOT_THE_ENGINES = "the volume's directory on the host is not the one the engine mounts";

/**
 * Open `volume` of the (quiesced) container `spec` on the host's disk, or why the engine must
 * read it (see the top of this file).
 */
export async function openHostVolumeReader(
  engine: Engine,
  spec: { sourceId: string; mounts: { type: string; source?: string; destination: string }[] },
  volume: string,
  progress: Progress | undefined,
  access: HostAccess | Promise<HostAccess>,
  only?: { paths: string[]; running: boolean },
  exclude: readonly string[] = [],
): Promise<HostVolumeReader | Refused> {
  const mount = spec.mounts.find((m) => m.type === 'volume' && m.source === volume);
  if (!mount) return refused('the container does not mount the volume');
  const at = await hostVolumeDir(engine, volume, access);
  if (isRefused(at)) return at;
  const { shell, dir } = at;
  const child = await runVettedRunning(
    shell,
    dir,
    () => engine.statPath(spec.sourceId, mount.destination),
    'exec tar "$@"',
    only ? hostDeltaTarArgs(dir, only.running, exclude) : hostTarArgs(dir, exclude),
    !!only?.running,
  );
  if (!child) return refused(NOT_THE_ENGINES);
  // A delta: the names tar reads, after the `go` runVetted wrote.
  child.stdin.end(only ? Buffer.from(only.paths.map((p) => `${p}\0`).join('')) : undefined);
  const stderr = keepText(child.stderr);
  // The archive as the engine would end it: right after its end-of-archive marker, without the
  // zeros that fill tar's last 64 KiB record.
  const trimmed = new TarEndTrim();
  pipeline(child.stdout, trimmed).catch(() => {}); // a failure shows in tar's exit status
  // The archive ends only once tar has said it is whole: a tar that failed half-way must not
  // look like a volume that ended there.
  const { stream: out, settled } = gatedOutput(
    trimmed,
    child.exit,
    (code) => {
      if (code === 0) return undefined;
      // 1: a file changed while it was read (only a running container, --consistency none)
      if (code === 1) {
        if (only?.running) return undefined; // expected: the next listing finds what changed
        progress?.warn(
          `volume ${volume} changed while it was read: ${stderr().trim().split('\n').slice(0, 3).join('; ')}`,
        );
        return undefined;
      }
      return (
        child.lost() ??
        new IoError(
          `tar could not read volume ${volume} at ${dir} on ${shell.where} (exit ${code ?? 'by a signal'}): ${stderr().trim().slice(0, 500) || 'no message'}`,
          {
            hint: `the volume data could not be read completely; ${HOST_VOLUMES_ENV}=0 reads it through the engine instead`,
          },
        )
      );
    },
    () => child.kill(),
  );
  return {
    stream: out,
    dir,
    where: shell.where,
    done: () => settled,
  };
}

/**
 * The size of the archive openHostVolumeReader gives for `volume`, measured on the host before
 * (or while) it is read, for the progress line's total and ETA; undefined where the host path is
 * not open (the same checks as the reader) or tar could not say. Never throws.
 */
export async function hostVolumeArchiveSize(
  engine: Engine,
  spec: { sourceId: string; mounts: { type: string; source?: string; destination: string }[] },
  volume: string,
  access: HostAccess | Promise<HostAccess>,
  exclude: readonly string[] = [],
): Promise<number | undefined> {
  try {
    const mount = spec.mounts.find((m) => m.type === 'volume' && m.source === volume);
    if (!mount) return undefined;
    const at = await hostVolumeDir(engine, volume, access);
    if (isRefused(at)) return undefined;
    const child = await runVetted(
      at.shell,
      at.dir,
      () => engine.statPath(spec.sourceId, mount.destination),
      'exec tar "$@"',
      hostTarSizeArgs(at.dir, exclude),
    );
    if (!child) return undefined;
    child.stdin.end();
    child.stdout.resume();
    const stderr = keepText(child.stderr);
    const code = await child.exit;
    return code === 0 ? parseTarTotals(stderr()) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The extended attributes GNU tar could not set while extracting (it says so on stderr and still
 * exits 0: "setxattrat: Cannot set 'trusted.k' extended attribute for file './f': Operation not
 * permitted"), as `<key> on <file>: <why>`. Pure; unit-tested.
 */
export function lostXattrs(stderr: string): string[] {
  const out: string[] = [];
  for (const m of stderr.matchAll(/Cannot set '([^']+)' extended attribute for file '([^']*)': ([^\n]+)/g))
    out.push(`${m[1]} on ${m[2]}: ${m[3]!.trim()}`);
  return out;
}

/** What a write on the host lost: the xattrs the archive had that the volume's filesystem refused. */
export interface HostWrite {
  xattrsLost?: string[];
}

/**
 * Extract `data` (a volume archive) into `volume`'s directory on the host, if it can be reached
 * there (`seen`: the engine's stat of a container's mount point of it). Refused, with why, when it
 * cannot (nothing was read from `data`); throws when the extraction failed. Extended attributes
 * the filesystem refused are a warning (once for the volume) and in the answer.
 */
export async function writeHostVolume(
  engine: Engine,
  volume: string,
  seen: () => Promise<EngineStat>,
  data: Readable,
  progress: Progress | undefined,
  access: HostAccess | Promise<HostAccess>,
): Promise<HostWrite | Refused> {
  const w = await openHostVolumeWriter(engine, volume, seen, progress, access);
  return isRefused(w) ? w : w.run(data);
}

/** A shell on the host, vetted and waiting for its input: what it does starts only once that is given. */
export interface HostWaiting<I, O> {
  run(input: I): Promise<O>;
  /** Never given its input: end it (nothing is written). */
  cancel(): Promise<void>;
}

/**
 * writeHostVolume's shell, opened now (the SSH channel, the login shell, the vetting: the slow
 * part on a remote host) and given its archive later: tar waits on its stdin meanwhile. The
 * pre-copy opens it before the container is frozen, so that the frozen pass only sends data.
 */
export async function openHostVolumeWriter(
  engine: Engine,
  volume: string,
  seen: () => Promise<EngineStat>,
  progress: Progress | undefined,
  access: HostAccess | Promise<HostAccess>,
): Promise<HostWaiting<Readable, HostWrite> | Refused> {
  const at = await hostVolumeDir(engine, volume, access);
  if (isRefused(at)) return at;
  const { shell, dir } = at;
  const child = await runVetted(shell, dir, seen, WRITE_SCRIPT, [
    String(WRITE_BEHIND_MS / 1000),
    ...hostUntarArgs(dir),
  ]);
  if (!child) return refused(NOT_THE_ENGINES);
  const stderr = keepText(child.stderr);
  child.stdout.resume();
  const run = (data: Readable) => {
    progress?.info(`volume ${volume}: written into ${dir} on ${shell.where}`);
    return extractInto(child, stderr, data, volume, dir, shell.where, progress);
  };
  return { run, cancel: () => endUnused(child) };
}

/**
 * A waiting shell never given its input: its stdin ended (an empty list removes nothing, an empty
 * archive extracts nothing) and it is killed; its status does not matter.
 */
async function endUnused(child: HostProcess): Promise<void> {
  child.stdin.on('error', () => {});
  if (!child.stdin.writableEnded) child.stdin.end();
  child.kill();
  await child.exit.catch(() => {});
}

async function extractInto(
  child: HostProcess,
  stderr: () => string,
  data: Readable,
  volume: string,
  dir: string,
  where: string,
  progress: Progress | undefined,
): Promise<HostWrite> {
  try {
    await pipeline(data, child.stdin);
  } catch (err) {
    child.kill();
    await child.exit;
    // the data's own failure (a damaged bundle, a dropped connection), unless tar stopped reading
    if (
      !/EPIPE|ERR_STREAM_PREMATURE_CLOSE|write after end/i.test(
        String((err as NodeJS.ErrnoException).code ?? (err as Error).message),
      )
    )
      throw err;
  }
  const code = await child.exit;
  const lost = child.lost();
  if (code === FLUSH_FAILED)
    progress?.warn(
      `volume ${volume}: written, but flushing it to the disk of ${where} failed (sync -f: ${stderr().trim().slice(0, 200) || 'no message'}): it is in that host's page cache until the kernel writes it`,
    );
  else if (code !== 0 && lost) throw lost;
  else if (code !== 0)
    throw new IoError(
      `tar could not write volume ${volume} into ${dir} on ${where} (exit ${code ?? 'by a signal'}): ${stderr().trim().slice(0, 500) || 'no message'}`,
      {
        hint: `what it wrote is removed with the volume; ${HOST_VOLUMES_ENV}=0 writes through the engine instead`,
      },
    );
  const unset = lostXattrs(stderr());
  if (!unset.length) return {};
  progress?.warn(
    `volume ${volume}: ${unset.length === 1 ? 'an extended attribute' : `${unset.length} extended attributes`} of the archive could not be set in ${dir} on ${where} (${unset.slice(0, 3).join('; ')}${unset.length > 3 ? '; ...' : ''}); the data is there without ${unset.length === 1 ? 'it' : 'them'}`,
  );
  return { xattrsLost: unset };
}

/**
 * After VETTED_PREFIX ($d the new volume's directory, $1 the staged one's): empty $d (the engine
 * may have copied the image's files into it at create), move every entry of $1 into it (a rename:
 * both live in the engine's volumes directory), give $d the owner, mode and mtime of $1, flush.
 */
const MOVE_SCRIPT = [
  'f=$1; [ -d "$f" ] || exit 3',
  // the root's before the moves change its mtime
  'o=$(stat -c %u:%g -- "$f") && m=$(stat -c %a -- "$f") && t=$(stat -c %.9Y -- "$f") || exit 3',
  'find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + || exit 4',
  'find "$f" -mindepth 1 -maxdepth 1 -exec mv -t "$d" -- {} + || exit 5',
  'chown -- "$o" "$d" && chmod -- "$m" "$d" && touch -d "@$t" -- "$d" || exit 6',
  `sync -f -- "$d" || exit ${FLUSH_FAILED}`,
].join('\n');

/**
 * Move the whole content of volume `from` into volume `to` on the engine's host (renames, no
 * copy), `to`'s root taking `from`'s owner, mode and mtime; `seen`: the engine's stat of a
 * container's mount point of `to`. Refused, with why, when either cannot be reached there
 * (nothing was changed); throws when the move failed.
 */
export async function moveHostVolume(
  engine: Engine,
  from: string,
  to: string,
  seen: () => Promise<EngineStat>,
  access: HostAccess | Promise<HostAccess>,
): Promise<true | Refused> {
  const src = await hostVolumeDir(engine, from, access);
  if (isRefused(src)) return src;
  const dst = await hostVolumeDir(engine, to, access);
  if (isRefused(dst)) return dst;
  const child = await runVetted(dst.shell, dst.dir, seen, MOVE_SCRIPT, [src.dir]);
  if (!child) return refused(NOT_THE_ENGINES);
  child.stdin.end();
  child.stdout.resume();
  const stderr = keepText(child.stderr);
  const code = await child.exit;
  if (code === 0 || code === FLUSH_FAILED) return true;
  throw (
    child.lost() ??
    new IoError(
      `could not move the data of volume ${from} into volume ${to} on ${dst.shell.where} (exit ${code ?? 'by a signal'}): ${stderr().trim().slice(0, 500) || 'no message'}`,
      { hint: `${HOST_VOLUMES_ENV}=0 copies it through the engine instead` },
    )
  );
}

/** A volume's file tree that a program on this host writes itself (a restic snapshot's: `restic restore`). */
export interface HostTreeWriter {
  /** Where the tree lies under the directory `write` fills (`volumes/data`): that directory's content is the volume's. */
  sub: string;
  /** Write the tree into `stage` (an empty directory on the volume's filesystem), as `stage/<sub>`; stopped when `signal` aborts. */
  write(stage: string, signal?: AbortSignal): Promise<void>;
}

/**
 * Fill `volume`'s (new, empty) directory on this host with a tree that `tree` writes: into a
 * staging directory beside it on the same filesystem (inside the volume's own directory on the
 * engine, `<volumes>/<name>/.ferry-tree-*`, which goes with the volume should it be removed), then
 * moved in by renames once it is whole, the root taking the tree's owner, mode and mtime
 * (MOVE_SCRIPT). So the volume's directory holds nothing until the tree is complete. Refused,
 * with why, before anything is written: no host access for volumes, the volume is on another host
 * (the program runs on this one), its directory is not the one the engine mounts (`seen`), or the
 * staging directory is not on its filesystem. Throws when the writing or the move failed (the
 * staging directory is removed).
 */
export async function fillHostVolumeTree(
  engine: Engine,
  volume: string,
  seen: () => Promise<EngineStat>,
  tree: HostTreeWriter,
  access: HostAccess | Promise<HostAccess>,
  progress?: Progress,
  signal?: AbortSignal,
): Promise<true | Refused> {
  const at = await hostVolumeDir(engine, volume, access);
  if (isRefused(at)) return at;
  const { shell, dir } = at;
  if (shell !== localShell) return refused(`the volume is on ${shell.where}; the tree is written on this host`);
  const vet = await runVetted(shell, dir, seen, 'exit 0', []);
  if (!vet) return refused(NOT_THE_ENGINES);
  vet.stdin.end();
  vet.stdout.resume();
  vet.stderr.resume();
  await vet.exit;
  let stage: string;
  try {
    stage = await mkdtemp(join(dirname(dir), '.ferry-tree-'));
  } catch (err) {
    return refused(`no staging directory beside ${dir}: ${(err as Error).message}`);
  }
  try {
    const [a, b] = await Promise.all([stat(stage), stat(dir)]);
    if (a.dev !== b.dev) return refused(`${dirname(dir)} is not on the filesystem of ${dir}`);
    signal?.throwIfAborted();
    progress?.info(`volume ${volume}: its files written into ${dir} on ${shell.where}`);
    await tree.write(stage, signal);
    signal?.throwIfAborted();
    await faultPoint('volume-tree');
    const from = join(stage, tree.sub);
    const child = await runVetted(shell, dir, seen, MOVE_SCRIPT, [from]);
    if (!child) throw new IoError(`${dir} is no longer the directory the engine mounts for volume ${volume}`);
    child.stdin.end();
    child.stdout.resume();
    const stderr = keepText(child.stderr);
    const code = await child.exit;
    if (code === FLUSH_FAILED)
      progress?.warn(
        `volume ${volume}: written, but flushing it to disk failed (sync -f: ${stderr().trim().slice(0, 200) || 'no message'}): it is in the page cache until the kernel writes it`,
      );
    else if (code !== 0)
      throw new IoError(
        `could not move the files of volume ${volume} from ${from} into ${dir} (exit ${code ?? 'by a signal'}): ${stderr().trim().slice(0, 500) || 'no message'}`,
        {
          hint: `what was written is removed with the volume; ${HOST_VOLUMES_ENV}=0 writes through the engine instead`,
        },
      );
    return true;
  } finally {
    await rm(stage, { recursive: true, force: true }).catch(() => {});
  }
}

/** Whether `volume`'s directory can be reached on the engine's host (the directory itself is vetted at each use). */
export async function hostVolumeReachable(
  engine: Engine,
  volume: string,
  access: HostAccess | Promise<HostAccess>,
): Promise<true | Refused> {
  const at = await hostVolumeDir(engine, volume, access);
  return isRefused(at) ? at : true;
}

/**
 * After VETTED_PREFIX: the start time by the host's clock, then every entry of the volume as
 * delta.ts reads it (FIND_FORMAT). A file that goes while find walks (the container runs) makes
 * find exit 1: that file is simply not in the listing.
 */
const LIST_SCRIPT = `cd -- "$d" || exit 3; date +%s.%N | tr -d '\\n'; printf '\\0'; exec find . -printf '${FIND_FORMAT}'`;

/**
 * List `volume` on its host's disk (`seen`: the engine's stat of a container's mount point of it),
 * for the pre-copy (delta.ts). `running`: its container runs (entries may go while it is listed).
 */
export async function listHostVolume(
  engine: Engine,
  volume: string,
  seen: () => Promise<EngineStat>,
  access: HostAccess | Promise<HostAccess>,
  running: boolean,
): Promise<Listing | Refused> {
  const at = await hostVolumeDir(engine, volume, access);
  if (isRefused(at)) return at;
  const { shell, dir } = at;
  const child = await runVettedRunning(shell, dir, seen, LIST_SCRIPT, [], running);
  if (!child) return refused(NOT_THE_ENGINES);
  child.stdin.end();
  const stderr = keepText(child.stderr);
  const chunks: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => chunks.push(b));
  const done = new Promise<void>((resolve) => {
    child.stdout.once('end', () => resolve());
    child.stdout.once('error', () => resolve());
    child.stdout.resume();
  });
  const code = await child.exit;
  await done;
  if (code !== 0 && !(code === 1 && running))
    throw (
      child.lost() ??
      new IoError(
        `could not list volume ${volume} at ${dir} on ${shell.where} (exit ${code ?? 'by a signal'}): ${stderr().trim().slice(0, 500) || 'no message'}`,
        { hint: 'the pre-copy needs a listing of the volume; --no-precopy copies it in one pass instead' },
      )
    );
  return parseListing(Buffer.concat(chunks));
}

/**
 * After VETTED_PREFIX ($d the volume's directory): remove each path named on stdin
 * (NUL-separated, `./`-relative) with all it holds, but only where every directory above it is a
 * real directory inside the volume (no symlink on the way: a volume's content never reaches
 * outside it); a path whose parent is not there is already gone. Then flush.
 */
const REMOVE_SCRIPT = [
  'D=$(realpath -e -- "$d") || exit 3',
  `xargs -0 -r sh -c '
D=$1; shift
for p; do
  q=\${p#./}
  case "/$q/" in //|*/../*|*/./*) echo "refused to remove $p" >&2; exit 5;; esac
  par=\${q%/*}; if [ "$par" = "$q" ]; then r=$D; else r=$D/$par; fi
  if ! rp=$(realpath -e -- "$r" 2>/dev/null); then
    if [ -e "$r" ] || [ -L "$r" ]; then echo "not a directory inside the volume: $r" >&2; exit 5; fi
    continue
  fi
  [ "$rp" = "$r" ] || { echo "not a directory inside the volume: $r" >&2; exit 5; }
  rm -rf -- "$D/$q" || exit 4
done' sh "$D" || exit 4`,
  `sync -f -- "$d" || exit ${FLUSH_FAILED}`,
].join('\n');

/**
 * A shell that removes paths (`./`-relative, as a Delta's `remove`) from `volume` on its host's
 * disk (`seen`: the engine's stat of a container's mount point of it), opened now and given the
 * paths later (as openHostVolumeWriter). Refused, with why, when the volume cannot be reached
 * there (nothing removed); its run throws when a removal failed.
 */
export async function openHostRemoval(
  engine: Engine,
  volume: string,
  seen: () => Promise<EngineStat>,
  access: HostAccess | Promise<HostAccess>,
): Promise<HostWaiting<string[], true> | Refused> {
  const at = await hostVolumeDir(engine, volume, access);
  if (isRefused(at)) return at;
  const { shell, dir } = at;
  const child = await runVetted(shell, dir, seen, REMOVE_SCRIPT, []);
  if (!child) return refused(NOT_THE_ENGINES);
  child.stdout.resume();
  const stderr = keepText(child.stderr);
  const run = async (paths: string[]): Promise<true> => {
    child.stdin.end(Buffer.from(paths.map((p) => `${p}\0`).join('')));
    const code = await child.exit;
    if (code === 0 || code === FLUSH_FAILED) return true;
    throw (
      child.lost() ??
      new IoError(
        `could not remove what the source deleted from volume ${volume} at ${dir} on ${shell.where} (exit ${code ?? 'by a signal'}): ${stderr().trim().slice(0, 500) || 'no message'}`,
        { hint: 'what the target received is removed with the volume; --no-precopy copies it in one pass instead' },
      )
    );
  };
  return { run, cancel: () => endUnused(child) };
}

/**
 * Free bytes on the filesystem that holds `volume`'s directory on the engine's host (`df -P`,
 * for the space a staging copy needs: ops/steps/stage.ts). Refused where the directory is not
 * reached there; throws when df fails.
 */
export async function hostFreeBytes(
  engine: Engine,
  volume: string,
  access: HostAccess | Promise<HostAccess>,
): Promise<number | Refused> {
  const at = await hostVolumeDir(engine, volume, access);
  if (isRefused(at)) return at;
  const { shell, dir } = at;
  const child = await shell.run(['df', '-P', '-k', '--', dir]);
  child.stdin.end();
  const out = keepText(child.stdout);
  const stderr = keepText(child.stderr);
  const code = await child.exit;
  const free = parseDfFree(out());
  if (code !== 0 || free === undefined)
    throw (
      child.lost() ??
      new IoError(
        `could not tell the free space at ${dir} on ${shell.where} (df exit ${code ?? 'by a signal'}): ${stderr().trim().slice(0, 300) || 'no message'}`,
        { hint: '--precopy needs it for its staging copy; back up without --precopy' },
      )
    );
  return free;
}

/** The available bytes in `df -P -k` output (its second line's fourth column). Pure; unit-tested. */
export function parseDfFree(out: string): number | undefined {
  const line = out.trim().split('\n')[1];
  const kib = line?.trim().split(/\s+/)[3];
  return kib !== undefined && /^\d+$/.test(kib) ? Number(kib) * 1024 : undefined;
}
