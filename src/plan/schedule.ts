/**
 * When `ferry schedule` runs: a 5-field cron expression, a shortcut (@daily, ...) or an interval
 * (`@every 6h`, `30s`). Pure: parsing and the next run time after a given instant; no clock.
 *
 * Cron subset (docs/commands.md, "schedule"): minute hour day-of-month month day-of-week, each
 * `*`, a number, a range `a-b`, a step `*\/n` or `a-b/n`, or a comma list of those; numbers only
 * (no month or day names); day-of-week 0-7 (0 and 7 are Sunday). As in cron, when both
 * day-of-month and day-of-week are restricted, a day matching either runs. Times are local
 * (the TZ of the process; UTC in ferry's container image).
 */

export type Schedule =
  | { kind: 'interval'; ms: number; text: string }
  | {
      kind: 'cron';
      text: string;
      minute: Set<number>;
      hour: Set<number>;
      dom: Set<number>;
      month: Set<number>;
      dow: Set<number>;
      /** Whether day-of-month / day-of-week were `*` (cron's either-day rule needs to know). */
      domAny: boolean;
      dowAny: boolean;
    };

const SHORTCUTS: Record<string, string> = {
  '@hourly': '0 * * * *',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0',
  '@monthly': '0 0 1 * *',
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
};

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** An interval such as `30s`, `5m`, `1h30m`, `1d` (units d, h, m, s, largest first): milliseconds, or undefined. Pure. */
export function parseInterval(text: string): number | undefined {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text);
  if (!m || !text) return undefined;
  const ms = ['d', 'h', 'm', 's'].reduce((sum, u, i) => sum + Number(m[i + 1] ?? 0) * UNIT_MS[u]!, 0);
  return ms > 0 ? ms : undefined;
}

function field(text: string, name: string, min: number, max: number): Set<number> {
  const out = new Set<number>();
  const bad = (why: string): never => {
    throw new Error(`${name} field ${JSON.stringify(text)}: ${why}`);
  };
  for (const part of text.split(',')) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) bad(`expected *, a number, a range a-b or a step */n (numbers only, ${min}-${max})`);
    const [, , a, b, s] = m!;
    const lo = a === undefined ? min : Number(a);
    const hi = a === undefined ? max : b !== undefined ? Number(b) : s !== undefined ? max : lo;
    const step = s === undefined ? 1 : Number(s);
    if (lo < min || hi > max || lo > hi) bad(`out of range ${min}-${max}`);
    if (step < 1) bad('a step must be at least 1');
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

/** A schedule from its text; an Error saying what is wrong otherwise. Pure. */
export function parseSchedule(input: string): Schedule {
  const text = input.trim();
  const every = /^@every\s+(\S+)$/.exec(text);
  const interval = parseInterval(every ? every[1]! : text);
  if (interval !== undefined) return { kind: 'interval', ms: interval, text };
  if (every) throw new Error(`@every ${every[1]}: expected an interval such as 30s, 5m, 6h or 1d`);
  const expr = SHORTCUTS[text] ?? text;
  if (expr.startsWith('@')) throw new Error(`${text}: unknown shortcut (${Object.keys(SHORTCUTS).join(', ')}, @every)`);
  const f = expr.split(/\s+/);
  if (f.length !== 5)
    throw new Error(
      `${JSON.stringify(text)}: expected 5 cron fields (minute hour day-of-month month day-of-week), a shortcut such as @daily, or an interval such as 6h`,
    );
  const dow = field(f[4]!, 'day-of-week', 0, 7);
  if (dow.has(7)) dow.add(0);
  dow.delete(7);
  return {
    kind: 'cron',
    text,
    minute: field(f[0]!, 'minute', 0, 59),
    hour: field(f[1]!, 'hour', 0, 23),
    dom: field(f[2]!, 'day-of-month', 1, 31),
    month: field(f[3]!, 'month', 1, 12),
    dow,
    domAny: f[2] === '*',
    dowAny: f[4] === '*',
  };
}

function dayMatches(s: Extract<Schedule, { kind: 'cron' }>, d: Date): boolean {
  if (!s.month.has(d.getMonth() + 1)) return false;
  const dom = s.dom.has(d.getDate());
  const dow = s.dow.has(d.getDay());
  if (s.domAny || s.dowAny) return dom && dow;
  return dom || dow;
}

/**
 * The first run strictly after `after` (an interval: `after` plus the interval; cron: the next
 * matching minute, at second 0, in local time). Undefined when a cron expression never matches
 * within 5 years (say `0 0 31 2 *`). Pure.
 */
export function nextRun(s: Schedule, after: Date): Date | undefined {
  if (s.kind === 'interval') return new Date(after.getTime() + s.ms);
  const t = new Date(after.getTime());
  t.setSeconds(0, 0);
  t.setMinutes(t.getMinutes() + 1);
  const limit = after.getTime() + 5 * 366 * 86_400_000;
  while (t.getTime() <= limit) {
    if (!dayMatches(s, t)) {
      t.setDate(t.getDate() + 1);
      t.setHours(0, 0, 0, 0);
      continue;
    }
    if (!s.hour.has(t.getHours())) {
      t.setHours(t.getHours() + 1, 0, 0, 0);
      continue;
    }
    if (!s.minute.has(t.getMinutes())) {
      t.setMinutes(t.getMinutes() + 1, 0, 0);
      continue;
    }
    return t;
  }
  return undefined;
}
