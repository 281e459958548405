/**
 * The pre-copy (docs/precopy.md): a volume copied to the target while its container still runs,
 * in passes, so that once the container is frozen (paused or stopped) only what changed since
 * the last pass is sent. Each pass: list the volume on the source host (delta.ts), send what
 * changed since the listing before the previous pass (a tar of those entries only, read with
 * GNU tar on the source host), and on the target remove what went away and extract the tar
 * (host-volume.ts). The first pass compares with an empty listing: it sends everything.
 *
 * The target may be the source's own engine: a backup pre-copies into a staging volume on the
 * source host (ops/steps/stage.ts) and writes the bundle's member from it; the passes, the policy
 * (delta.ts, copyAgain) and the frozen delta are the same.
 *
 * It lists and removes on the engines' hosts, so it goes where the volume's directory is reached
 * there on both sides (`host-tar`: a local or ssh:// engine, root, not Podman); anywhere else the
 * volume is copied in one pass once the container is frozen, as before, and the result says why.
 */
import { Transform, type Readable } from 'node:stream';
import type { Engine } from '../engine/engine.js';
import type { Progress } from '../context.js';
import { checkAborted } from '../context.js';
import { copyAgain, diffListings, type Delta, type Listing } from './delta.js';
import { excludeMatcher } from './excludes.js';
import { hostVolumeReachable, listHostVolume, openHostVolumeReader } from './host-volume.js';
import { applyVolumeDelta, prepareVolumeDelta, type PreparedDelta } from './volumes.js';
import { isRefused, refused, type Carried, type Refused, type Routing } from './paths.js';
import { IoError } from '../errors.js';
import { faultPoint } from '../util/fault.js';
import { abortable } from '../util/abortable.js';
import { Timeline } from '../util/timeline.js';

/** What the pre-copy of one volume did (in the result's dataPaths, per volume). */
export interface PrecopyReport {
  /** Passes while the container ran (the first sent everything). */
  passes: number;
  /** Bytes sent while it ran (the tar streams). */
  runningBytes: number;
  /** Bytes sent while it was frozen (the tar stream), entries sent then, and entries removed then. */
  frozenBytes: number;
  frozenEntries: number;
  frozenRemoved: number;
}

/** A volume pre-copied: the listing its target matches, and what was sent. */
export interface Precopied {
  volume: string;
  /** The target volume written. */
  fill: string;
  /** The listing taken before the last pass sent: what the target holds is the source as listed then, for every entry unchanged since. */
  base: Listing;
  report: PrecopyReport;
  read: Carried;
  written: Carried;
}

interface SourceSpec {
  sourceId: string;
  mounts: { type: string; source?: string; destination: string }[];
}

export interface PrecopyArgs {
  source: Engine;
  spec: SourceSpec;
  volume: string;
  target: Engine;
  /** The image holders on the target are made from. */
  holder: string;
  fill: string;
  progress: Progress;
  via: { source: Routing; target: Routing };
  signal: AbortSignal;
  /** The volume's path excludes (excludes.ts): never listed, so never sent nor removed on the target. */
  exclude?: readonly string[];
  /**
   * Asked with the first listing, before anything is sent: why the copy cannot go (e.g. too
   * little free space for it), or undefined when it can. A refusal leaves the target untouched.
   */
  room?: (first: Listing) => Promise<string | undefined>;
}

/** Why the volume cannot be pre-copied (undefined: it can). */
export async function precopyRefusal(a: Pick<PrecopyArgs, 'source' | 'target' | 'spec' | 'volume' | 'fill' | 'via'>) {
  if (!a.spec.mounts.some((m) => m.type === 'volume' && m.source === a.volume))
    return 'the container does not mount the volume';
  const s = await hostVolumeReachable(a.source, a.volume, a.via.source.access);
  if (isRefused(s)) return `source: ${s.refused}`;
  const t = await hostVolumeReachable(a.target, a.fill, a.via.target.access);
  if (isRefused(t)) return `target: ${t.refused}`;
  return undefined;
}

function seenOn(a: PrecopyArgs) {
  const mount = a.spec.mounts.find((m) => m.type === 'volume' && m.source === a.volume)!;
  return () => a.source.statPath(a.spec.sourceId, mount.destination);
}

async function list(a: PrecopyArgs, running: boolean): Promise<Listing> {
  const l = await listHostVolume(a.source, a.volume, seenOn(a), a.via.source.access, running);
  if (isRefused(l)) throw notThere(a, l);
  if (!a.exclude?.length) return l;
  const excluded = excludeMatcher(a.exclude);
  return { ...l, entries: new Map([...l.entries].filter(([p]) => !excluded(p))) };
}

function notThere(a: PrecopyArgs, r: Refused): IoError {
  return new IoError(`volume ${a.volume}: the pre-copy lost its way to the volume's directory (${r.refused})`, {
    hint: '--no-precopy copies each volume in one pass once the container is frozen',
  });
}

/** Send `delta` from the source volume to the target volume; bytes sent (the tar's). */
async function send(
  a: PrecopyArgs,
  delta: Delta,
  running: boolean,
  label: string,
  ready?: PreparedDelta,
): Promise<number> {
  let bytes = 0;
  let reader: { stream: Readable; done: () => Promise<void> } | undefined;
  if (delta.send.length) {
    const r = await openHostVolumeReader(
      a.source,
      a.spec,
      a.volume,
      a.progress,
      a.via.source.access,
      { paths: delta.send, running },
      a.exclude,
    );
    if (isRefused(r)) throw notThere(a, r);
    a.progress.via?.(label, 'host-tar -> host-tar');
    const counted = new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _e, cb) {
        bytes += chunk.length;
        a.progress.bytes(label, bytes, delta.bytes || undefined);
        cb(null, chunk);
      },
    });
    r.stream.on('error', (err) => counted.destroy(err));
    counted.on('error', () => {}); // the fill reports it, even when it fails before the fill listens
    // Told to stop: the pass ends now, not once the whole volume has gone.
    reader = { stream: abortable(r.stream.pipe(counted), a.signal), done: r.done };
    const source = r.stream;
    counted.on('close', () => source.destroy());
  }
  try {
    // The same points as a one-pass copy's (util/fault.ts): the reader is open, nothing written.
    if (reader) await faultPoint('volume-read');
    await faultPoint('volume-fill');
    const w = ready
      ? await ready.apply(delta.remove, reader?.stream)
      : await applyVolumeDelta(a.target, a.holder, a.fill, delta.remove, reader?.stream, a.via.target.access);
    if (isRefused(w)) throw notThere(a, w);
  } catch (err) {
    reader?.stream.destroy();
    await reader?.done().catch(() => {});
    throw err;
  }
  await reader?.done();
  return bytes;
}

/**
 * Copy `volume` to the target while its container runs: a first pass with everything, and more
 * while what changed in the meantime is big and shrinking (delta.ts, copyAgain). Refused, with
 * why, where the volume's directory is not reached on both hosts (nothing was sent).
 */
export async function precopyVolume(a: PrecopyArgs): Promise<Precopied | Refused> {
  const why = await precopyRefusal(a);
  if (why) return refused(why);
  let base: Listing = { takenAtNs: 0n, entries: new Map() };
  const report: PrecopyReport = { passes: 0, runningBytes: 0, frozenBytes: 0, frozenEntries: 0, frozenRemoved: 0 };
  const sent: number[] = [];
  let next = await list(a, true);
  const short = await a.room?.(next);
  if (short) return refused(short);
  let delta = diffListings(base, next);
  for (;;) {
    checkAborted(a.signal);
    report.passes++;
    a.progress.step(
      `volume ${a.volume} -> ${a.fill}: pass ${report.passes} while it runs (${delta.send.length} entries${delta.remove.length ? `, ${delta.remove.length} removed` : ''})`,
    );
    const bytes = await send(a, delta, true, `volume ${a.volume} (pass ${report.passes})`);
    report.runningBytes += bytes;
    sent.push(delta.bytes);
    base = next;
    next = await list(a, true);
    delta = diffListings(base, next);
    if (!copyAgain(report.passes, sent, delta.bytes)) break;
  }
  return { volume: a.volume, fill: a.fill, base, report, read: { path: 'host-tar' }, written: { path: 'host-tar' } };
}

/**
 * Before the container is frozen: the target's side of the frozen pass opened (the helper, the
 * removal's and the extraction's shells on its host, waiting), so that once it is frozen only the
 * listing and the data are left. Give it to finishVolume; close() it in every case.
 */
export async function prepareFinish(a: PrecopyArgs): Promise<PreparedDelta> {
  const ready = await prepareVolumeDelta(a.target, a.holder, a.fill, a.via.target.access);
  if (isRefused(ready)) throw notThere(a, ready);
  return ready;
}

/** Once the container is frozen: send what changed since the last pass (into `ready` where it was prepared). */
export async function finishVolume(
  a: PrecopyArgs,
  pre: Precopied,
  timeline?: Timeline,
  ready?: PreparedDelta,
): Promise<{ bytes: number; report: PrecopyReport }> {
  const frozen = await (timeline ?? new Timeline()).time(`list volume ${a.volume}`, () => list(a, false));
  const delta = diffListings(pre.base, frozen);
  a.progress.step(
    `volume ${a.volume} -> ${a.fill}: what changed (${delta.send.length} entries, ${delta.remove.length} removed)`,
  );
  const bytes = await (timeline ?? new Timeline()).time(`send the delta of volume ${a.volume}`, () =>
    send(a, delta, false, `volume ${a.volume} (frozen)`, ready),
  );
  const report = {
    ...pre.report,
    frozenBytes: bytes,
    frozenEntries: delta.send.length,
    frozenRemoved: delta.remove.length,
  };
  return { bytes, report };
}
