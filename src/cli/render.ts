/**
 * Progress on stderr (stdout carries results, or the bundle itself with `-o -`). On a terminal a
 * single byte counter line is redrawn; elsewhere (cron, CI) only plain step lines are printed.
 */
import { Listr } from 'listr2';
import type { Progress } from '../context.js';

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

/**
 * On a terminal, listr2 draws the run as one live task: its title is the current step, its
 * output the byte counter; finished steps and warnings stay on screen as plain lines.
 */
function listrProgress(out: NodeJS.WriteStream): Progress & { done(): void } {
  let resolveDone!: () => void;
  const finished = new Promise<void>((r) => (resolveDone = r));
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
  const log: string[] = [];
  let lastDraw = 0;
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
    bytes(label, n) {
      const now = Date.now();
      if (now - lastDraw < 200 || !task) return;
      lastDraw = now;
      task.output = `${label}: ${humanBytes(n)}`;
    },
    done() {
      if (task) task.title = 'done';
      resolveDone();
      void running.then(() => {
        // What scrolled by, for the record: steps, information, warnings.
        const warnings = log.filter((l) => l.startsWith('ferry: warning:'));
        if (warnings.length) out.write(warnings.join('\n') + '\n');
      });
    },
  };
}

export function createProgress(opts: RenderOptions): Progress & { done(): void } {
  const out = opts.stream ?? process.stderr;
  const tty = !!out.isTTY;
  if (tty && !opts.quiet && !process.env.FERRY_PLAIN_OUTPUT) return once(listrProgress(out));
  let lastDraw = 0;
  let counterShown = false;
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
    bytes(label, n) {
      if (opts.quiet || !tty) return;
      const now = Date.now();
      if (now - lastDraw < 200) return;
      lastDraw = now;
      out.write(`\r\x1b[K  ${label}: ${humanBytes(n)}`);
      counterShown = true;
    },
    done() {
      clear();
    },
  };
}

/** done() may be called more than once (finally blocks); act on the first. */
function once(p: Progress & { done(): void }): Progress & { done(): void } {
  let called = false;
  return { ...p, done: () => (called ? undefined : ((called = true), p.done())) };
}
