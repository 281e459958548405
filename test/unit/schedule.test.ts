import { describe, expect, it } from 'vitest';
import { nextRun, parseInterval, parseSchedule } from '../../src/plan/schedule.js';

/** Local time, as the schedule reads it (the tests run with any TZ). */
const at = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0) => new Date(y, mo - 1, d, h, mi, s);
const next = (text: string, after: Date) => nextRun(parseSchedule(text), after);

describe('schedule: intervals', () => {
  it('reads d, h, m, s, largest first, with or without @every', () => {
    expect(parseInterval('30s')).toBe(30_000);
    expect(parseInterval('1h30m')).toBe(5_400_000);
    expect(parseInterval('1d')).toBe(86_400_000);
    for (const bad of ['', '0s', '5', '30x', '1m1h', 's']) expect(parseInterval(bad), bad).toBeUndefined();
    expect(parseSchedule('@every 5s')).toMatchObject({ kind: 'interval', ms: 5000 });
    expect(parseSchedule('6h')).toMatchObject({ kind: 'interval', ms: 6 * 3_600_000 });
    expect(next('@every 5s', at(2026, 1, 1, 10, 0, 3))).toEqual(at(2026, 1, 1, 10, 0, 8));
    expect(() => parseSchedule('@every soon')).toThrow(/interval/);
  });
});

describe('schedule: cron', () => {
  it('runs at the next matching minute, strictly after the given instant, at second 0', () => {
    expect(next('*/15 * * * *', at(2026, 3, 4, 10, 7, 30))).toEqual(at(2026, 3, 4, 10, 15));
    expect(next('*/15 * * * *', at(2026, 3, 4, 10, 15, 0))).toEqual(at(2026, 3, 4, 10, 30));
    expect(next('0 3 * * *', at(2026, 3, 4, 3, 0, 1))).toEqual(at(2026, 3, 5, 3, 0));
    expect(next('@daily', at(2026, 12, 31, 23, 59))).toEqual(at(2027, 1, 1, 0, 0));
    expect(next('@hourly', at(2026, 3, 4, 10, 0))).toEqual(at(2026, 3, 4, 11, 0));
    expect(next('30 2 1 * *', at(2026, 1, 31, 12))).toEqual(at(2026, 2, 1, 2, 30));
  });

  it('reads lists, ranges and steps', () => {
    expect([...(parseSchedule('1,5-7,10-20/5 * * * *').minute as Set<number>)]).toEqual([1, 5, 6, 7, 10, 15, 20]);
    expect(next('0 9-17/4 * * *', at(2026, 3, 4, 9, 30))).toEqual(at(2026, 3, 4, 13, 0));
    expect(next('0 0 * 2 *', at(2026, 3, 1))).toEqual(at(2027, 2, 1));
  });

  it('takes 0 and 7 for Sunday, and a day matching either day field when both are restricted', () => {
    // 2026-03-04 is a Wednesday; the next Sunday is 2026-03-08
    expect(next('0 0 * * 7', at(2026, 3, 4))).toEqual(at(2026, 3, 8));
    expect(next('0 0 * * 0', at(2026, 3, 4))).toEqual(at(2026, 3, 8));
    expect(next('@weekly', at(2026, 3, 4))).toEqual(at(2026, 3, 8));
    // the 6th (a Friday) or any Sunday: the 6th comes first
    expect(next('0 0 6 * 0', at(2026, 3, 4))).toEqual(at(2026, 3, 6));
    // only the day of week restricted: every Monday
    expect(next('0 0 * * 1', at(2026, 3, 4))).toEqual(at(2026, 3, 9));
  });

  it('is undefined when the expression never matches', () => {
    expect(next('0 0 31 2 *', at(2026, 1, 1))).toBeUndefined();
  });

  it('refuses what it does not read, naming the field', () => {
    expect(() => parseSchedule('* * * *')).toThrow(/5 cron fields/);
    expect(() => parseSchedule('60 * * * *')).toThrow(/minute field "60": out of range 0-59/);
    expect(() => parseSchedule('0 0 * JAN *')).toThrow(/month field "JAN"/);
    expect(() => parseSchedule('0 0 0 * *')).toThrow(/day-of-month/);
    expect(() => parseSchedule('*/0 * * * *')).toThrow(/step/);
    expect(() => parseSchedule('5-1 * * * *')).toThrow(/out of range/);
    expect(() => parseSchedule('@reboot')).toThrow(/unknown shortcut/);
  });
});
