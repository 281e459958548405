/**
 * The one catalogue of failures. Deep code throws these; only cli/main.ts prints them and
 * turns them into an exit status. Every error says what failed and, in `hint`, what to do.
 */

/** Exit codes, documented in README.md ("Exit codes"). Stable: scripts depend on them. */
export const EXIT = {
  OK: 0,
  /** Unexpected internal error (a bug): printed with a stack trace. */
  INTERNAL: 1,
  /** Bad command line: unknown option, missing argument, invalid value. */
  USAGE: 2,
  /** Some containers were backed up, some failed. */
  PARTIAL: 3,
  /** The Docker engine could not be reached or refused the request. */
  ENGINE: 4,
  /** A container, image, volume, network or bundle named on the command line does not exist. */
  NOT_FOUND: 5,
  /** Something of that name already exists and --on-conflict did not allow touching it. */
  CONFLICT: 6,
  /** The bundle is damaged, incomplete, of an unknown format version, or not a ferry bundle. */
  BUNDLE: 7,
  /** Reading or writing a file failed (disk full, permission denied, ...). */
  IO: 8,
  /** ferry drill: the restored copy did not come up (unhealthy, exited, probe failed or timed out). */
  DRILL_FAILED: 9,
  /** A pre-exec hook failed inside a container: that container was not backed up. */
  HOOK: 10,
  /**
   * --trust: the bundle is unsigned, its signature is bad, or its signer is not allowed (or is
   * revoked) in the allowed_signers file. Nothing was changed.
   */
  UNTRUSTED: 11,
  /**
   * The restore policy: the bundle asks for settings that give a container the host (privileged,
   * host binds, host namespaces, devices, capabilities) and --allow did not allow them.
   */
  POLICY: 12,
  /**
   * An --on-conflict replace past its point of no return (the old containers removed) could not
   * be finished: the new data is whole in its staging volumes, which are kept, and the next ferry
   * run on that engine tries again (ops/steps/replace.ts). Not 13: node itself exits 13 when a
   * top-level await never settles, which a script must not take for this.
   */
  REPLACE_UNFINISHED: 14,
  /**
   * Interrupted by a signal: 128 + its number, as a shell reports it. Everything was put back as
   * it was. SIGPIPE also stands for a closed stdout or stderr (the reader went away).
   */
  HANGUP: 129,
  INTERRUPTED: 130,
  BROKEN_PIPE: 141,
  TERMINATED: 143,
} as const;

/** The signals that end a run in an orderly way, and the exit status each leads to. */
export const STOP_SIGNALS = {
  SIGHUP: EXIT.HANGUP,
  SIGINT: EXIT.INTERRUPTED,
  SIGPIPE: EXIT.BROKEN_PIPE,
  SIGTERM: EXIT.TERMINATED,
} as const;
export type StopSignal = keyof typeof STOP_SIGNALS;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class FerryError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  readonly hint?: string;

  constructor(code: string, exitCode: ExitCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.hint = opts.hint;
  }
}

export class UsageError extends FerryError {
  constructor(message: string, hint?: string) {
    super('USAGE', EXIT.USAGE, message, { hint });
  }
}

export class EngineError extends FerryError {
  constructor(message: string, opts: { hint?: string; cause?: unknown; code?: string } = {}) {
    super(opts.code ?? 'ENGINE', EXIT.ENGINE, message, opts);
  }
}

export class NotFoundError extends FerryError {
  constructor(message: string, hint?: string, cause?: unknown) {
    super('NOT_FOUND', EXIT.NOT_FOUND, message, { hint, cause });
  }
}

export class ConflictError extends FerryError {
  constructor(message: string, hint?: string) {
    super('CONFLICT', EXIT.CONFLICT, message, { hint });
  }
}

export class BundleError extends FerryError {
  /** The bundle member at fault, when one is. */
  readonly member?: string;
  constructor(message: string, opts: { hint?: string; cause?: unknown; member?: string } = {}) {
    super('BUNDLE', EXIT.BUNDLE, message, opts);
    this.member = opts.member;
  }
}

export class IoError extends FerryError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super('IO', EXIT.IO, message, opts);
  }
}

export class PartialError extends FerryError {
  constructor(
    message: string,
    readonly failures: { name: string; error: FerryError }[],
  ) {
    super('PARTIAL', EXIT.PARTIAL, message, { hint: 'see the errors above for each container that failed' });
  }
}

/** ferry drill: the bundle restored, but the copy did not pass its health check or probe. */
export class DrillFailedError extends FerryError {
  constructor(message: string, hint?: string) {
    super('DRILL_FAILED', EXIT.DRILL_FAILED, message, { hint });
  }
}

export class HookError extends FerryError {
  constructor(message: string, hint?: string) {
    super('HOOK', EXIT.HOOK, message, { hint });
  }
}

/** A bundle that --trust does not accept (unsigned, bad signature, unknown or revoked signer). */
export class TrustError extends FerryError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super('UNTRUSTED', EXIT.UNTRUSTED, message, opts);
  }
}

/** A restore refused by the restore policy (plan/policy.ts): settings that --allow did not allow. */
export class PolicyError extends FerryError {
  constructor(message: string, hint?: string) {
    super('POLICY', EXIT.POLICY, message, { hint });
  }
}

/**
 * An --on-conflict replace that could not be finished once the old containers were gone (by its
 * own run, or by the next run rolling it forward after a SIGKILL). Nothing of the new data is lost:
 * the staging volumes and the journal that says how to finish are kept.
 */
export class ReplaceUnfinishedError extends FerryError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super('REPLACE_UNFINISHED', EXIT.REPLACE_UNFINISHED, message, opts);
  }
}

export class InterruptedError extends FerryError {
  readonly signal: StopSignal;
  /** What the signal stands for where it was not a signal (a closed stderr). */
  readonly why?: string;

  constructor(signal: StopSignal, why?: string) {
    super('INTERRUPTED', STOP_SIGNALS[signal], `interrupted by ${signal}${why ? ` (${why})` : ''}`);
    this.signal = signal;
    this.why = why;
  }
}

/** Turn any thrown value into a FerryError. Unknown errors keep their cause (and stack). */
export function toFerryError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    switch (e.code) {
      case 'ENOSPC':
        return new IoError(`no space left on device${e.path ? ` writing ${e.path}` : ''}`, {
          hint: 'free some space or choose another target; nothing partial was left behind',
          cause: err,
        });
      case 'EACCES':
      case 'EPERM':
        return new IoError(`permission denied${e.path ? `: ${e.path}` : ''}`, { cause: err });
      case 'ENOENT':
        return new NotFoundError(`no such file or directory${e.path ? `: ${e.path}` : ''}`, undefined, err);
      case 'EROFS':
        return new IoError(`read-only file system${e.path ? `: ${e.path}` : ''}`, { cause: err });
      case 'EPIPE':
        return new IoError('the output stream was closed early (broken pipe)', { cause: err });
    }
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new FerryError('INTERNAL', EXIT.INTERNAL, msg, { cause: err });
}
