/**
 * Retention rules for `ferry prune`, with restic's `forget` semantics. Pure: no I/O, no clock.
 *
 * Bundles are grouped by container set (the sorted container names of their manifest); each
 * group is judged on its own. Within a group, newest first:
 *   - keep-last N keeps the N newest bundles;
 *   - keep-hourly/daily/weekly/monthly/yearly N keep the newest bundle of each of the N most
 *     recent hours/days/ISO weeks/months/years (in UTC) that hold a bundle;
 *   - keep-within D keeps every bundle made within D (e.g. 30d, 6m, 1y2m) before the group's
 *     newest one: measured from the newest bundle, not from now, so backups that stopped do not
 *     age every bundle out;
 *   - a bundle is kept when any rule keeps it, and the newest bundle of a group is always kept.
 * A bundle marked damaged (verify found it so: store/marks.ts) counts towards no rule and is not
 * the newest of its group for any rule: the rules keep that many *good* bundles, and keep-within
 * measures from the newest good one. It is never removed either (keep, reason "damaged"): an
 * operator looks at it. When every bundle of a group is damaged, all are kept.
 * Everything else is removed. Bundles with the same time are ordered by id (descending), so the
 * result never depends on input order.
 */

export type Rule = 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';
export const RULES: readonly Rule[] = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'];

export type KeepPolicy = Partial<Record<Rule, number>> & {
  /** keep-within: as given (`30d`), for messages; parsed by parseWithin. */
  within?: string;
};

export interface Within {
  years: number;
  months: number;
  days: number;
  hours: number;
}

/**
 * A keep-within duration: numbers with units y (years), m (months), w (weeks), d (days), h
 * (hours), largest first, e.g. `30d`, `2w`, `1y6m`, `36h`. Undefined when it is not one.
 */
export function parseWithin(text: string): Within | undefined {
  const m = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$/.exec(text);
  if (!m || !text || m.slice(1).every((x) => x === undefined)) return undefined;
  const n = (i: number) => Number(m[i] ?? 0);
  const w = { years: n(1), months: n(2), days: n(3) * 7 + n(4), hours: n(5) };
  return w.years + w.months + w.days + w.hours > 0 ? w : undefined;
}

/** The earliest time keep-within keeps, for a group whose newest bundle is `newest` (UTC calendar arithmetic). */
export function withinCutoff(newest: Date, w: Within): Date {
  const d = new Date(newest.getTime());
  d.setUTCFullYear(d.getUTCFullYear() - w.years, d.getUTCMonth() - w.months, d.getUTCDate() - w.days);
  d.setUTCHours(d.getUTCHours() - w.hours);
  return d;
}

export interface Snapshot {
  /** Unique id (the bundle's path). */
  id: string;
  time: Date;
  /** Container names; their sorted list defines the group. */
  containers: string[];
  /** verify found it damaged (it has a damage mark). */
  damaged?: boolean;
}

export interface Decision {
  id: string;
  time: Date;
  group: string;
  keep: boolean;
  /** Why it is kept, e.g. "last 1", "daily 2024-03-01", "newest of its group". Empty when removed. */
  reasons: string[];
  /** Kept only because it is marked damaged (it counted towards no rule). */
  damaged?: boolean;
}

export function groupKey(containers: string[]): string {
  return [...containers].sort().join(',');
}

/** True when the policy has at least one rule that keeps something. */
export function hasKeepRule(p: KeepPolicy): boolean {
  return RULES.some((r) => (p[r] ?? 0) > 0) || p.within !== undefined;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** ISO 8601 week of a UTC date: its ISO year and week number. */
export function isoWeek(d: Date): { year: number; week: number } {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const dow = t.getUTCDay() || 7; // Monday 1 ... Sunday 7
  t.setUTCDate(t.getUTCDate() + 4 - dow); // the Thursday of this week decides the year
  const year = t.getUTCFullYear();
  const week = Math.ceil(((t.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return { year, week };
}

/** The bucket a time falls in for a rule (UTC). */
export function bucket(rule: Exclude<Rule, 'last'>, d: Date): string {
  const y = d.getUTCFullYear();
  switch (rule) {
    case 'hourly':
      return `${y}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}`;
    case 'daily':
      return `${y}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    case 'weekly': {
      const w = isoWeek(d);
      return `${w.year}-W${pad(w.week)}`;
    }
    case 'monthly':
      return `${y}-${pad(d.getUTCMonth() + 1)}`;
    case 'yearly':
      return `${y}`;
  }
}

/** Newest first; equal times by id, descending, so that the order is total. */
function newestFirst(a: Snapshot, b: Snapshot): number {
  return b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** Decide, for every snapshot, whether the policy keeps it. The result is newest first per group. */
export function applyRetention(snapshots: Snapshot[], policy: KeepPolicy): Decision[] {
  for (const r of RULES) {
    const n = policy[r];
    if (n !== undefined && (!Number.isInteger(n) || n < 0))
      throw new RangeError(`keep-${r} must be a whole number >= 0, got ${n}`);
  }
  const within = policy.within === undefined ? undefined : parseWithin(policy.within);
  if (policy.within !== undefined && !within)
    throw new RangeError(`keep-within must be a duration such as 30d, 6m or 1y2m, got ${policy.within}`);
  for (const s of snapshots)
    if (Number.isNaN(s.time.getTime())) throw new RangeError(`snapshot ${s.id} has an invalid time`);
  const groups = new Map<string, Snapshot[]>();
  for (const s of snapshots) {
    const g = groupKey(s.containers);
    let list = groups.get(g);
    if (!list) groups.set(g, (list = []));
    list.push(s);
  }
  const out: Decision[] = [];
  for (const g of [...groups.keys()].sort()) {
    const list = groups.get(g)!.sort(newestFirst);
    const state = new Map<Rule, { count: number; last?: string }>(RULES.map((r) => [r, { count: 0 }]));
    const newestGood = list.find((s) => !s.damaged);
    const cutoff = within && newestGood && withinCutoff(newestGood.time, within);
    list.forEach((s) => {
      if (s.damaged) {
        out.push({ id: s.id, time: s.time, group: g, keep: true, reasons: ['damaged'], damaged: true });
        return;
      }
      const reasons: string[] = [];
      if (s === newestGood) reasons.push('newest of its group');
      if (cutoff && s.time.getTime() > cutoff.getTime()) reasons.push(`within ${policy.within}`);
      for (const r of RULES) {
        const max = policy[r] ?? 0;
        const st = state.get(r)!;
        if (st.count >= max) continue;
        if (r === 'last') {
          st.count++;
          reasons.push(`last ${st.count}`);
          continue;
        }
        const b = bucket(r, s.time);
        if (b === st.last) continue; // an older bundle of a bucket already kept
        st.last = b;
        st.count++;
        reasons.push(`${r} ${b}`);
      }
      out.push({ id: s.id, time: s.time, group: g, keep: reasons.length > 0, reasons });
    });
  }
  return out;
}
