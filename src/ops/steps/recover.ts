/**
 * Finish the undo of ferry runs that were killed (SIGKILL, a crash, the host's OOM killer) before
 * they could put things back, at the start of the next run on the same engine: resume the
 * containers they left paused, start again those they left stopped, remove the snapshot images
 * they committed and the helper containers they made, and say what was done.
 *
 * What a run must undo is in the journal on this host (util/state.ts); a record is a dead run's
 * when its process no longer exists. What was put right since (by hand) is only forgotten.
 */
import type { Engine } from '../../engine/engine.js';
import type { Progress } from '../../context.js';
import { sweepStaleHolders } from '../../data/volumes.js';
import { QuiesceJournal, type QuiesceRecord } from '../../util/state.js';

export async function recoverDeadRuns(
  engine: Engine,
  progress: Progress,
  journal: QuiesceJournal = new QuiesceJournal(),
): Promise<void> {
  const where = engine.facts.endpoint;
  for (const r of journal.stale(where)) {
    const by = `a ferry run (pid ${r.pid}) that was killed at ${r.at}`;
    try {
      const done = await undoOne(engine, r);
      if (done) progress.warn(`${done}: ${by} had left it ${r.action === 'snapshot' ? 'behind' : r.action}`);
      journal.forget(where, r.containerId);
    } catch (err) {
      progress.warn(`${r.name} was left ${r.action} by ${by}, and could not be put back: ${(err as Error).message}`);
    }
  }
  if (await sweepStaleHolders(engine))
    progress.info(`removed helper containers left by a killed ferry run on ${where}`);
}

/** Undo one record; says what was done, or undefined where there was nothing left to do. */
async function undoOne(engine: Engine, r: QuiesceRecord): Promise<string | undefined> {
  if (r.action === 'snapshot') {
    if (!(await engine.imageExists(r.containerId))) return undefined;
    await engine.removeImage(r.containerId);
    return `removed the snapshot image ${r.name}`;
  }
  const st = await engine.inspectContainer(r.containerId).catch(() => undefined);
  if (!st) return undefined;
  if (r.action === 'paused' && st.State.Paused) {
    await engine.unpause(r.containerId);
    return `resumed container ${r.name}`;
  }
  if (r.action === 'stopped' && !st.State.Running) {
    await engine.start(r.containerId);
    return `started container ${r.name} again`;
  }
  return undefined;
}
