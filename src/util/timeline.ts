/**
 * What a freeze was spent on: each step's start and end, in milliseconds since the freeze began
 * (the first source container asked to pause or stop). Steps may overlap; that is the point of
 * reporting them as spans. `migrate --json` has them as `frozenSteps`, and each ends with a line
 * on the debug channel.
 */
import type { Debug } from './debug.js';

export interface Span {
  step: string;
  fromMs: number;
  toMs: number;
}

export class Timeline {
  private origin?: number;
  readonly spans: Span[] = [];

  constructor(
    private readonly debug?: Debug,
    private readonly now: () => number = Date.now,
  ) {}

  /** The freeze begins at `at` (the first call counts; later ones are ignored). */
  start(at = this.now()): void {
    this.origin ??= at;
  }

  /** A step begins now; call what is returned when it ends (only the first call counts). Nothing is kept before start(). */
  span(step: string): () => void {
    if (this.origin === undefined) return () => {};
    const from = this.now() - this.origin;
    let done = false;
    return () => {
      if (done || this.origin === undefined) return;
      done = true;
      const s = { step, fromMs: from, toMs: this.now() - this.origin };
      this.spans.push(s);
      this.debug?.(`frozen +${s.fromMs}..+${s.toMs} ms (${s.toMs - s.fromMs} ms): ${step}`);
    };
  }

  /** `work` as one step: its span ends when it settles, either way. */
  async time<T>(step: string, work: () => Promise<T>): Promise<T> {
    const end = this.span(step);
    try {
      return await work();
    } finally {
      end();
    }
  }
}
