import { afterEach, describe, expect, it } from 'vitest';
import {
  applyRetention,
  bucket,
  groupKey,
  hasKeepRule,
  isoWeek,
  parseWithin,
  RULES,
  withinCutoff,
  type KeepPolicy,
  type Snapshot,
} from '../../src/plan/retention.js';
import { planPrune } from '../../src/ops/prune.js';
import type { CatalogEntry } from '../../src/store/catalog.js';

/** Snapshots of one group from ISO times; ids are the times, so results read naturally. */
function snaps(times: string[], containers = ['web']): Snapshot[] {
  return times.map((t) => ({ id: `${containers.join('+')}@${t}`, time: new Date(t), containers }));
}

function kept(times: string[], policy: KeepPolicy, containers = ['web']): string[] {
  return applyRetention(snaps(times, containers), policy)
    .filter((d) => d.keep)
    .map((d) => d.time.toISOString());
}

const iso = (s: string) => new Date(s).toISOString();

describe('keep-last', () => {
  const times = [
    '2024-03-01T10:00:00Z',
    '2024-03-02T10:00:00Z',
    '2024-03-03T10:00:00Z',
    '2024-03-04T10:00:00Z',
    '2024-03-05T10:00:00Z',
  ];

  it('keeps the N newest, whatever the input order', () => {
    expect(kept(times, { last: 2 })).toEqual([iso('2024-03-05T10:00:00Z'), iso('2024-03-04T10:00:00Z')]);
    expect(kept([...times].reverse(), { last: 2 })).toEqual([iso('2024-03-05T10:00:00Z'), iso('2024-03-04T10:00:00Z')]);
  });

  it('keeps everything when N is larger than the number of bundles', () => {
    expect(kept(times, { last: 10 })).toHaveLength(5);
  });

  it('gives the reason', () => {
    const d = applyRetention(snaps(times), { last: 2 });
    expect(d[0]!.reasons).toEqual(['newest of its group', 'last 1']);
    expect(d[1]!.reasons).toEqual(['last 2']);
    expect(d[2]!.reasons).toEqual([]);
    expect(d[2]!.keep).toBe(false);
  });
});

describe('keep-hourly', () => {
  it('keeps the newest bundle of each of the N most recent hours that have one (empty hours do not count)', () => {
    const times = [
      '2024-03-01T10:50:00Z',
      '2024-03-01T10:05:00Z', // hour 10: keep 10:50
      '2024-03-01T08:59:59Z',
      '2024-03-01T08:00:00Z', // hour 9 is empty; hour 8: keep 08:59:59
      '2024-03-01T05:30:00Z', // hour 5: third bucket, beyond N=2
    ];
    expect(kept(times, { hourly: 2 })).toEqual([iso('2024-03-01T10:50:00Z'), iso('2024-03-01T08:59:59Z')]);
  });

  it('the same hour on different days is a different bucket', () => {
    expect(kept(['2024-03-02T10:00:00Z', '2024-03-01T10:00:00Z'], { hourly: 5 })).toHaveLength(2);
  });
});

describe('keep-daily', () => {
  const times = [
    '2024-03-10T23:00:00Z',
    '2024-03-10T10:00:00Z',
    '2024-03-09T12:00:00Z',
    '2024-03-08T12:00:00Z',
    '2024-03-08T01:00:00Z',
    '2024-03-05T00:00:00Z',
  ];

  it('keeps the newest bundle of each of the N most recent days with a bundle', () => {
    expect(kept(times, { daily: 3 })).toEqual([
      iso('2024-03-10T23:00:00Z'),
      iso('2024-03-09T12:00:00Z'),
      iso('2024-03-08T12:00:00Z'),
    ]);
    const d = applyRetention(snaps(times), { daily: 3 });
    expect(d.map((x) => x.reasons.filter((r) => r.startsWith('daily')).join())).toEqual([
      'daily 2024-03-10',
      '',
      'daily 2024-03-09',
      'daily 2024-03-08',
      '',
      '',
    ]);
  });

  describe('days are UTC days, whatever the local time zone', () => {
    const tz = process.env.TZ;
    afterEach(() => {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    });
    for (const zone of ['UTC', 'America/New_York', 'Asia/Tokyo']) {
      it(`TZ=${zone}`, () => {
        process.env.TZ = zone;
        // 23:30 and 00:30 UTC are different UTC days (but the same day in New York and Tokyo)
        const t = ['2024-03-11T00:30:00Z', '2024-03-10T23:30:00Z', '2024-03-10T15:30:00Z'];
        expect(kept(t, { daily: 5 })).toEqual([iso('2024-03-11T00:30:00Z'), iso('2024-03-10T23:30:00Z')]);
        // a time written with an offset is bucketed by its UTC day
        expect(bucket('daily', new Date('2024-03-10T21:30:00-05:00'))).toBe('2024-03-11');
      });
    }
  });
});

describe('keep-weekly (ISO weeks)', () => {
  it('computes ISO weeks, including the ones that straddle a year', () => {
    expect(isoWeek(new Date('2024-12-30T12:00:00Z'))).toEqual({ year: 2025, week: 1 }); // Monday
    expect(isoWeek(new Date('2024-12-29T23:59:59Z'))).toEqual({ year: 2024, week: 52 }); // Sunday
    expect(isoWeek(new Date('2021-01-03T00:00:00Z'))).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(new Date('2026-01-01T00:00:00Z'))).toEqual({ year: 2026, week: 1 });
    expect(isoWeek(new Date('2024-03-04T00:00:00Z'))).toEqual({ year: 2024, week: 10 });
    expect(bucket('weekly', new Date('2024-03-10T23:59:59Z'))).toBe('2024-W10'); // Sunday ends the week
    expect(bucket('weekly', new Date('2024-03-11T00:00:00Z'))).toBe('2024-W11'); // Monday starts one
  });

  it('keeps the newest bundle of each of the N most recent weeks with a bundle', () => {
    const times = [
      '2025-01-01T10:00:00Z',
      '2024-12-30T10:00:00Z', // 2025-W01 (Wed, Mon)
      '2024-12-29T10:00:00Z',
      '2024-12-23T10:00:00Z', // 2024-W52 (Sun, Mon)
      '2024-12-10T10:00:00Z', // 2024-W50 (W51 empty)
      '2024-11-01T10:00:00Z',
    ];
    expect(kept(times, { weekly: 3 })).toEqual([
      iso('2025-01-01T10:00:00Z'),
      iso('2024-12-29T10:00:00Z'),
      iso('2024-12-10T10:00:00Z'),
    ]);
  });
});

describe('keep-monthly and keep-yearly', () => {
  const times = [
    '2024-03-31T23:59:59Z',
    '2024-03-01T00:00:00Z',
    '2024-02-15T00:00:00Z',
    '2023-12-31T23:00:00Z',
    '2023-06-01T00:00:00Z',
    '2022-01-01T00:00:00Z',
    '2020-05-05T00:00:00Z',
  ];

  it('monthly', () => {
    expect(kept(times, { monthly: 3 })).toEqual([
      iso('2024-03-31T23:59:59Z'),
      iso('2024-02-15T00:00:00Z'),
      iso('2023-12-31T23:00:00Z'),
    ]);
  });

  it('yearly', () => {
    expect(kept(times, { yearly: 3 })).toEqual([
      iso('2024-03-31T23:59:59Z'),
      iso('2023-12-31T23:00:00Z'),
      iso('2022-01-01T00:00:00Z'),
    ]);
    expect(kept(times, { yearly: 10 })).toEqual([
      iso('2024-03-31T23:59:59Z'),
      iso('2023-12-31T23:00:00Z'),
      iso('2022-01-01T00:00:00Z'),
      iso('2020-05-05T00:00:00Z'),
    ]);
  });
});

describe('combinations', () => {
  it('a bundle is kept when any rule keeps it, with every reason listed', () => {
    const times = [
      '2024-03-10T12:00:00Z',
      '2024-03-10T08:00:00Z',
      '2024-03-09T12:00:00Z',
      '2024-03-08T12:00:00Z',
      '2024-02-20T12:00:00Z',
      '2024-02-10T12:00:00Z',
      '2024-01-05T12:00:00Z',
    ];
    const d = applyRetention(snaps(times), { last: 2, daily: 3, monthly: 3 });
    const byTime = Object.fromEntries(d.map((x) => [x.time.toISOString().slice(0, 13), x]));
    expect(byTime['2024-03-10T12']!.reasons).toEqual([
      'newest of its group',
      'last 1',
      'daily 2024-03-10',
      'monthly 2024-03',
    ]);
    expect(byTime['2024-03-10T08']!.reasons).toEqual(['last 2']); // kept by last only
    expect(byTime['2024-03-09T12']!.reasons).toEqual(['daily 2024-03-09']);
    expect(byTime['2024-03-08T12']!.reasons).toEqual(['daily 2024-03-08']);
    expect(byTime['2024-02-20T12']!.reasons).toEqual(['monthly 2024-02']);
    expect(byTime['2024-02-10T12']!.keep).toBe(false);
    expect(byTime['2024-01-05T12']!.reasons).toEqual(['monthly 2024-01']);
  });

  it('the kept set of a combination is the union of the kept sets of its rules', () => {
    const times = Array.from({ length: 60 }, (_, i) =>
      new Date(Date.UTC(2024, 0, 1) + i * 37 * 3600_000).toISOString(),
    );
    const one = (p: KeepPolicy) => new Set(kept(times, p));
    const union = new Set([...one({ last: 3 }), ...one({ daily: 5 }), ...one({ weekly: 4 }), ...one({ monthly: 2 })]);
    expect(new Set(kept(times, { last: 3, daily: 5, weekly: 4, monthly: 2 }))).toEqual(union);
  });
});

describe('ties', () => {
  it('bundles with the same time are ordered by id, so the result does not depend on input order', () => {
    const t = new Date('2024-03-01T10:00:00Z');
    const list: Snapshot[] = [
      { id: '/s/b.tar', time: t, containers: ['web'] },
      { id: '/s/a.tar', time: t, containers: ['web'] },
      { id: '/s/c.tar', time: t, containers: ['web'] },
    ];
    for (const order of [
      [0, 1, 2],
      [2, 1, 0],
      [1, 2, 0],
    ]) {
      const d = applyRetention(
        order.map((i) => list[i]!),
        { last: 1 },
      );
      expect(d.filter((x) => x.keep).map((x) => x.id)).toEqual(['/s/c.tar']);
      const daily = applyRetention(
        order.map((i) => list[i]!),
        { daily: 1 },
      );
      expect(daily.filter((x) => x.keep).map((x) => x.id)).toEqual(['/s/c.tar']);
    }
  });
});

describe('groups (container sets)', () => {
  it('the sorted container names define the group', () => {
    expect(groupKey(['web', 'db'])).toBe(groupKey(['db', 'web']));
    expect(groupKey(['web'])).not.toBe(groupKey(['web', 'db']));
  });

  it('each group is judged on its own', () => {
    const all = [
      ...snaps(['2024-03-05T00:00:00Z', '2024-03-04T00:00:00Z', '2024-03-03T00:00:00Z'], ['web']),
      ...snaps(['2024-01-02T00:00:00Z', '2024-01-01T00:00:00Z'], ['web', 'db']),
      // the same set, named in another order: same group as the line above
      { id: 'x', time: new Date('2024-01-03T00:00:00Z'), containers: ['db', 'web'] },
    ];
    const d = applyRetention(all, { last: 1 });
    const keptIds = d
      .filter((x) => x.keep)
      .map((x) => x.id)
      .sort();
    expect(keptIds).toEqual(['web@2024-03-05T00:00:00Z', 'x'].sort());
    expect(new Set(d.map((x) => x.group))).toEqual(new Set(['web', 'db,web']));
  });
});

describe('the newest bundle of a group is never removed', () => {
  it('even when no rule keeps anything', () => {
    const d = applyRetention(snaps(['2024-03-01T00:00:00Z', '2024-03-02T00:00:00Z']), {});
    expect(d.filter((x) => x.keep).map((x) => x.time.toISOString())).toEqual([iso('2024-03-02T00:00:00Z')]);
    expect(d[0]!.reasons).toEqual(['newest of its group']);
  });

  it('for random stores and random policies', () => {
    let seed = 42;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const sets = [['web'], ['db'], ['db', 'web'], ['cache']];
    for (let round = 0; round < 300; round++) {
      const n = 1 + Math.floor(rnd() * 30);
      const list: Snapshot[] = Array.from({ length: n }, (_, i) => ({
        id: `b${i}`,
        // coarse times, so that ties happen
        time: new Date(Date.UTC(2023, 0, 1) + Math.floor(rnd() * 400) * 6 * 3600_000),
        containers: sets[Math.floor(rnd() * sets.length)]!,
      }));
      const policy: KeepPolicy = {};
      for (const r of RULES) if (rnd() < 0.4) policy[r] = Math.floor(rnd() * 4);
      const d = applyRetention(list, policy);
      expect(d).toHaveLength(n);
      for (const set of sets) {
        const g = list.filter((s) => groupKey(s.containers) === groupKey(set));
        if (!g.length) continue;
        const newest = Math.max(...g.map((s) => s.time.getTime()));
        const keptNewest = d.filter((x) => x.group === groupKey(set) && x.keep && x.time.getTime() === newest);
        expect(keptNewest.length, JSON.stringify({ policy, set })).toBeGreaterThanOrEqual(1);
      }
      // and every bundle kept has a reason, every bundle removed has none
      for (const x of d) expect(x.keep).toBe(x.reasons.length > 0);
    }
  });
});

describe('policy', () => {
  it('a policy needs a rule that keeps something', () => {
    expect(hasKeepRule({})).toBe(false);
    expect(hasKeepRule({ daily: 0 })).toBe(false);
    expect(hasKeepRule({ daily: 0, weekly: 1 })).toBe(true);
  });

  it('refuses negative or fractional counts and invalid times', () => {
    expect(() => applyRetention(snaps(['2024-03-01T00:00:00Z']), { last: -1 })).toThrow(RangeError);
    expect(() => applyRetention(snaps(['2024-03-01T00:00:00Z']), { daily: 1.5 })).toThrow(RangeError);
    expect(() => applyRetention([{ id: 'x', time: new Date('garbage'), containers: ['a'] }], { last: 1 })).toThrow(
      RangeError,
    );
  });
});

describe('planPrune (what prune would do with a listing)', () => {
  const entry = (
    name: string,
    created: string | undefined,
    containers: string[] | undefined,
    error?: string,
  ): CatalogEntry => ({
    bundle: `/store/${name}`,
    bytes: 100,
    mtime: '2024-01-01T00:00:00.000Z',
    ...(created ? { created } : {}),
    ...(containers ? { containers } : {}),
    ...(error ? { error } : {}),
  });

  it('never removes a file it cannot read, nor one whose manifest has no valid time', () => {
    const entries = [
      entry('a.tar', '2024-03-01T00:00:00.000Z', ['web']),
      entry('b.tar', '2024-03-02T00:00:00.000Z', ['web']),
      entry('c.tar', '2024-03-03T00:00:00.000Z', ['web']),
      entry('junk.tar', undefined, undefined, 'not a ferry bundle'),
      entry('badtime.tar', 'yesterday', ['web']),
    ];
    const p = planPrune(entries, { last: 1 });
    expect(p.kept.map((k) => k.bundle)).toEqual(['/store/c.tar']);
    expect(p.removed.map((k) => k.bundle).sort()).toEqual(['/store/a.tar', '/store/b.tar']);
    expect(p.unreadable.map((u) => u.bundle).sort()).toEqual(['/store/badtime.tar', '/store/junk.tar']);
  });
});

describe('keep-within', () => {
  it('parses y, m (months), w, d and h, largest first; refuses the rest', () => {
    expect(parseWithin('30d')).toEqual({ years: 0, months: 0, days: 30, hours: 0 });
    expect(parseWithin('1y6m')).toEqual({ years: 1, months: 6, days: 0, hours: 0 });
    expect(parseWithin('2w3d12h')).toEqual({ years: 0, months: 0, days: 17, hours: 12 });
    for (const bad of ['', '0d', '30', 'd', '6m1y', '1.5d', '30 d', '-3d', '3x'])
      expect(parseWithin(bad), bad).toBeUndefined();
  });

  it('counts back from the newest bundle of the group, in calendar terms', () => {
    expect(withinCutoff(new Date('2024-03-31T12:00:00Z'), parseWithin('1m')!).toISOString()).toBe(
      '2024-03-02T12:00:00.000Z',
    ); // Feb 31 is Mar 2
    expect(withinCutoff(new Date('2024-03-10T12:00:00Z'), parseWithin('1y2d6h')!).toISOString()).toBe(
      '2023-03-08T06:00:00.000Z',
    );
  });

  it('keeps every bundle made within the duration before the newest one, strictly, per group', () => {
    const snaps = [
      { id: 'a', time: new Date('2024-03-10T00:00:00Z'), containers: ['web'] },
      { id: 'b', time: new Date('2024-03-05T00:00:00Z'), containers: ['web'] },
      { id: 'c', time: new Date('2024-03-03T00:00:00Z'), containers: ['web'] }, // exactly 7 days before: not within
      { id: 'd', time: new Date('2024-01-01T00:00:00Z'), containers: ['web'] },
      { id: 'e', time: new Date('2020-01-01T00:00:00Z'), containers: ['db'] }, // its group's newest: measured from itself
      { id: 'f', time: new Date('2019-12-30T00:00:00Z'), containers: ['db'] },
    ];
    const d = Object.fromEntries(applyRetention(snaps, { within: '7d' }).map((x) => [x.id, x]));
    expect(
      Object.values(d)
        .filter((x) => x.keep)
        .map((x) => x.id)
        .sort(),
    ).toEqual(['a', 'b', 'e', 'f']);
    expect(d.b!.reasons).toEqual(['within 7d']);
    expect(d.a!.reasons).toEqual(['newest of its group', 'within 7d']);
    expect(
      applyRetention(snaps, { within: '7d', last: 3 })
        .filter((x) => x.keep)
        .map((x) => x.id)
        .sort(),
    ).toEqual(['a', 'b', 'c', 'e', 'f']);
    expect(() => applyRetention(snaps, { within: 'soon' })).toThrow(RangeError);
  });
});

describe('damaged bundles (verify left a damage mark)', () => {
  /** Decisions for one group, `bad` the times marked damaged; as [time, keep, damaged, reasons]. */
  function judge(times: string[], bad: string[], policy: KeepPolicy) {
    const s = snaps(times).map((x) => (bad.includes(x.time.toISOString()) ? { ...x, damaged: true } : x));
    return applyRetention(s, policy);
  }
  const keptGood = (d: ReturnType<typeof judge>) =>
    d.filter((x) => x.keep && !x.damaged).map((x) => x.time.toISOString());
  const damaged = (d: ReturnType<typeof judge>) => d.filter((x) => x.damaged).map((x) => x.time.toISOString());
  const removed = (d: ReturnType<typeof judge>) => d.filter((x) => !x.keep).map((x) => x.time.toISOString());
  const days = ['2024-03-01', '2024-03-02', '2024-03-03', '2024-03-04', '2024-03-05'].map((d) => iso(`${d}T10:00:00Z`));

  it('keep-last: a damaged newest counts for nothing, so two good ones older than it are kept', () => {
    const d = judge(days, [days[4]!], { last: 2 });
    expect(keptGood(d)).toEqual([days[3], days[2]]);
    expect(damaged(d)).toEqual([days[4]]);
    expect(removed(d)).toEqual([days[1], days[0]]);
    // the newest good bundle is the newest of its group, not the damaged one
    expect(d.find((x) => x.time.toISOString() === days[3])!.reasons).toContain('newest of its group');
    expect(d.find((x) => x.damaged)!.reasons).toEqual(['damaged']);
  });

  it('keep-last: a damaged bundle in the middle is kept and skipped', () => {
    const d = judge(days, [days[3]!], { last: 2 });
    expect(keptGood(d)).toEqual([days[4], days[2]]);
    expect(damaged(d)).toEqual([days[3]]);
    expect(removed(d)).toEqual([days[1], days[0]]);
  });

  it('keep-daily: a damaged day is not a day kept; the next good day takes its place', () => {
    const two = [...days.map((t) => t.replace('T10', 'T08')), ...days].sort();
    // the 5th has two bundles: the later one (10:00) damaged, the earlier (08:00) good
    const d = judge(two, [days[4]!], { daily: 2 });
    expect(keptGood(d)).toEqual([days[4]!.replace('T10', 'T08'), days[3]]);
    expect(damaged(d)).toEqual([days[4]]);
    expect(removed(d)).toHaveLength(two.length - 3);
    // damaged in the middle: both bundles of the 4th are damaged, so the 5th and the 3rd are kept
    const m = judge(two, [days[3]!, days[3]!.replace('T10', 'T08')], { daily: 2 });
    expect(keptGood(m)).toEqual([days[4], days[2]]);
    expect(damaged(m).sort()).toEqual([days[3]!.replace('T10', 'T08'), days[3]].sort());
  });

  it('all damaged: every bundle is kept, none counted, nothing removed', () => {
    for (const policy of [{ last: 2 }, { daily: 1 }, { within: '1d' }] as KeepPolicy[]) {
      const d = judge(days, days, policy);
      expect(removed(d)).toEqual([]);
      expect(keptGood(d)).toEqual([]);
      expect(damaged(d)).toHaveLength(days.length);
    }
  });

  it('keep-within measures from the newest good bundle', () => {
    const d = judge(days, [days[4]!], { within: '1d' });
    expect(keptGood(d)).toEqual([days[3]]);
    expect(removed(d)).toEqual([days[2], days[1], days[0]]);
  });

  it('planPrune lists marked bundles as damaged, with their mark, and removes no more good ones than the rule allows', () => {
    const entries: CatalogEntry[] = ['a', 'b', 'c'].map((n, i) => ({
      bundle: `/store/${n}.tar`,
      name: `${n}.tar`,
      bytes: 100,
      mtime: '2024-01-01T00:00:00.000Z',
      created: days[i],
      containers: ['web'],
    }));
    const mark = { at: '2024-03-06T00:00:00.000Z', reason: 'bad volume-data.tar: checksum mismatch' };
    const p = planPrune(entries, { last: 2 }, new Map([['/store/c.tar', mark]]));
    expect(p.kept.map((k) => k.bundle)).toEqual(['/store/b.tar', '/store/a.tar']);
    expect(p.removed).toEqual([]);
    expect(p.damaged.map((x) => [x.bundle, x.mark])).toEqual([['/store/c.tar', mark]]);
    // without the mark, the damaged newest would have pushed the oldest good one out
    expect(planPrune(entries, { last: 2 }).removed.map((r) => r.bundle)).toEqual(['/store/a.tar']);
  });
});
