/**
 * A volume read straight from the engine host's disk: GNU tar on the volume's directory, where
 * ferry runs as root on the host of a local engine. Measured here on 1.1 GiB: 1.3 s and 1.4 CPU
 * seconds, against 4-9 s through the engine's archive endpoint (`docker cp`), which also puts
 * the engine's own CPU on the critical path of the maintenance window.
 *
 * Only where the archive is the one the engine would give: the same entries in the same order
 * (sorted by name), numeric owners (no names: a hand-run `tar x` on another host cannot map them
 * to other ids), second-resolution mtimes, no atime/ctime, the file capability and user xattrs.
 * Everything else goes through the engine as before:
 *  - FERRY_HOST_VOLUMES=0, or ferry not root, or the engine not on a unix socket, Podman, rootless
 *    or user-namespace remapped (owners on disk are not the container's);
 *  - a volume of another driver, or with driver options (an NFS or bind mount of the local driver
 *    is only there while a container runs);
 *  - a directory that is not the one the engine sees: its mode and mtime (to the nanosecond) must
 *    be what the engine reports for the container's mount point (a socket forwarded from a VM, a
 *    chroot, another mount namespace);
 *  - no GNU tar on the host.
 */
import { spawn } from 'node:child_process';
import { lstat } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import type { Engine, EngineFacts, VolumeInspect } from '../engine/engine.js';
import { IoError } from '../errors.js';
import type { Progress } from './context.js';

export const HOST_VOLUMES_ENV = 'FERRY_HOST_VOLUMES';

/** Why the volume cannot be read from the host's disk, or undefined when it can. Pure; unit-tested. */
export function hostReadRefusal(
  facts: Pick<EngineFacts, 'local' | 'podman' | 'remapped'>,
  volume: Pick<VolumeInspect, 'Driver' | 'Options' | 'Mountpoint'> | undefined,
  env: { uid: number | undefined; setting: string | undefined },
): string | undefined {
  if (env.setting !== undefined && /^(0|off|no|false)$/i.test(env.setting)) return `${HOST_VOLUMES_ENV}=${env.setting}`;
  if (env.uid !== 0) return 'ferry is not root';
  if (!facts.local) return 'the engine is not on this host';
  if (facts.podman) return 'Podman';
  if (facts.remapped) return 'the engine remaps user ids (rootless or userns-remap)';
  if (!volume) return 'no such volume';
  if (volume.Driver !== 'local') return `volume driver ${volume.Driver}`;
  if (volume.Options && Object.keys(volume.Options).length) return 'a volume with driver options (mounted only while in use)';
  if (!volume.Mountpoint || !volume.Mountpoint.startsWith('/')) return 'no mount point';
  return undefined;
}

const GO_MODE_DIR = 2 ** 31;

/** Nanoseconds since the epoch of an RFC 3339 time with up to 9 fraction digits (as Go writes it). */
export function rfc3339Nanos(s: string): bigint | undefined {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(s);
  if (!m) return undefined;
  const secs = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(secs)) return undefined;
  return BigInt(secs) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/**
 * Whether what the engine reports for a container's mount point (Go FileMode bits, RFC 3339
 * mtime) is this local directory (lstat with bigint: mode, mtimeNs). Pure; unit-tested.
 */
export function sameDirectory(engine: { mode: number; mtime: string }, local: { mode: number; mtimeNs: bigint; isDirectory: boolean }): boolean {
  if (!local.isDirectory) return false;
  if ((engine.mode & GO_MODE_DIR) === 0) return false;
  if ((engine.mode & 0o777) !== (local.mode & 0o777)) return false;
  const t = rfc3339Nanos(engine.mtime);
  return t !== undefined && t === local.mtimeNs;
}

/** The arguments of the GNU tar that writes a volume's archive to stdout. Pure; unit-tested. */
export function hostTarArgs(dir: string): string[] {
  return [
    '--create',
    '--file=-',
    `--directory=${dir}`,
    '--format=posix',
    '--numeric-owner',
    '--sort=name',
    '--xattrs',
    '--xattrs-include=security.capability',
    '--xattrs-include=user.*',
    '--pax-option=delete=atime,delete=ctime,delete=mtime',
    '--warning=no-file-ignored',
    '.',
  ];
}

let gnuTar: Promise<boolean> | undefined;

/** Whether `tar` is GNU tar 1.28 or newer (--sort). Asked once. */
function haveGnuTar(): Promise<boolean> {
  gnuTar ??= new Promise<boolean>((resolve) => {
    let out = '';
    const c = spawn('tar', ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.on('error', () => resolve(false));
    c.on('close', (code) => {
      const m = /GNU tar\)? (\d+)\.(\d+)/.exec(out);
      resolve(code === 0 && !!m && (Number(m[1]) > 1 || Number(m[2]) >= 28));
    });
  });
  return gnuTar;
}

export interface HostVolumeReader {
  stream: Readable;
  done: () => Promise<void>;
  /** The directory read. */
  dir: string;
}

/**
 * Open `volume` of the (quiesced) container `spec` on the host's disk, or undefined where the
 * engine must read it (see the top of this file; `why` is told the reason).
 */
export async function openHostVolumeReader(
  engine: Engine,
  spec: { sourceId: string; mounts: { type: string; source?: string; destination: string }[] },
  volume: string,
  progress?: Progress,
  why?: (reason: string) => void,
): Promise<HostVolumeReader | undefined> {
  const no = (reason: string) => {
    why?.(reason);
    return undefined;
  };
  const env = { uid: process.getuid?.(), setting: process.env[HOST_VOLUMES_ENV] };
  const early = hostReadRefusal(engine.facts, { Driver: 'local', Options: null, Mountpoint: '/' }, env);
  if (early) return no(early);
  const info = await engine.inspectVolume(volume);
  const refusal = hostReadRefusal(engine.facts, info, env);
  if (refusal) return no(refusal);
  const dir = info!.Mountpoint;
  const mount = spec.mounts.find((m) => m.type === 'volume' && m.source === volume);
  if (!mount) return no('the container does not mount it');
  const local = await lstat(dir, { bigint: true }).catch(() => undefined);
  if (!local) return no(`${dir} is not on this host`);
  const seen = await engine.statPath(spec.sourceId, mount.destination).catch(() => undefined);
  if (!seen || !sameDirectory(seen, { mode: Number(local.mode), mtimeNs: local.mtimeNs, isDirectory: local.isDirectory() }))
    return no(`${dir} here is not the directory the engine mounts`);
  if (!(await haveGnuTar())) return no('no GNU tar 1.28 or newer on this host');

  const child = spawn('tar', hostTarArgs(dir), { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    if (stderr.length < 4096) stderr += b.toString('utf8');
  });
  child.stdout.pipe(out, { end: false });
  // The archive ends only once tar has said it is whole: a tar that failed half-way must not
  // look like a volume that ended there.
  const exited = new Promise<number>((resolve) => {
    child.on('error', (err) => {
      out.destroy(new IoError(`cannot run tar on ${dir}: ${err.message}`, { hint: `${HOST_VOLUMES_ENV}=0 reads the volume through the engine instead` }));
      resolve(-1);
    });
    child.on('close', (code, signal) => {
      const c = code ?? (signal ? 128 : -1);
      if (c === 0 || c === 1) {
        // 1: a file changed while it was read (only a running container, --consistency none)
        if (c === 1) progress?.warn(`volume ${volume} changed while it was read: ${stderr.trim().split('\n').slice(0, 3).join('; ')}`);
        out.end();
      } else if (!out.destroyed)
        out.destroy(new IoError(`tar could not read volume ${volume} at ${dir} (exit ${c}): ${stderr.trim().slice(0, 500) || 'no message'}`, { hint: `the volume data could not be read completely; ${HOST_VOLUMES_ENV}=0 reads it through the engine instead` }));
      resolve(c);
    });
  });
  // The consumer gave up (its own failure is the one reported): stop tar.
  out.on('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  return {
    stream: out,
    dir,
    done: async () => {
      await exited;
    },
  };
}
