/** What every pipeline stage gets: a way to report, and a signal that says stop. */

export interface Progress {
  /** A step of the pipeline starts (one line in plain output). */
  step(title: string): void;
  /** Something worth telling the operator. */
  info(message: string): void;
  warn(message: string): void;
  /** Bytes moved so far for a named stream (rate-limited by the renderer). */
  bytes(label: string, n: number): void;
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
}

export function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
}
