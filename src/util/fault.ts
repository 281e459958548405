/**
 * Fault points: named places in a run where the fault-injection tests stop ferry
 * (test/e2e/faults-matrix.test.ts) at an exact step rather than after a guessed delay. Free and
 * silent unless the CLI set the hook for the run (FERRY_FAULT=<point>, read at the edge only):
 * the run then announces the point on stderr the first time it gets there, and waits there until
 * it is stopped (a signal, a closed stdout or stderr) or the wait runs out. While it waits it
 * keeps writing to stderr, as a live progress display would, so that a closed stderr is seen.
 *
 * The points, in run order: `quiesced` (paused or stopped for the snapshot), `committed` (the
 * snapshot image exists), `volume-read` (a volume's reader is open), `volume-fill` (a volume's
 * writer is made, nothing written yet), `image-save` (backup: the image member's stream is open),
 * `volume-tree` (restore from a restic snapshot: a volume's files written by restic beside its
 * directory, not yet moved in), `image-load` (restore, migrate: the load is about to begin), `finish` (backup: every member is
 * written, the trailer not), `create` (a container was created), `replace-aside` (--on-conflict
 * replace: the old containers are stopped and renamed aside), `watch` (the new containers were
 * started), `replace-commit` (the old containers were removed), and then the rest of the
 * commit (ops/steps/replace.ts, finishCommit): `commit-trial` (the new containers that ran on the
 * staging volumes removed), `commit-volume` (a real volume made again, empty), `commit-fill` (its
 * copy from the staging volume begun: the first chunk sent), `commit-filled` (every real volume
 * filled and proven), `commit-create` (the new containers created on them), `commit-start`
 * (started; the staging volumes not yet removed).
 *
 * Failure points: there the run does not wait but fails, as the step itself would (FaultInjected):
 * `content-store-blob` (an image read from the containerd content store, after its first bytes:
 * the path fails half-way, and ferry falls back to the engine's save).
 */
import { sleep } from './sleep.js';

export type FaultPoint =
  | 'quiesced'
  | 'committed'
  | 'volume-read'
  | 'volume-fill'
  | 'volume-tree'
  | 'image-save'
  | 'image-load'
  | 'finish'
  | 'create'
  | 'replace-aside'
  | 'watch'
  | 'replace-commit'
  | 'commit-trial'
  | 'commit-volume'
  | 'commit-fill'
  | 'commit-filled'
  | 'commit-create'
  | 'commit-start'
  | 'content-store-blob';

/** The points where a run told to stop fails instead of waiting. */
const FAILING: ReadonlySet<FaultPoint> = new Set(['content-store-blob']);

/** A failure made by the run's fault hook at a failure point. */
export class FaultInjected extends Error {
  constructor(readonly point: FaultPoint) {
    super(`fault injected at ${point}`);
  }
}

/** Set by the CLI for one run (cli/main.ts); absent: every fault point is a no-op. */
export const faults: { hook?: (point: FaultPoint) => Promise<void> } = {};

/** A named point of the run: resolves at once unless the run was told to stop here. */
export async function faultPoint(point: FaultPoint): Promise<void> {
  if (faults.hook) await faults.hook(point);
}

/**
 * The hook for FERRY_FAULT=`want`: at the first arrival at that point, say so and wait until
 * `signal` aborts or `waitMs` pass, writing a line every `tickMs` (a failure point: fail, with
 * FaultInjected). Other points pass through.
 */
export function faultHook(
  want: string,
  signal: AbortSignal,
  say: (text: string) => void,
  opts: { waitMs?: number; tickMs?: number } = {},
): (point: FaultPoint) => Promise<void> {
  const { waitMs = 5000, tickMs = 200 } = opts;
  let hit = false;
  return async (point) => {
    if (hit || point !== want) return;
    hit = true;
    say(`ferry: fault point ${point} (pid ${process.pid})\n`);
    if (FAILING.has(point)) throw new FaultInjected(point);
    const until = Date.now() + waitMs;
    while (!signal.aborted && Date.now() < until) {
      await sleep(tickMs, signal).catch(() => {});
      if (!signal.aborted) say(`ferry: fault point ${point}: waiting\n`);
    }
  };
}
