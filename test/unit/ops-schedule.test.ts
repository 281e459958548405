import { describe, expect, it } from 'vitest';
import { runSchedule } from '../../src/ops/schedule.js';
import { parseSchedule } from '../../src/plan/schedule.js';
import { InterruptedError, UsageError } from '../../src/errors.js';

/** A clock that moves only when the loop waits or a tick takes time. */
function fakeTime(start: Date) {
  let t = start.getTime();
  return {
    now: () => new Date(t),
    advance: (ms: number) => (t += ms),
    sleep: async (ms: number, signal: AbortSignal) => {
      if (signal.aborted) throw signal.reason as Error;
      t += Math.max(0, ms);
    },
  };
}

describe('the schedule loop', () => {
  it('runs one tick per scheduled time, waits for each, and stops at the signal', async () => {
    const clock = fakeTime(new Date(2026, 0, 1, 10, 0, 30));
    const abort = new AbortController();
    const ticks: Date[] = [];
    const waits: Date[] = [];
    const err = await runSchedule({
      schedule: parseSchedule('*/5 * * * *'),
      once: false,
      signal: abort.signal,
      now: clock.now,
      sleep: clock.sleep,
      waiting: (n) => waits.push(n),
      tick: async (due) => {
        ticks.push(due);
        // a tick that outlasts the interval delays the next one: no overlap, no catching up
        if (ticks.length === 2) clock.advance(7 * 60_000);
        if (ticks.length === 3) abort.abort(new InterruptedError('SIGTERM'));
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect(ticks.map((d) => d.toTimeString().slice(0, 8))).toEqual(['10:05:00', '10:10:00', '10:20:00']);
    expect(waits).toEqual(ticks);
  });

  it('with once, runs one tick now and returns', async () => {
    const clock = fakeTime(new Date(2026, 0, 1, 10, 0, 30));
    const ticks: Date[] = [];
    await runSchedule({
      schedule: parseSchedule('@daily'),
      once: true,
      signal: new AbortController().signal,
      now: clock.now,
      sleep: () => Promise.reject(new Error('once never waits')),
      tick: async (due) => void ticks.push(due),
    });
    expect(ticks).toEqual([clock.now()]);
  });

  it('stops while waiting, and refuses a schedule that never runs', async () => {
    const abort = new AbortController();
    abort.abort(new InterruptedError('SIGTERM'));
    let ticked = false;
    const e = await runSchedule({
      schedule: parseSchedule('@every 1h'),
      once: false,
      signal: abort.signal,
      tick: async () => void (ticked = true),
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(InterruptedError);
    expect(ticked).toBe(false);
    const never = await runSchedule({
      schedule: parseSchedule('0 0 30 2 *'),
      once: false,
      signal: new AbortController().signal,
      tick: async () => {},
    }).catch((x: unknown) => x);
    expect(never).toBeInstanceOf(UsageError);
  });
});
