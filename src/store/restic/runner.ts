/**
 * The `restic` program, driven as a child process: the one place that spawns it. ferry never
 * writes a repository's format itself; it builds restic's arguments (layout.ts, pure) and runs
 * them here. Passwords and backend settings reach restic the way restic takes them: its own
 * environment variables (RESTIC_PASSWORD, RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND,
 * AWS_*, ...) are passed through untouched, never put on a command line by ferry. restic's
 * `-o key=value` options (--restic-option, FERRY_RESTIC_OPTION) go before every call's arguments,
 * each an argument of its own (restic runs no shell; `sftp.command` it splits itself).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { FerryError, EXIT, IoError } from '../../errors.js';
import { keepText } from '../../util/keep-text.js';
import { optionArgs } from './layout.js';

/** The oldest restic ferry drives: 0.14 has `--stdin`, compression, `snapshots --json`, `dump`, `forget --keep-*`. */
export const MIN_RESTIC: readonly [number, number] = [0, 14];

/** restic is not installed, or too old: one error naming the package and the version. */
export class ResticUnavailableError extends FerryError {
  constructor(found?: string) {
    super(
      'RESTIC_UNAVAILABLE',
      EXIT.USAGE,
      found
        ? `restic ${found} is too old: ferry needs restic ${MIN_RESTIC.join('.')} or newer`
        : `restic is not installed (ferry needs restic ${MIN_RESTIC.join('.')} or newer on PATH)`,
      {
        hint: 'install the restic package (apt-get install restic; Debian 12 ships 0.14), or put a newer restic on PATH',
      },
    );
  }
}

/** A restic command failed: its exit status and the tail of what it said. */
export class ResticError extends FerryError {
  constructor(what: string, code: number | null, stderr: string, hint?: string) {
    const said = stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 500);
    super('RESTIC', EXIT.IO, `restic ${what} failed (exit ${code ?? 'by a signal'})${said ? `: ${said}` : ''}`, {
      hint: hint ?? resticHint(stderr),
    });
  }
}

/** What to do about a restic failure, from what restic said (for the operator only; ferry's logic never branches on it). */
function resticHint(stderr: string): string {
  if (/password/i.test(stderr))
    return 'give restic its password: RESTIC_PASSWORD, RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND';
  if (/unable to open config|Is there a repository/i.test(stderr))
    return 'create the repository first: restic -r <repo> init (with the same password settings)';
  return 'run the same restic command by hand (with --debug ferry prints it) to see more';
}

/** One restic run: the arguments after `restic`, and how. */
export interface ResticCall {
  args: string[];
  /** Run in this directory (backup: the staging directory, so the snapshot's paths are relative). */
  cwd?: string;
  /** Programs to run restic under (`unshare -m sh -c ... --`): restic's argv is appended. */
  wrap?: string[];
}

export interface ResticRun {
  /** restic's standard output. */
  stdout: Readable;
  /** Resolves once restic exited with status 0; rejects with a ResticError otherwise. */
  done: Promise<void>;
  kill(): void;
}

/** Runs restic; a fake in unit tests records the calls. */
export interface ResticRunner {
  run(call: ResticCall): ResticRun;
}

/**
 * The restic processes still running. A run that ends early (a refused bundle, a conflict, a
 * failure) may leave a `restic dump` behind; killed by SIGTERM or by a closed pipe (SIGPIPE),
 * restic leaves its lock in the repository, and the next exclusive command (`check`, `prune`)
 * fails on it. On SIGINT restic removes its lock first: stopResticRuns() sends that.
 */
const live = new Set<ChildProcess>();

/** Interrupt every restic still running (SIGINT) and wait, up to `waitMs`, for them to exit. */
export async function stopResticRuns(waitMs = 10_000): Promise<void> {
  const left = [...live].filter((c) => c.exitCode === null && c.signalCode === null);
  if (!left.length) return;
  for (const c of left) {
    c.stdout?.resume(); // nobody reads it any more: let restic's writes go through while it cleans up
    c.kill('SIGINT');
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(left.map((c) => (c.exitCode === null && c.signalCode === null ? once(c, 'exit') : Promise.resolve()))),
    new Promise((res) => (timer = setTimeout(res, waitMs))),
  ]);
  clearTimeout(timer);
}

/** The real program, found on PATH. */
export class ResticCli implements ResticRunner {
  constructor(
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly debug?: (line: string) => void,
    /** restic's `-o key=value` options, for every call. */
    private readonly options: readonly string[] = [],
  ) {}

  run(call: ResticCall): ResticRun {
    const argv = [...(call.wrap ?? []), 'restic', ...optionArgs(this.options), ...call.args];
    this.debug?.(`restic: ${argv.join(' ')}`);
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: call.cwd,
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(child);
    child.on('exit', () => live.delete(child));
    const stderr = keepText(child.stderr);
    const done = new Promise<void>((resolve, reject) => {
      child.on('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'ENOENT' ? new ResticUnavailableError() : new IoError(`could not run restic: ${err.message}`),
        ),
      );
      child.on('close', (code) =>
        code === 0 ? resolve() : reject(new ResticError(commandOf(call.args), code, stderr())),
      );
    });
    done.catch(() => {});
    // SIGINT: restic removes its repository lock before it exits (not on SIGTERM).
    return { stdout: child.stdout, done, kill: () => child.kill('SIGINT') };
  }
}

/** The restic command of a call's arguments (`-r <repo> backup ...` -> `backup`). Pure. */
export function commandOf(args: string[]): string {
  return (args[0] === '-r' ? args[2] : args[0]) ?? '';
}

/** Run restic to the end and give its standard output as text. */
export async function resticText(runner: ResticRunner, call: ResticCall): Promise<string> {
  const r = runner.run(call);
  const chunks: Buffer[] = [];
  r.stdout.on('data', (b: Buffer) => chunks.push(b));
  await Promise.all([r.done, new Promise((res) => r.stdout.on('end', res))]);
  return Buffer.concat(chunks).toString('utf8');
}

/** `restic 0.14.0 compiled with go1.19.8 on linux/amd64` -> [0, 14, 0]; undefined when it is not restic's version line. Pure. */
export function parseResticVersion(out: string): [number, number, number] | undefined {
  const m = /^restic (\d+)\.(\d+)\.(\d+)/m.exec(out);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** Check that restic is there and new enough (ResticUnavailableError otherwise); its version. */
export async function checkRestic(runner: ResticRunner): Promise<string> {
  const out = await resticText(runner, { args: ['version'] });
  const v = parseResticVersion(out);
  if (!v) throw new ResticUnavailableError(out.trim().slice(0, 40) || 'of an unknown version');
  const [maj, min] = MIN_RESTIC;
  if (v[0] < maj || (v[0] === maj && v[1] < min)) throw new ResticUnavailableError(v.join('.'));
  return v.join('.');
}
