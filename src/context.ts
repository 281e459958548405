/** What every pipeline stage gets: a way to report, and a signal that says stop. */
import type { Engine } from './engine/engine.js';
import type { HostAccess } from './hostaccess/access.js';
import type { Debug } from './util/debug.js';
import type { Trust } from './bundle/trust.js';

export interface Progress {
  /** A step of the pipeline starts (one line in plain output). */
  step(title: string): void;
  /** Something worth telling the operator. */
  info(message: string): void;
  warn(message: string): void;
  /**
   * Bytes moved so far for a named stream (rate-limited by the renderer); `total` where the size
   * is known beforehand (the renderer then shows a percentage and an ETA).
   */
  bytes(label: string, n: number, total?: number): void;
  /** The data path (data/paths.ts) that carries the stream `label`: shown beside its figures. */
  via?(label: string, path: string): void;
  /**
   * A source container is frozen (`how`) from now, or (with `ms`) runs again after `ms`: a live
   * line names it while it is, and the summaries say for how long.
   */
  frozen?(name: string, how: 'paused' | 'stopped', ms?: number): void;
}

export const silentProgress: Progress = {
  step() {},
  info() {},
  warn() {},
  bytes() {},
};

export interface RunContext {
  progress: Progress;
  signal: AbortSignal;
  /** Passphrase for encrypted bundles (FERRY_PASSPHRASE or --passphrase-file; never an argument). */
  passphrase?: string;
  /** age identities (AGE-SECRET-KEY-1...) for bundles encrypted to recipients (--identity, FERRY_AGE_IDENTITY). */
  identities?: string[];
  /** --trust / FERRY_TRUST: bundles read must be signed by a key this allows (bundle/trust.ts). */
  trust?: Trust;
  /**
   * What each engine's host offers the data fast paths (hostaccess/access.ts: hostAccessFor),
   * decided once per engine with the switches the CLI read. Absent: the engine's own paths only.
   */
  hostAccess?: (engine: Engine) => Promise<HostAccess>;
  /** The debug channel (--debug, FERRY_DEBUG): each data path chosen and each fallback. Absent: silent. */
  debug?: Debug;
}

export function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
}

/**
 * `work`, except that a failure once the run is aborted reports as the interruption, not as what
 * the cut-short call saw (a pull or push that the abort broke off).
 */
export async function abortAware<T>(signal: AbortSignal, work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    checkAborted(signal);
    throw err;
  }
}
