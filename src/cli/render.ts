/**
 * Progress on stderr (stdout carries results, or the bundle itself with `-o -`). On a terminal a
 * single byte counter line is redrawn; elsewhere (cron, CI) only plain step lines are printed.
 */
import type { Progress } from '../pipeline/context.js';

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

export function createProgress(opts: RenderOptions): Progress & { done(): void } {
  const out = opts.stream ?? process.stderr;
  const tty = !!out.isTTY;
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
