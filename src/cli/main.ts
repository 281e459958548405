/**
 * Entry point: parse, run, and turn every outcome into one exit status. The only place that
 * prints errors. User mistakes get a one-line message and a hint, never a stack trace.
 */
import { readFile } from 'node:fs/promises';
import { CommanderError, type Command } from 'commander';
import {
  EXIT,
  FerryError,
  InterruptedError,
  STOP_SIGNALS,
  toFerryError,
  UsageError,
  type StopSignal,
} from '../errors.js';
import { parseIdentities } from '../bundle/age.js';
import { COMMAND_NAMES, createProgram, exitCodeOf, type Deps } from './program.js';
import { commandOf, envelope, errorJson } from './json.js';
import { interrupted, rendered } from './render.js';
import { VERSION } from '../version.js';
import { SshPool } from '../ssh/client.js';
import { askSecret } from './prompt.js';
import { hostAccessFor, hostEnv } from '../hostaccess/access.js';
import { createDebug, debugWanted, engineCalls } from '../util/debug.js';
import { stopResticRuns } from '../store/restic/runner.js';
import { faultHook, faults } from '../util/fault.js';

export interface Io {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

export async function main(
  argv: string[],
  io: Io = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const controller = new AbortController();
  // Every way a run can be told to end leads to the same orderly stop: the run's signal aborts,
  // and each op puts back what it paused or stopped and removes what it made.
  const stop = (sig: StopSignal, why?: string) => {
    if (controller.signal.aborted) return;
    if (!why) say(`ferry: ${sig} received, stopping and putting things back (Ctrl-C again exits at once)\n`);
    interrupted(); // a failed end names the step it was stopped at, not the ones that put things back
    controller.abort(new InterruptedError(sig, why));
  };
  // The kernel also sends SIGPIPE when ferry itself writes to a pipe or socket whose far end is
  // gone (an SSH connection or an engine that dropped, a helper process that died). That write
  // fails too, with the real cause, which must not be reported as an interruption: the stop waits
  // a moment for it to surface, and a run that fails meanwhile reports its own error (below).
  let pipeTimer: NodeJS.Timeout | undefined;
  const onSignal = (sig: StopSignal) => {
    // A second Ctrl-C or SIGTERM is the operator insisting; a hangup or a broken pipe is not.
    if (controller.signal.aborted && (sig === 'SIGINT' || sig === 'SIGTERM')) {
      say(`ferry: ${sig} again, exiting now without cleaning up\n`);
      process.exit(STOP_SIGNALS[sig]);
    }
    if (sig === 'SIGPIPE') pipeTimer ??= setTimeout(() => stop(sig), SIGPIPE_GRACE_MS);
    else stop(sig);
  };
  const handlers = (Object.keys(STOP_SIGNALS) as StopSignal[]).map((sig) => {
    const h = () => onSignal(sig);
    process.on(sig, h);
    // Node ignores SIGPIPE until a listener comes, and removing the last one restores the
    // default, which kills the process at the next write to a closed pipe: this one stays.
    return () => sig !== 'SIGPIPE' && process.off(sig, h);
  });
  // The terminal or the pipe that reads stderr may go away (an SSH session that closed, `| head`):
  // writes then fail with EPIPE or EIO. That ends the run as a SIGPIPE would, in order, and
  // nothing more is written there.
  let stderrGone = false;
  const say = (text: string) => {
    if (!stderrGone) io.stderr.write(text);
  };
  const onStderrError = (err: NodeJS.ErrnoException) => {
    stderrGone = true;
    stop('SIGPIPE', `standard error was closed: ${err.code ?? err.message}`);
  };
  io.stderr.on('error', onStderrError);
  // Streams torn down after a failure may reject promises nobody waits for any more; the failure
  // itself is reported through the awaited path. Anything else is a bug and stays fatal.
  const onUnhandled = (reason: unknown) => {
    const code = (reason as NodeJS.ErrnoException | undefined)?.code ?? (reason as Error | undefined)?.name;
    if (
      ['ERR_STREAM_PREMATURE_CLOSE', 'ABORT_ERR', 'AbortError', 'ERR_STREAM_DESTROYED', 'ECONNRESET', 'EPIPE'].includes(
        String(code),
      )
    )
      return;
    throw reason;
  };
  process.on('unhandledRejection', onUnhandled);
  // A reader of stdout that goes away (`ferry ls | head`, the far end of `-o - | ssh …`) ends the
  // run as SIGPIPE would: in order, with everything put back.
  const onOutputError = (err: NodeJS.ErrnoException) => {
    stop('SIGPIPE', `standard output was closed: ${err.code ?? err.message}`);
  };
  io.stdout.on('error', onOutputError);
  let json = argv.includes('--json');
  let emitted = false;
  const emit: Deps['emit'] = (command, body, stream = io.stdout) => {
    emitted = true;
    stream.write(envelope(command, body));
  };
  // The debug channel and the host switches: read here, at the edge, and passed down.
  const debug = argv.includes('--debug') || debugWanted(process.env.FERRY_DEBUG) ? createDebug(io.stderr) : undefined;
  if (debug) engineCalls.hook = (endpoint, what) => debug(`engine ${endpoint}: ${what}`);
  const hostAccess = hostAccessFor(hostEnv(process.env), debug);
  // The fault-injection tests' hook (util/fault.ts): stop at one named point of the run.
  if (process.env.FERRY_FAULT) {
    const waitMs = Number(process.env.FERRY_FAULT_WAIT) || undefined;
    faults.hook = faultHook(process.env.FERRY_FAULT, controller.signal, say, waitMs ? { waitMs } : {});
  }
  let pool: SshPool | undefined;
  const ssh = () =>
    (pool ??= new SshPool({
      acceptNew: argv.includes('--ssh-accept-new'),
      askPassphrase: (file) => askSecret(`passphrase for ${file}: `),
      warn: (m) => io.stderr.write(`ferry: warning: ${m}\n`),
    }));
  let program: Command | undefined;
  const passphrase = async (): Promise<string | undefined> => {
    const file = program?.opts<{ passphraseFile?: string }>().passphraseFile;
    if (file) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        throw new UsageError(
          `cannot read the passphrase file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
      const p = text.replace(/\r?\n$/, '');
      if (!p) throw new UsageError(`the passphrase file ${file} is empty`);
      return p;
    }
    return process.env.FERRY_PASSPHRASE || undefined;
  };
  // age identities: --identity <file> (also FERRY_IDENTITY, config `identity`), else
  // FERRY_AGE_IDENTITY (an identity file, or an AGE-SECRET-KEY-1... itself).
  const identities = async (): Promise<string[] | undefined> => {
    const file = program?.opts<{ identity?: string }>().identity;
    const env = process.env.FERRY_AGE_IDENTITY?.trim();
    if (!file && env?.startsWith('AGE-SECRET-KEY-1')) return parseIdentities(env, 'FERRY_AGE_IDENTITY');
    const from = file ?? env;
    if (!from) return undefined;
    let text: string;
    try {
      text = await readFile(from, 'utf8');
    } catch (err) {
      throw new UsageError(
        `cannot read the identity file ${from}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        file ? 'check --identity' : 'check FERRY_AGE_IDENTITY',
      );
    }
    return parseIdentities(text, from);
  };
  const command = commandOf(argv, [...COMMAND_NAMES]);
  if (json && (argv.includes('--version') || argv.includes('-V'))) {
    emit('version', { ok: true, version: VERSION, node: process.versions.node });
    return EXIT.OK;
  }
  try {
    program = createProgram({
      io,
      signal: controller.signal,
      setJson: (j) => (json = j),
      emit,
      ssh,
      stores: {
        ssh,
        s3: () => {
          const o = program?.opts<{ s3Endpoint?: string; s3PathStyle?: boolean }>() ?? {};
          return { ...(o.s3Endpoint ? { endpoint: o.s3Endpoint } : {}), ...(o.s3PathStyle ? { pathStyle: true } : {}) };
        },
      },
      passphrase,
      identities,
      hostAccess,
      resticOptions: () => program?.opts<{ resticOption?: string[] }>().resticOption ?? [],
      ...(debug ? { debug } : {}),
    });
    await program.parseAsync(argv);
    if (controller.signal.aborted) throw controller.signal.reason;
    const code = exitCodeOf(program) ?? EXIT.OK;
    await rendered(code !== EXIT.OK); // a part still open ends (✔ only on success) before ferry exits
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (or help/version) on stderr
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
        return EXIT.OK;
      if (json && !emitted) {
        // "error: unknown option '--ouput'\n(Did you mean --output?)": the message, then the hints.
        const [first = '', ...more] = err.message.replace(/^error: /, '').split('\n');
        const hint = [
          ...more.map((l) => l.replace(/^\((.*)\)$/, '$1')),
          `run ferry ${command === 'ferry' ? '' : `${command} `}--help for usage`,
        ];
        emit(command, { ok: false, error: errorJson(new UsageError(first, hint.join('; '))) });
      }
      return EXIT.USAGE;
    }
    // Once the run was told to stop, what failed afterwards (a stream cut short, a write to a
    // closed pipe, a half-read member) is the interruption showing, not a cause of its own.
    const fe =
      controller.signal.aborted && !ownPipeFailure(controller.signal.reason, err)
        ? (controller.signal.reason as FerryError)
        : toFerryError(err);
    await rendered(); // the progress display ends (on ✖) before the error is printed
    if (!stderrGone) printError(fe, io, json && !emitted ? command : undefined);
    return fe.exitCode;
  } finally {
    clearTimeout(pipeTimer);
    await pool?.closeAll();
    await stopResticRuns(); // a restic left running would leave its lock in the repository
    if (debug) engineCalls.hook = undefined;
    faults.hook = undefined;
    process.off('unhandledRejection', onUnhandled);
    for (const off of handlers) off();
    io.stderr.off('error', onStderrError);
    io.stdout.off('error', onOutputError);
    // Writes still under way to a pipe that closed fail after the run; there is nobody to tell.
    const ignore = () => {};
    io.stderr.on('error', ignore);
    io.stdout.on('error', ignore);
  }
}

/** The error on stderr; with `jsonCommand`, also as that command's --json object on stdout. */
export function printError(fe: FerryError, io: Io, jsonCommand?: string): void {
  if (jsonCommand) io.stdout.write(envelope(jsonCommand, { ok: false, error: errorJson(fe) }));
  io.stderr.write(`ferry: error: ${fe.message}\n`);
  if (fe.hint) io.stderr.write(`ferry: hint: ${fe.hint}\n`);
  if (fe.exitCode === EXIT.INTERNAL) {
    const cause = (fe.cause as Error | undefined) ?? fe;
    io.stderr.write(`${cause.stack ?? String(cause)}\n`);
    io.stderr.write('ferry: this is a bug in ferry; please report it with the output above\n');
  }
}

/** How long a SIGPIPE waits for the failed write it may stand for to surface as the run's error. */
const SIGPIPE_GRACE_MS = 1000;

/**
 * A bare SIGPIPE (not a closed stdout or stderr, which carry their why) stopped the run, but the
 * run failed with an error of its own that is not the stop showing through: that error is the
 * cause (the kernel's SIGPIPE came from ferry's own write to what had gone away).
 */
export function ownPipeFailure(reason: unknown, err: unknown): boolean {
  if (!(reason instanceof InterruptedError) || reason.signal !== 'SIGPIPE' || reason.why) return false;
  if (err instanceof InterruptedError) return false;
  const e = err as NodeJS.ErrnoException | undefined;
  const name = e?.name;
  const code = e?.code;
  return !(name === 'AbortError' || code === 'ABORT_ERR' || code === 'ERR_STREAM_PREMATURE_CLOSE');
}
