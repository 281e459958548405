/**
 * Progress on stderr (stdout carries results, or the bundle itself with `-o -`). On a terminal a
 * single byte counter line is redrawn; elsewhere (cron, CI) only plain step lines are printed.
 */
import { Listr } from 'listr2';
import type { Progress } from '../context.js';

/** Renderers still drawing their last frame: main waits for them before it prints an error. */
const drawing = new Set<Promise<unknown>>();
/** Renderers not yet told how their run ended. */
const open = new Set<RunProgress>();

/**
 * End every renderer still open as failed (a command that failed before its try block), and
 * resolve once each has drawn its end (✔ or ✖), so that what follows comes after it.
 */
export async function rendered(): Promise<void> {
  for (const p of [...open]) p.done(true);
  await Promise.all([...drawing]);
}

/** The renderer of a run: done() once it ended, done(true) when it failed (no ✔ then). */
export type RunProgress = Progress & { done(failed?: boolean): void };

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

/** What one stream moved: its bytes, and when its first and last count came. */
export interface Moved {
  label: string;
  bytes: number;
  firstMs: number;
  lastMs: number;
}

/**
 * The summary a run on a terminal ends with: each stream (bundle member, image, volume) with its
 * bytes, how long it took and its rate, then the total and the run's time. Pure.
 */
export function summaryTable(moved: Moved[], runMs: number): string {
  if (!moved.length) return '';
  const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
  const rows = [
    ['MOVED', 'BYTES', 'TIME', 'RATE'],
    ...moved.map((m) => {
      const ms = m.lastMs - m.firstMs;
      return [m.label, humanBytes(m.bytes), secs(ms), ms >= 500 ? `${humanBytes(m.bytes / (ms / 1000))}/s` : '-'];
    }),
    ['total', humanBytes(moved.reduce((a, m) => a + m.bytes, 0)), secs(runMs), ''],
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map(
      (r) =>
        '  ' +
        r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd() +
        '\n',
    )
    .join('');
}

/** When each stream began, for its rate (a stream's count starts again at 0 for a new label). */
function counters(): (label: string, n: number, total?: number) => string {
  const began = new Map<string, number>();
  return (label, n, total) => {
    const now = Date.now();
    if (!began.has(label)) began.set(label, now);
    return counterLine(label, n, now - began.get(label)!, total);
  };
}

/**
 * On a terminal, listr2 draws the run as one live task: its title is the current step, its
 * output the byte counter; finished steps and warnings stay on screen as plain lines.
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
  const running = listr.run().catch(() => {});
  drawing.add(running);
  const log: string[] = [];
  const counter = counters();
  let lastDraw = 0;
  const began = Date.now();
  const moved = new Map<string, Moved>();
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
      if (task) task.output = `warning: ${msg}`;
    },
    bytes(label, n, total) {
      const line = counter(label, n, total); // also notes when the stream began
      const now = Date.now();
      const m = moved.get(label) ?? { label, bytes: 0, firstMs: now, lastMs: now };
      moved.set(label, { ...m, bytes: n, lastMs: now });
      // At most five frames a second, but always the one that reaches the total (100%).
      if ((now - lastDraw < 200 && !(total && n >= total)) || !task) return;
      lastDraw = now;
      task.output = line;
    },
    done(failed) {
      // A run that failed ends on ✖ and the step it was at (main prints the error after it).
      if (failed) rejectDone(new Error(`${title}: failed`));
      else {
        if (task) task.title = 'done';
        resolveDone();
      }
      void running.then(() => {
        // What scrolled by, for the record: steps, information, warnings.
        const warnings = log.filter((l) => l.startsWith('ferry: warning:'));
        if (warnings.length) out.write(warnings.join('\n') + '\n');
        // A run that worked ends with what it moved (a failed one with its error, from main).
        if (!failed) out.write(summaryTable([...moved.values()], Date.now() - began));
      });
    },
  };
}

export function createProgress(opts: RenderOptions): RunProgress {
  const out = opts.stream ?? process.stderr;
  const tty = !!out.isTTY;
  if (tty && !opts.quiet && !process.env.FERRY_PLAIN_OUTPUT) {
    const p = once(listrProgress(out));
    open.add(p);
    return { ...p, done: (failed) => (open.delete(p), p.done(failed)) };
  }
  let lastDraw = 0;
  let counterShown = false;
  const counter = counters();
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
    step(title) {
      if (!opts.quiet) line(`ferry: ${title}`);
    },
    info(msg) {
      if (!opts.quiet) line(`ferry: ${msg}`);
    },
    warn(msg) {
      line(`ferry: warning: ${msg}`);
    },
    bytes(label, n, total) {
      if (opts.quiet || !tty) return;
      const line = counter(label, n, total);
      const now = Date.now();
      if (now - lastDraw < 200 && !(total && n >= total)) return;
      lastDraw = now;
      out.write(`\r\x1b[K  ${line}`);
      counterShown = true;
    },
    done() {
      clear();
    },
  };
}

/** done() may be called more than once (finally blocks): the first call says how the run ended. */
function once(p: RunProgress): RunProgress {
  let called = false;
  return { ...p, done: (failed) => (called ? undefined : ((called = true), p.done(failed))) };
}
