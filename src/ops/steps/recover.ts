/**
 * Finish the undo of ferry runs that were killed (SIGKILL, a crash, the host's OOM killer) before
 * they could put things back, at the start of the next run on the same engine: resume the
 * containers they left paused, start again those they left stopped, remove the snapshot images
 * they committed and the helper containers they made, and say what was done. A replace killed
 * in its commit (the old containers going) is finished instead: its new containers on the real
 * volumes, started; when that fails, the run stops with a ReplaceUnfinishedError (exit 14).
 *
 * What a run must undo is in the journal on this host (util/state.ts); a record is a dead run's
 * when its process no longer exists. What was put right since (by hand) is only forgotten.
 */
import type { Engine } from '../../engine/engine.js';
import type { Progress } from '../../context.js';
import { removeWithAnonymousVolumes, sweepStaleHolders } from '../../data/volumes.js';
import {
  MadeJournal,
  QuiesceJournal,
  ReplaceJournal,
  type MadeRecord,
  type QuiesceRecord,
  type ReplaceCommit,
  type ReplaceRecord,
} from '../../util/state.js';
import type { Routing } from '../../data/paths.js';
import type { ReplaceUnfinishedError } from '../../errors.js';
import { finishCommit, putBack, replaceUnfinished } from './replace.js';

export async function recoverDeadRuns(
  engine: Engine,
  progress: Progress,
  journal: QuiesceJournal = new QuiesceJournal(),
  replaces: ReplaceJournal = new ReplaceJournal(),
  made: MadeJournal = new MadeJournal(),
  via?: Routing,
): Promise<void> {
  const where = engine.facts.endpoint;
  // First: a helper of the dead run would keep a staging volume in use.
  if (await sweepStaleHolders(engine))
    progress.info(`removed helper containers left by a killed ferry run on ${where}`);
  // Then what a dead restore or migration made (its new containers first: under a replace, they
  // hold the names the old containers go back to).
  for (const r of made.stale(where)) {
    const by = `a ferry run (pid ${r.pid}) that was killed at ${r.at}`;
    try {
      const removed = await undoMade(engine, r);
      if (removed.length) progress.warn(`removed ${removed.join(', ')}: left half-made by ${by}`);
      made.drop(where, r.run);
    } catch (err) {
      progress.warn(`what ${by} had made could not all be removed: ${(err as Error).message}`);
    }
  }
  let unfinished: ReplaceUnfinishedError | undefined;
  for (const r of replaces.stale(where)) {
    const by = `a ferry run (pid ${r.pid}) that was killed at ${r.at}`;
    // Two runs starting at once: one puts it right, the other leaves it alone.
    const release = replaces.claim(where, r.run);
    if (!release) continue;
    try {
      // read again once claimed: a run that held it a moment ago may have settled it
      const now = replaces.stale(where).find((x) => x.run === r.run);
      if (now) unfinished = (await settleReplace(engine, now, by, replaces, progress, via)) ?? unfinished;
    } finally {
      release();
    }
  }
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
  // A replace that could not be finished: nothing else runs on this engine until it is (exit 14).
  if (unfinished) throw unfinished;
}

/** Put right, or finish, one replace a dead run left; a ReplaceUnfinishedError when finishing failed. */
async function settleReplace(
  engine: Engine,
  r: ReplaceRecord,
  by: string,
  replaces: ReplaceJournal,
  progress: Progress,
  via?: Routing,
): Promise<ReplaceUnfinishedError | undefined> {
  const where = engine.facts.endpoint;
  if (r.phase === 'committing' && r.commit) {
    // Past its point of no return: finished, not undone.
    try {
      progress.warn(`finishing the --on-conflict replace that ${by} left half-committed`);
      const done = await rollForward(engine, { ...r, commit: r.commit }, replaces, progress, via);
      progress.warn(
        `finished the --on-conflict replace of ${r.commit.containers.map((k) => k.name).join(', ') || r.aside.map((a) => a.name).join(', ')} left by ${by}: ${done.did.join('; ') || 'every step was done already'}`,
      );
      replaces.drop(where, r.run);
    } catch (err) {
      const e = replaceUnfinished(engine, { ...r, commit: r.commit }, err);
      progress.warn(e.message);
      return e;
    }
    return undefined;
  }
  try {
    progress.warn(`${await undoReplace(engine, r)} (left by ${by} during --on-conflict replace)`);
    replaces.drop(where, r.run);
  } catch (err) {
    progress.warn(`the --on-conflict replace of ${by} could not be put right: ${(err as Error).message}`);
  }
  return undefined;
}

/**
 * Finish the commit a dead run began (replace.ts, finishCommit), recording each step in the
 * journal as it goes; the started containers are watched as the run would have.
 */
async function rollForward(
  engine: Engine,
  r: ReplaceRecord & { commit: ReplaceCommit },
  replaces: ReplaceJournal,
  progress: Progress,
  via?: Routing,
) {
  return finishCommit(engine, r, (commit) => replaces.take({ ...r, commit }), progress, {
    via,
    watch: new AbortController().signal,
  });
}

/**
 * Put right a replace its run did not finish (ops/steps/replace.ts): before the commit, the old
 * containers back under their names (running if they ran) and the staging volumes gone. A record
 * of a commit made before ferry journaled how to finish it only names the staging volumes.
 */
async function undoReplace(engine: Engine, r: ReplaceRecord): Promise<string> {
  if (r.phase === 'committing')
    return `the replaced containers ${r.aside.map((a) => a.name).join(', ')} were removed, and the new data is complete in ${r.staging.join(', ') || 'the new volumes'}: run the restore or migrate again, or move that data by hand`;
  for (const id of r.created)
    if (await engine.inspectContainer(id).catch(() => undefined)) await removeWithAnonymousVolumes(engine, id);
  const back: string[] = [];
  for (const a of r.aside)
    if (await engine.inspectContainer(a.id).catch(() => undefined)) {
      await putBack(engine, a);
      back.push(a.name);
    }
  for (const v of r.staging) await engine.removeVolume(v);
  return (
    [
      back.length ? `put back container ${back.join(', ')}` : '',
      r.staging.length ? `removed the staging volume ${r.staging.join(', ')}` : '',
    ]
      .filter(Boolean)
      .join('; ') || 'nothing was left to put right'
  );
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

/**
 * Remove what a restore or migration made before it was killed (it never got to its point of no
 * return): its containers (with the anonymous volumes they made), then its volumes, images and
 * networks, each only where it still exists. A container recorded without its id (killed during
 * its create) is removed by its name only when made after the run began.
 */
async function undoMade(engine: Engine, r: MadeRecord): Promise<string[]> {
  const done: string[] = [];
  const failed: string[] = [];
  const of = (kind: MadeRecord['made'][number]['kind']) => r.made.filter((m) => m.kind === kind).reverse();
  const each = async (what: string, fn: () => Promise<boolean>) => {
    try {
      if (await fn()) done.push(what);
    } catch (err) {
      failed.push(`${what}: ${(err as Error).message}`);
    }
  };
  for (const c of of('container'))
    await each(`container ${c.name}`, async () => {
      const st = await engine.inspectContainer(c.id ?? c.name).catch(() => undefined);
      if (!st) return false;
      const created = Date.parse(String((st as { Created?: string }).Created ?? ''));
      if (!c.id && !(created >= Date.parse(r.at))) return false; // not the one this run made
      await removeWithAnonymousVolumes(engine, st.Id);
      return true;
    });
  for (const v of of('volume'))
    await each(`volume ${v.name}`, async () => {
      if (!(await engine.inspectVolume(v.name))) return false;
      await engine.removeVolume(v.name);
      return true;
    });
  for (const i of of('image'))
    await each(`image ${i.name}`, async () => {
      if (!(await engine.imageExists(i.name))) return false;
      await engine.removeImage(i.name);
      return true;
    });
  for (const n of of('network'))
    await each(`network ${n.name}`, async () => {
      if (!(await engine.inspectNetwork(n.name))) return false;
      await engine.removeNetwork(n.name);
      return true;
    });
  if (failed.length)
    throw new Error(`${done.length ? `removed ${done.join(', ')}, but not ` : ''}${failed.join('; ')}`);
  return done;
}
