/**
 * ferry prune restic:<repo>: ferry's retention rules (plan/retention.ts: restic's keep-* semantics,
 * per container set, the newest of each set always kept) applied to ferry's snapshots of each
 * host on its own, and the snapshots no rule keeps removed with one `restic forget --prune`
 * (restic's own lock guards the repository). Snapshots that are not ferry's are never touched.
 */
import { UsageError } from '../errors.js';
import type { Progress } from '../context.js';
import { applyRetention, hasKeepRule, type KeepPolicy } from '../plan/retention.js';
import {
  parseSnapshots,
  snapshotContainers,
  snapshotsArgs,
  forgetArgs,
  signedSnapshot,
  SIG_TAG,
  type ResticSnapshot,
} from '../store/restic/layout.js';
import { checkRestic, resticText, type ResticRunner } from '../store/restic/runner.js';

export interface ResticPruneEntry {
  snapshot: string;
  created: string;
  host: string;
  containers: string[];
  /** The container set it is judged in (plan/retention.ts), within its host. */
  group: string;
  /** Why it is kept; empty when removed. */
  reasons: string[];
}

export interface ResticPruneResult {
  repository: string;
  dryRun: boolean;
  policy: KeepPolicy;
  kept: ResticPruneEntry[];
  removed: ResticPruneEntry[];
}

/** Which snapshots the policy keeps: per host, per container set. Pure. */
export function resticRetention(
  list: ResticSnapshot[],
  policy: KeepPolicy,
): { kept: ResticPruneEntry[]; removed: ResticPruneEntry[] } {
  const kept: ResticPruneEntry[] = [];
  const removed: ResticPruneEntry[] = [];
  for (const host of [...new Set(list.map((s) => s.hostname))].sort()) {
    const mine = list.filter((s) => s.hostname === host);
    const decisions = applyRetention(
      mine.map((s) => ({ id: s.id, time: new Date(s.time), containers: snapshotContainers(s) })),
      policy,
    );
    for (const d of decisions) {
      const s = mine.find((x) => x.id === d.id)!;
      const e = {
        snapshot: s.id,
        created: s.time,
        host,
        containers: snapshotContainers(s),
        group: d.group,
        reasons: d.reasons,
      };
      (d.keep ? kept : removed).push(e);
    }
  }
  return { kept, removed };
}

/** The signature snapshots that sign none of the snapshots kept: removed with the rest. Pure. */
export function signaturesOf(sigs: ResticSnapshot[], kept: string[]): string[] {
  return sigs.filter((s) => !kept.includes(signedSnapshot(s) ?? '')).map((s) => s.id);
}

export async function resticPrune(
  runner: ResticRunner,
  repo: string,
  opts: { policy: KeepPolicy; dryRun: boolean },
  progress: Progress,
): Promise<ResticPruneResult> {
  if (!hasKeepRule(opts.policy))
    throw new UsageError(
      'prune needs at least one keep rule',
      'e.g. --keep-daily 7 --keep-weekly 4 (a snapshot is kept when any rule keeps it)',
    );
  await checkRestic(runner);
  const list = parseSnapshots(await resticText(runner, { args: snapshotsArgs(repo) }));
  const { kept, removed } = resticRetention(list, opts.policy);
  if (!opts.dryRun && removed.length) {
    // The signatures of the snapshots removed (and of any already gone) go with them.
    const sigs = signaturesOf(
      parseSnapshots(await resticText(runner, { args: snapshotsArgs(repo, { tags: [SIG_TAG] }) })),
      kept.map((k) => k.snapshot),
    );
    progress.step(`restic forget --prune (${removed.length} snapshot${removed.length === 1 ? '' : 's'})`);
    await resticText(runner, {
      args: forgetArgs(repo, [...removed.map((r) => r.snapshot), ...sigs]),
    });
  }
  return { repository: repo, dryRun: opts.dryRun, policy: opts.policy, kept, removed };
}
