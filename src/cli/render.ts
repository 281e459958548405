/**
 * Progress on stderr (stdout carries results, or the bundle itself with `-o -`). One record of
 * the run (Tally: streams with their totals and data paths, containers frozen) feeds both
 * renderers: on a terminal listr2's live task and a summary table; elsewhere (cron, CI) plain
 * lines, one per step, one per stream with its figures, and a one-line summary.
 */
import { Listr } from 'listr2';
import type { Progress } from '../context.js';

/** Renderers still drawing their last frame: main waits for them before it prints an error. */
const drawing = new Set<Promise<unknown>>();
/** Renderers not yet told how their run ended. */
const open = new Set<RunProgress>();

/**
 * End every renderer still open, as failed unless told otherwise (a command that failed before
 * its try block), and resolve once each has drawn its end (✔ or ✖), so that what follows comes
 * after it.
 */
export async function rendered(failed = true): Promise<void> {
  for (const p of [...open]) p.done(failed);
  await Promise.all([...drawing]);
}

/**
 * The renderer of a run: done() once it ended, done(true) when it failed (no ✔ then).
 * interrupted(): the run was told to stop; the steps that put things back come after, and a
 * failed end names the step it was stopped at, not those.
 */
export type RunProgress = Progress & { done(failed?: boolean): void; interrupted?(): void };

/** The run was told to stop (main, on a signal): every open renderer notes the step it was at. */
export function interrupted(): void {
  for (const p of open) p.interrupted?.();
}

export interface RenderOptions {
  quiet: boolean;
  stream?: NodeJS.WriteStream;
}

export function humanBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${u[i]}`;
}

/** m:ss (h:mm:ss from an hour). */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/**
 * The counter line of a stream: bytes so far (of the total, with a percentage, where it is
 * known), the rate since it began, and an ETA where both are known. Pure.
 */
export function counterLine(label: string, n: number, elapsedMs: number, total?: number): string {
  const parts = [`${label}: ${humanBytes(n)}${total ? ` / ${humanBytes(total)}` : ''}`];
  if (total) parts.push(`${Math.min(100, Math.floor((n / total) * 100))}%`);
  const rate = elapsedMs >= 500 ? n / (elapsedMs / 1000) : undefined;
  if (rate !== undefined) parts.push(`${humanBytes(rate)}/s`);
  if (total && rate && n < total) parts.push(`ETA ${clock((total - n) / rate)}`);
  return parts.join('  ');
}

/** What one stream moved: its bytes (of its total, where known), when its first and last count came, its data path. */
export interface Moved {
  label: string;
  bytes: number;
  firstMs: number;
  lastMs: number;
  total?: number;
  /** The data path that carried it (data/paths.ts), e.g. `host-tar` or `host-tar -> engine-archive`. */
  path?: string;
}

/** A source container frozen (paused or stopped) by the run: since when, and for how long once it runs again. */
export interface Frozen {
  name: string;
  how: 'paused' | 'stopped';
  sinceMs: number;
  ms?: number;
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
const rateOf = (m: Moved) => {
  const ms = m.lastMs - m.firstMs;
  return ms >= 500 ? `${humanBytes(m.bytes / (ms / 1000))}/s` : undefined;
};

/**
 * The line a finished stream leaves in plain output: bytes (of its total, with a percentage,
 * where it was known), how long, the rate, the data path. Pure.
 */
export function streamLine(m: Moved): string {
  const parts = [`${m.label}: ${humanBytes(m.bytes)}${m.total ? ` / ${humanBytes(m.total)}` : ''}`];
  if (m.total) parts.push(`${Math.min(100, Math.floor((m.bytes / m.total) * 100))}%`);
  parts.push(`in ${secs(m.lastMs - m.firstMs)}`);
  const rate = rateOf(m);
  if (rate) parts.push(rate);
  if (m.path) parts.push(`via ${m.path}`);
  return parts.join('  ');
}

/** How long a container was (or, at `nowMs`, has been) frozen: `web paused 1.2s`. Pure. */
export function frozenText(f: Frozen, nowMs: number): string {
  return `${f.name} ${f.how} ${secs(f.ms ?? nowMs - f.sinceMs)}`;
}

/** The live line while containers are frozen: `paused: web (0:03)`. Pure; undefined when none is. */
export function frozenLine(frozen: Frozen[], nowMs: number): string | undefined {
  const now = frozen.filter((f) => f.ms === undefined);
  if (!now.length) return undefined;
  return now.map((f) => `${f.how}: ${f.name} (${clock((nowMs - f.sinceMs) / 1000)})`).join(', ');
}

/**
 * The one line a run ends with in plain output: how long it took, what it moved in how many
 * streams and at what overall rate, and how long each source container was frozen. Pure.
 */
export function summaryLine(moved: Moved[], runMs: number, frozen: Frozen[] = []): string {
  const bytes = moved.reduce((a, m) => a + m.bytes, 0);
  const parts = [
    `done in ${secs(runMs)}` +
      (moved.length
        ? `: ${humanBytes(bytes)} moved in ${moved.length} stream${moved.length === 1 ? '' : 's'}` +
          (runMs >= 500 && bytes ? ` (${humanBytes(bytes / (runMs / 1000))}/s)` : '')
        : ''),
  ];
  for (const f of frozen) parts.push(frozenText(f, runMs));
  return parts.join('; ');
}

/**
 * The summary a run on a terminal ends with: each stream (bundle member, image, volume) with its
 * bytes, how long it took, its rate and (where known) its data path, then the total and the
 * run's time, then how long each source container was frozen. Pure.
 */
export function summaryTable(moved: Moved[], runMs: number, frozen: Frozen[] = []): string {
  if (!moved.length && !frozen.length) return '';
  const paths = moved.some((m) => m.path);
  const rows = [
    ['MOVED', 'BYTES', 'TIME', 'RATE', ...(paths ? ['PATH'] : [])],
    ...moved.map((m) => [
      m.label,
      humanBytes(m.bytes),
      secs(m.lastMs - m.firstMs),
      rateOf(m) ?? '-',
      ...(paths ? [m.path ?? '-'] : []),
    ]),
    ['total', humanBytes(moved.reduce((a, m) => a + m.bytes, 0)), secs(runMs), '', ...(paths ? [''] : [])],
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const table = moved.length
    ? rows.map(
        (r) =>
          '  ' +
          r
            .map((c, i) => c.padEnd(widths[i]!))
            .join('  ')
            .trimEnd() +
          '\n',
      )
    : [];
  return [...table, ...frozen.map((f) => `  ${frozenText(f, runMs)}\n`)].join('');
}

/**
 * What a run moved and froze, as both renderers see it: the one record that the live line, the
 * plain lines and both summaries are drawn from.
 */
export class Tally {
  readonly began = Date.now();
  private readonly streams = new Map<string, Moved>();
  private readonly paths = new Map<string, string>();
  private readonly frozenBy = new Map<string, Frozen>();

  /** A stream's count; returns its counter line (rate since its first count). */
  bytes(label: string, n: number, total?: number): string {
    const now = Date.now();
    const m = this.streams.get(label) ?? { label, bytes: 0, firstMs: now, lastMs: now };
    const path = this.paths.get(label);
    this.streams.set(label, { ...m, bytes: n, lastMs: now, ...(total ? { total } : {}), ...(path ? { path } : {}) });
    return counterLine(label, n, now - m.firstMs, total);
  }

  via(label: string, path: string): void {
    this.paths.set(label, path);
    const m = this.streams.get(label);
    if (m) this.streams.set(label, { ...m, path });
  }

  frozen(name: string, how: 'paused' | 'stopped', ms?: number): void {
    const since = this.frozenBy.get(name)?.sinceMs;
    if (ms === undefined) this.frozenBy.set(name, { name, how, sinceMs: Date.now() });
    else this.frozenBy.set(name, { name, how, sinceMs: since ?? Date.now() - ms, ms });
  }

  /** Streams in the order they began. */
  moved(): Moved[] {
    return [...this.streams.values()];
  }

  /** Containers frozen, their times relative to the run's start. */
  held(): Frozen[] {
    return [...this.frozenBy.values()].map((f) => ({ ...f, sinceMs: f.sinceMs - this.began }));
  }

  frozenLine(): string | undefined {
    return frozenLine([...this.frozenBy.values()], Date.now());
  }

  runMs(): number {
    return Date.now() - this.began;
  }
}

/**
 * On a terminal, listr2 draws the run as one live task: its title is the current step, its
 * output the byte counter and, below it, what is frozen (while it is); at the end ✔ and the summary table,
 * or ✖ and the step it failed at.
 */
function listrProgress(out: NodeJS.WriteStream): RunProgress {
  let resolveDone!: () => void;
  let rejectDone!: (err: Error) => void;
  const finished = new Promise<void>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  finished.catch(() => {}); // a run may fail before listr has started the task that awaits it
  let task: { title?: string; output?: string } | undefined;
  let title = 'ferry';
  let stoppedAt: string | undefined;
  const listr = new Listr(
    [
      {
        title,
        task: async (_ctx, t) => {
          task = t;
          task.title = title;
          await finished;
        },
        rendererOptions: { outputBar: 1, persistentOutput: false },
      },
    ],
    { renderer: 'default', exitOnError: false, registerSignalListeners: false },
  );
  // After the part before it has drawn its end (backup --all: one part per bundle).
  const running = Promise.all([...drawing])
    .then(() => listr.run())
    .catch(() => {});
  drawing.add(running);
  const log: string[] = [];
  const tally = new Tally();
  let counter: string | undefined;
  let warning: string | undefined;
  let lastDraw = 0;
  const draw = () => {
    if (!task) return;
    lastDraw = Date.now();
    task.output = [warning ?? counter, tally.frozenLine()].filter(Boolean).join('\n');
  };
  return {
    step(t) {
      if (title !== 'ferry') log.push(`ferry: ${title}`);
      title = t;
      if (task) task.title = t;
    },
    info(msg) {
      log.push(`ferry: ${msg}`);
    },
    warn(msg) {
      log.push(`ferry: warning: ${msg}`);
      warning = `warning: ${msg}`;
      draw();
    },
    bytes(label, n, total) {
      counter = tally.bytes(label, n, total);
      warning = undefined;
      // At most five frames a second, but always the one that reaches the total (100%).
      if (Date.now() - lastDraw < 200 && !(total && n >= total)) return;
      draw();
    },
    via(label, path) {
      tally.via(label, path);
    },
    frozen(name, how, ms) {
      tally.frozen(name, how, ms);
      draw();
    },
    interrupted() {
      stoppedAt ??= title;
    },
    done(failed) {
      // A run that failed ends on ✖ and the step it was at (main prints the error after it).
      const at = stoppedAt ?? title;
      if (failed) rejectDone(new Error(at === 'ferry' ? 'failed' : `${at}: failed`));
      else {
        if (task) task.title = 'done';
        resolveDone();
      }
      void running.then(() => {
        // What scrolled by, for the record: steps, information, warnings.
        const warnings = log.filter((l) => l.startsWith('ferry: warning:'));
        if (warnings.length) out.write(warnings.join('\n') + '\n');
        // A run that worked ends with what it moved (a failed one with its error, from main).
        if (!failed) out.write(summaryTable(tally.moved(), tally.runMs(), tally.held()));
      });
    },
  };
}

export function createProgress(opts: RenderOptions): RunProgress {
  const out = opts.stream ?? process.stderr;
  const tty = !!out.isTTY;
  if (tty && !opts.quiet && !process.env.FERRY_PLAIN_OUTPUT)
    // After the end, only warnings are shown (as plain lines: the live task has ended).
    return inParts(
      () => listrProgress(out),
      (msg) => out.write(`ferry: warning: ${msg}\n`),
    );
  const plain = () => plainProgress(out, tty, opts.quiet);
  return inParts(
    plain,
    (msg, p) => p.warn(msg),
    (msg, p) => p.info(msg),
  );
}

/**
 * A run in parts: done() ends the current part (its ✔ or ✖, its figures and summary); a step or a
 * count after it begins the next part (`backup --all`: one per bundle). A done() with nothing
 * since the last one is the same end again (a finally block after a success): ignored. Warnings
 * and information after the end go to `afterWarn` and `afterInfo` (not a new part).
 */
function inParts(
  make: () => RunProgress,
  afterWarn: (msg: string, last: RunProgress) => void,
  afterInfo?: (msg: string, last: RunProgress) => void,
): RunProgress {
  let cur = make();
  let ended = false;
  const live = (): RunProgress => {
    if (ended) {
      cur = make();
      ended = false;
      open.add(self);
    }
    return cur;
  };
  const self: RunProgress = {
    step: (t) => live().step(t),
    bytes: (label, n, total) => live().bytes(label, n, total),
    info: (msg) => (ended ? afterInfo?.(msg, cur) : cur.info(msg)),
    warn: (msg) => (ended ? afterWarn(msg, cur) : cur.warn(msg)),
    via: (label, path) => cur.via?.(label, path),
    frozen: (name, how, ms) => cur.frozen?.(name, how, ms),
    interrupted: () => (ended ? undefined : cur.interrupted?.()),
    done: (failed) => {
      if (ended) return;
      ended = true;
      open.delete(self);
      cur.done(failed);
    },
  };
  open.add(self);
  return self;
}

/**
 * Plain lines (cron, CI, a pipe, FERRY_PLAIN_OUTPUT): one per step; at the end one per stream
 * with its figures (bytes of its total, percentage, time, rate, data path), then one summary
 * line, `ferry: done in …` or `ferry: failed at <step> after …`. On a terminal (plain by choice)
 * a counter line is also redrawn in place while a stream is read.
 */
function plainProgress(out: NodeJS.WriteStream, tty: boolean, quiet: boolean): RunProgress {
  let lastDraw = 0;
  let counterShown = false;
  let title: string | undefined;
  let stoppedAt: string | undefined;
  const tally = new Tally();
  const clear = () => {
    if (counterShown) {
      out.write('\r\x1b[K');
      counterShown = false;
    }
  };
  const line = (s: string) => {
    clear();
    out.write(s + '\n');
  };
  return {
    step(t) {
      title = t;
      if (!quiet) line(`ferry: ${t}`);
    },
    info(msg) {
      if (!quiet) line(`ferry: ${msg}`);
    },
    warn(msg) {
      line(`ferry: warning: ${msg}`);
    },
    bytes(label, n, total) {
      const counter = tally.bytes(label, n, total);
      if (quiet || !tty) return;
      const now = Date.now();
      if (now - lastDraw < 200 && !(total && n >= total)) return;
      lastDraw = now;
      out.write(`\r\x1b[K  ${counter}`);
      counterShown = true;
    },
    via(label, path) {
      tally.via(label, path);
    },
    frozen(name, how, ms) {
      tally.frozen(name, how, ms);
    },
    interrupted() {
      stoppedAt ??= title;
    },
    done(failed) {
      clear();
      if (quiet) return;
      for (const m of tally.moved()) line(`ferry: ${streamLine(m)}`);
      const ms = tally.runMs();
      if (!failed) line(`ferry: ${summaryLine(tally.moved(), ms, tally.held())}`);
      // A run that failed before its first step has only its error to say (main prints it).
      else if (stoppedAt ?? title) {
        const moved = humanBytes(tally.moved().reduce((a, m) => a + m.bytes, 0));
        line(`ferry: failed at ${stoppedAt ?? title} after ${(ms / 1000).toFixed(1)}s (${moved} moved)`);
      }
    },
  };
}
