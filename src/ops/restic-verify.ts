/**
 * ferry verify restic:<repo>[#snapshot|#container]: restic's own check of the repository
 * (`restic check`: its structure, indexes and trees), then ferry's checks of what it reads back:
 * each chosen snapshot read whole as a bundle stream (every member dumped by restic, so every
 * data blob of that snapshot is read and its hash checked by restic) and verified member by
 * member as `ferry verify` verifies any bundle (verify.ts). Without a selector, the newest
 * snapshot of each host and container set is read.
 */
import type { RunContext } from '../context.js';
import { verifyStream, type VerifyReport } from '../bundle/check.js';
import { openResticSnapshot } from '../store/restic/snapshot.js';
import {
  checkArgs,
  newestFirst,
  parseSnapshots,
  snapshotSet,
  snapshotsArgs,
  type ResticLocation,
} from '../store/restic/layout.js';
import { checkRestic, ResticError, resticText, type ResticRunner } from '../store/restic/runner.js';
import { BundleError } from '../errors.js';

export interface ResticVerifyResult {
  repository: string;
  /** restic check passed (it throws a ResticError otherwise). */
  check: 'ok';
  snapshots: VerifyReport[];
  ok: boolean;
}

export async function resticVerify(
  runner: ResticRunner,
  loc: ResticLocation,
  ctx: RunContext,
): Promise<ResticVerifyResult> {
  await checkRestic(runner);
  ctx.progress.step(`restic check ${loc.repo}`);
  try {
    await resticText(runner, { args: checkArgs(loc.repo) });
  } catch (err) {
    // restic check failing on a repository it could open is damage (exit 7), as a bad bundle is.
    if (err instanceof ResticError && !/password|unable to open config|Is there a repository/i.test(err.message))
      throw new BundleError(`restic check found problems in ${loc.repo}: ${err.message}`, {
        cause: err,
        hint: 'do not rely on this repository; see restic check and restic repair (or take new backups into a new one)',
      });
    throw err;
  }
  const chosen: ResticLocation[] = [];
  if (loc.snapshot || loc.container) chosen.push(loc);
  else {
    const seen = new Set<string>();
    for (const s of newestFirst(parseSnapshots(await resticText(runner, { args: snapshotsArgs(loc.repo) })))) {
      const key = `${s.hostname}\0${snapshotSet(s)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      chosen.push({ repo: loc.repo, snapshot: s.id });
    }
  }
  const snapshots: VerifyReport[] = [];
  for (const c of chosen) {
    const snap = await openResticSnapshot(runner, c, ctx.progress);
    const src = await snap.transport.openBundle();
    ctx.progress.step(`verify ${src.location}`);
    snapshots.push(await verifyStream(src.stream, src.location, ctx));
  }
  return { repository: loc.repo, check: 'ok', snapshots, ok: snapshots.every((r) => r.ok) };
}
