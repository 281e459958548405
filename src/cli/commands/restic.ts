/**
 * The restic side of the store commands (`-o restic:<repo>`, `restore restic:<repo>[#snap]`,
 * `ls restic:<repo>`): each command branches here when its location is a restic repository, so
 * that the commands themselves stay as they are. The environment restic needs (passwords,
 * backends) is passed through to it, and --restic-option (FERRY_RESTIC_OPTION) gives its `-o`
 * options; FERRY_RESTIC_STAGE says where backups are staged.
 */
import type { Engine } from '../../engine/engine.js';
import type { Consistency } from '../../ops/steps/capture.js';
import { resticBackup, type ResticBackupResult } from '../../ops/restic-backup.js';
import { openResticSnapshot } from '../../store/restic/snapshot.js';
import { signResticSnapshot } from '../../ops/restic-sign.js';
import { loadSigner } from '../signing.js';
import { describeKey, type Trust } from '../../bundle/trust.js';
import { resticPrune, type ResticPruneResult } from '../../ops/restic-prune.js';
import { resticVerify, type ResticVerifyResult } from '../../ops/restic-verify.js';
import { reportJson, verifyFailure, verifyText } from './verify.js';
import { errorJson } from '../json.js';
import { inspectJson } from './inspect.js';
import type { KeepPolicy } from '../../plan/retention.js';
import {
  newestFirst,
  parseResticLocation,
  parseSnapshots,
  snapshotContainers,
  snapshotSet,
  snapshotsArgs,
  type ResticSnapshot,
} from '../../store/restic/layout.js';
import { checkRestic, ResticCli, resticText, type ResticRunner } from '../../store/restic/runner.js';
import { UsageError } from '../../errors.js';
import type { Deps } from '../program.js';
import { silentProgress, type Progress } from '../../context.js';
import { humanBytes } from '../render.js';
import type { DirectSource, Transport } from '../../store/transport.js';

/** Where a restic backup stages the image layers and the volumes it reads as tar streams: a disk. */
export const STAGE_ENV = 'FERRY_RESTIC_STAGE';

export function resticRunner(deps: Pick<Deps, 'debug' | 'resticOptions'>): ResticRunner {
  return new ResticCli(process.env, deps.debug ? (l) => deps.debug!(l) : undefined, deps.resticOptions?.() ?? []);
}

/** backup options a restic backup does not apply yet: refused rather than ignored. */
const NOT_YET = [
  ['preExec', '--pre-exec'],
  ['postExec', '--post-exec'],
  ['includeBinds', '--include-binds'],
  ['together', '--together'],
  ['encrypt', '--encrypt (restic encrypts)'],
  ['recipient', '--recipient (restic encrypts)'],
  ['recipientsFile', '--recipients-file (restic encrypts)'],
  ['compress', '--compress (restic compresses)'],
  ['verify', '--verify (use ferry verify restic:...)'],
  ['imageMode', '--image-mode push'],
  ['precopy', '--precopy'],
] as const;

/** `ferry backup ... -o restic:<repo>`: one snapshot per set. Returns the summary line. */
export async function backupToRestic(
  engine: Engine,
  output: string,
  sets: string[][],
  flags: {
    consistency?: Consistency;
    stopTimeout?: number;
    wait?: number;
    all?: boolean;
    json: boolean;
    quiet: boolean;
    signKey?: string;
    excludePath?: string[];
  } & Partial<Record<(typeof NOT_YET)[number][0], unknown>>,
  deps: Deps,
  progress: Progress & { done(): void },
): Promise<string> {
  const loc = parseResticLocation(output);
  if (loc.snapshot || loc.container)
    throw new UsageError(`${output}: a backup writes a new snapshot`, `write -o restic:${loc.repo}`);
  const given = NOT_YET.filter(
    ([k]) =>
      flags[k] !== undefined &&
      flags[k] !== false &&
      flags[k] !== 'archive' &&
      !(Array.isArray(flags[k]) && !(flags[k] as unknown[]).length),
  );
  if (given.length)
    throw new UsageError(
      `${given.map(([, o]) => o).join(', ')}: not yet with a restic repository`,
      'leave them out, or back up into a directory of bundles for now',
    );
  const runner = resticRunner(deps);
  // The key is read (and an agent asked) once, before any container is touched.
  const signer = await loadSigner(flags.signKey);
  if (signer)
    progress.info(
      `snapshots are signed with ${describeKey(signer.publicKey)} (${signer.source}): each is read back once to be signed`,
    );
  const stageRoot = process.env[STAGE_ENV] || '/var/tmp';
  const results: ResticBackupResult[] = [];
  for (const set of sets) {
    const res = await resticBackup(
      engine,
      {
        containers: set,
        repo: loc.repo,
        runner,
        stageRoot,
        consistency: flags.consistency,
        stopTimeout: flags.stopTimeout,
        wait: flags.wait,
        ...(flags.excludePath?.length ? { excludePaths: flags.excludePath } : {}),
      },
      { progress, signal: deps.signal, hostAccess: deps.hostAccess, debug: deps.debug },
    );
    if (signer) {
      const signed = await signResticSnapshot(runner, { repo: loc.repo, snapshot: res.snapshot }, signer, stageRoot, {
        progress,
        signal: deps.signal,
      });
      progress.info(
        `restic snapshot ${res.snapshot.slice(0, 8)} signed and checked read back; signature in snapshot ${signed.signatureSnapshot.slice(0, 8)}`,
      );
    }
    progress.done();
    results.push(res);
    if (!flags.json && !flags.quiet)
      deps.io.stdout.write(
        `backed up ${res.containers.join(', ')} to restic:${res.repository} snapshot ${res.snapshot}: ${humanBytes(res.bytesAdded)} added (${humanBytes(res.bytesProcessed)} read) in ${(res.durationMs / 1000).toFixed(1)}s, paused ${(res.pausedMs / 1000).toFixed(1)}s\n`,
      );
  }
  // One object for the whole run (docs/json.md): --all lists each container's snapshot under results.
  if (flags.json)
    deps.emit(
      'backup',
      flags.all
        ? {
            ok: true,
            partial: false,
            containers: results.flatMap((r) => r.containers),
            results: results.flatMap((r) =>
              r.containers.map((container) => ({ container, ok: true, result: resticBackupJson(r) })),
            ),
          }
        : { ok: true, ...resticBackupJson(results[0]!) },
    );
  return results.map((r) => `backed up ${r.containers.join(', ')} to restic snapshot ${r.snapshot}`).join('; ');
}

/** A restic repository as a store, and one snapshot of it as a bundle, in the --json names. */
export const resticStore = (repo: string) => `restic:${repo}`;
export const resticBundle = (repo: string, snapshot: string) => `restic:${repo}#${snapshot}`;
/** restic's snapshot times (local offset, nanoseconds) as the schema's createdAt (UTC, milliseconds). */
const utc = (time: string) => new Date(time).toISOString();

/** One restic backup in the --json schema (docs/json.md, "backup", restic). Pure. */
export function resticBackupJson(res: ResticBackupResult) {
  return {
    bundle: resticBundle(res.repository, res.snapshot),
    repository: res.repository,
    snapshot: res.snapshot,
    ...(res.parent ? { parent: res.parent } : {}),
    createdAt: res.manifest.createdAt,
    containers: res.containers,
    volumes: res.volumes.map((v) => v.name),
    volumeLayouts: res.volumes.map((v) => ({
      volume: v.name,
      layout: v.layout,
      ...(v.reason ? { reason: v.reason } : {}),
    })),
    addedBytes: res.bytesAdded,
    rawBytes: res.bytesProcessed,
    files: res.files,
    pausedMs: res.pausedMs,
    durationMs: res.durationMs,
  };
}

/** The snapshot a location names, its manifest and layout read (`ferry inspect restic:...`). */
export function resticSnapshot(location: string, deps: Deps, progress: Progress = silentProgress) {
  return openResticSnapshot(resticRunner(deps), parseResticLocation(location), progress);
}

/** `ferry restore restic:<repo>[#snapshot|#container]`: the snapshot as a bundle location. */
export async function resticSource(location: string, deps: Deps, progress: Progress): Promise<Transport> {
  return (await resticRestoreSource(location, deps, progress)).transport;
}

/** The same, with the snapshot's volumes that `restic restore` writes itself where the target allows. */
export async function resticRestoreSource(
  location: string,
  deps: Deps,
  progress: Progress,
): Promise<{ transport: Transport; direct: DirectSource }> {
  const s = await resticSnapshot(location, deps, progress);
  progress.info(
    `restic snapshot ${s.snapshot.short_id} of ${snapshotContainers(s.snapshot).join(', ')} from ${s.snapshot.hostname}, ${s.snapshot.time}`,
  );
  return { transport: s.transport, direct: s.direct };
}

/** One row of `ferry ls restic:<repo>`. */
export interface ResticLsEntry {
  snapshot: string;
  created: string;
  host: string;
  set: string;
  containers: string[];
}

/** The ferry snapshots of a repository, grouped by host and container set (newest first in each). Pure. */
export function groupSnapshots(list: ResticSnapshot[]): { host: string; set: string; snapshots: ResticLsEntry[] }[] {
  const groups = new Map<string, { host: string; set: string; snapshots: ResticLsEntry[] }>();
  for (const s of newestFirst(list)) {
    const set = snapshotSet(s);
    const key = `${s.hostname}\0${set}`;
    if (!groups.has(key)) groups.set(key, { host: s.hostname, set, snapshots: [] });
    groups.get(key)!.snapshots.push({
      snapshot: s.id,
      created: s.time,
      host: s.hostname,
      set,
      containers: snapshotContainers(s),
    });
  }
  return [...groups.values()].sort((a, b) => (a.host + a.set < b.host + b.set ? -1 : 1));
}

/** `ferry --json ls restic:<repo>` (docs/json.md, "ls"): ferry's snapshots as bundles, oldest first. Pure. */
export function resticLsJson(repo: string, list: ResticSnapshot[]) {
  return {
    store: resticStore(repo),
    repository: repo,
    bundles: [...newestFirst(list)].reverse().map((s) => ({
      bundle: resticBundle(repo, s.short_id),
      snapshot: s.id,
      createdAt: utc(s.time),
      containers: snapshotContainers(s),
      host: s.hostname,
      set: snapshotSet(s),
    })),
  };
}

/** `ferry ls restic:<repo>`. */
export async function lsRestic(location: string, json: boolean, deps: Deps): Promise<void> {
  const loc = parseResticLocation(location);
  const runner = resticRunner(deps);
  await checkRestic(runner);
  const list = parseSnapshots(await resticText(runner, { args: snapshotsArgs(loc.repo) }));
  if (json) {
    deps.emit('ls', { ok: true, ...resticLsJson(loc.repo, list) });
    return;
  }
  const groups = groupSnapshots(list);
  const out = deps.io.stdout;
  for (const g of groups) {
    out.write(`${g.host}  ${g.set.split('+').join(', ')}\n`);
    for (const s of g.snapshots)
      out.write(`  ${s.snapshot.slice(0, 8)}  ${s.created.replace(/\.\d+/, '').replace('T', ' ')}\n`);
  }
}

/** `ferry --json prune restic:<repo>` (docs/json.md, "prune"): snapshots as bundles. Pure. */
export function resticPruneJson(res: ResticPruneResult) {
  const entry = (e: ResticPruneResult['kept'][number]) => ({
    bundle: resticBundle(res.repository, e.snapshot.slice(0, 8)),
    snapshot: e.snapshot,
    createdAt: utc(e.created),
    containers: e.containers,
    host: e.host,
    group: e.group,
    reasons: e.reasons,
  });
  return {
    store: resticStore(res.repository),
    repository: res.repository,
    dryRun: res.dryRun,
    policy: res.policy,
    kept: res.kept.map(entry),
    removed: res.removed.map(entry),
    unreadable: [],
    failed: [],
  };
}

/** `ferry prune restic:<repo> --keep-...`: ferry's rules, then one restic forget --prune. */
export async function pruneRestic(
  location: string,
  opts: { policy: KeepPolicy; dryRun: boolean; json: boolean; quiet: boolean },
  deps: Deps,
  progress: Progress,
): Promise<void> {
  const loc = parseResticLocation(location);
  if (loc.snapshot || loc.container)
    throw new UsageError(`${location}: prune applies to a whole repository`, `write restic:${loc.repo}`);
  const res = await resticPrune(resticRunner(deps), loc.repo, opts, progress);
  const out = deps.io.stdout;
  if (opts.json) {
    deps.emit('prune', { ok: true, ...resticPruneJson(res) });
    return;
  }
  if (opts.quiet) return;
  const verb = res.dryRun ? 'would remove' : 'removed';
  const rows = [...res.kept.map((e) => ({ e, what: 'keep' })), ...res.removed.map((e) => ({ e, what: verb }))].sort(
    (a, b) => (a.e.host + a.e.created < b.e.host + b.e.created ? 1 : -1),
  );
  for (const { e, what } of rows)
    out.write(
      `${what}  ${e.snapshot.slice(0, 8)}  ${e.created.replace(/\.\d+/, '').replace('T', ' ')}  ${e.host}  ${e.containers.join(',')}  ${e.reasons.join(', ') || 'no rule keeps it'}\n`,
    );
  out.write(
    `${res.removed.length} snapshot${res.removed.length === 1 ? '' : 's'} ${res.dryRun ? 'would be removed' : 'removed (restic forget --prune)'}, ${res.kept.length} kept\n`,
  );
}

/** `ferry verify restic:<repo>[#...]`: restic check, then each chosen snapshot read back and verified as a bundle. */
export async function verifyRestic(
  location: string,
  opts: { json: boolean; quiet: boolean; trust?: Trust },
  deps: Deps,
  progress: Progress & { done(): void },
): Promise<void> {
  let res;
  try {
    res = await resticVerify(resticRunner(deps), parseResticLocation(location), {
      ...(opts.trust ? { trust: opts.trust } : {}),
      progress,
      signal: deps.signal,
      hostAccess: deps.hostAccess,
      debug: deps.debug,
    });
  } finally {
    progress.done();
  }
  const out = deps.io.stdout;
  if (opts.json) deps.emit('verify', resticVerifyJson(res));
  else if (!opts.quiet || !res.ok) {
    out.write(`restic check of ${res.repository}: ok\n`);
    for (const r of res.snapshots) out.write(verifyText(r));
  }
  const bad = res.snapshots.find((r) => !r.ok);
  if (bad) throw verifyFailure(bad);
}

/** `ferry --json verify restic:<repo>` (docs/json.md, "verify"): a store of snapshots, each checked as a bundle. Pure. */
export function resticVerifyJson(res: ResticVerifyResult): { ok: boolean } & Record<string, unknown> {
  const bad = res.snapshots.find((r) => !r.ok);
  return {
    ok: !bad,
    store: resticStore(res.repository),
    repository: res.repository,
    bundles: res.snapshots.map(reportJson),
    ...(bad ? { error: errorJson(verifyFailure(bad)) } : {}),
  };
}

/** `ferry --json inspect restic:<repo>#...` (docs/json.md, "inspect"): the snapshot's manifest as a bundle's. */
export function resticInspectJson(location: string, snap: Awaited<ReturnType<typeof resticSnapshot>>) {
  const repo = parseResticLocation(location).repo;
  return {
    ...inspectJson(snap.manifest, resticBundle(repo, snap.snapshot.short_id)),
    repository: repo,
    snapshot: snap.snapshot.id,
  };
}
