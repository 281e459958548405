/**
 * ferry schedule: wait for each time the schedule names, then run one tick (a backup and its
 * prune), one after the other: a tick that outlasts the interval delays the next, never overlaps
 * it. Stops when the run's signal fires (waiting or mid-tick; the tick itself puts back what it
 * touched). The clock and the wait are parameters, so the loop is unit-tested without time passing.
 */
import { UsageError } from '../errors.js';
import { nextRun, type Schedule } from '../plan/schedule.js';
import { sleep as realSleep } from '../util/sleep.js';

export interface ScheduleLoop {
  schedule: Schedule;
  /** Run one tick now and return (no waiting). */
  once: boolean;
  signal: AbortSignal;
  /** One tick: the time it was due. A failed tick is the tick's to report; the loop goes on. */
  tick(due: Date): Promise<void>;
  /** Told the next run's time before each wait. */
  waiting?(next: Date): void;
  now?(): Date;
  sleep?(ms: number, signal: AbortSignal): Promise<void>;
}

export async function runSchedule(loop: ScheduleLoop): Promise<void> {
  const now = loop.now ?? (() => new Date());
  const sleep = loop.sleep ?? realSleep;
  if (loop.once) return loop.tick(now());
  for (;;) {
    const next = nextRun(loop.schedule, now());
    if (!next)
      throw new UsageError(
        `the schedule ${JSON.stringify(loop.schedule.text)} never runs`,
        'check its day-of-month and month fields (docs/commands.md, "schedule")',
      );
    loop.waiting?.(next);
    await sleep(next.getTime() - now().getTime(), loop.signal);
    if (loop.signal.aborted) throw loop.signal.reason as Error;
    await loop.tick(next);
    if (loop.signal.aborted) throw loop.signal.reason as Error;
  }
}
