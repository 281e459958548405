/**
 * Entry point: parse, run, and turn every outcome into one exit status. The only place that
 * prints errors. User mistakes get a one-line message and a hint, never a stack trace.
 */
import { readFile } from 'node:fs/promises';
import { CommanderError, type Command } from 'commander';
import { EXIT, FerryError, InterruptedError, toFerryError, UsageError } from '../errors.js';
import { createProgram } from './program.js';
import { SshPool } from '../ssh/client.js';
import { askSecret } from './prompt.js';
import { hostAccessFor, hostEnv } from '../hostaccess/access.js';
import { createDebug, debugWanted, engineCalls } from '../util/debug.js';

export interface Io {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

export async function main(
  argv: string[],
  io: Io = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      io.stderr.write(`ferry: ${sig} again, exiting now without cleaning up\n`);
      process.exit(EXIT.INTERRUPTED);
    }
    io.stderr.write(`ferry: ${sig} received, stopping and putting things back (send it again to exit at once)\n`);
    controller.abort(new InterruptedError(sig));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
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
  // A reader that goes away (`ferry --help | head`) is not a crash: text output just stops. A
  // bundle written to stdout learns of it through its own writes (exit 8, containers put back).
  const onOutputError = (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  };
  io.stdout.on('error', onOutputError);
  let json = argv.includes('--json');
  // The debug channel and the host switches: read here, at the edge, and passed down.
  const debug = argv.includes('--debug') || debugWanted(process.env.FERRY_DEBUG) ? createDebug(io.stderr) : undefined;
  if (debug) engineCalls.hook = (endpoint, what) => debug(`engine ${endpoint}: ${what}`);
  const hostAccess = hostAccessFor(hostEnv(process.env), debug);
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
  try {
    program = createProgram({
      io,
      signal: controller.signal,
      setJson: (j) => (json = j),
      ssh,
      passphrase,
      hostAccess,
      ...(debug ? { debug } : {}),
    });
    await program.parseAsync(argv);
    return (program as unknown as { ferryExitCode?: number }).ferryExitCode ?? EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (or help/version)
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
        return EXIT.OK;
      return EXIT.USAGE;
    }
    const fe =
      controller.signal.aborted && !(err instanceof FerryError)
        ? (controller.signal.reason as FerryError)
        : toFerryError(err);
    printError(fe, io, json);
    return fe.exitCode;
  } finally {
    await pool?.closeAll();
    if (debug) engineCalls.hook = undefined;
    process.off('unhandledRejection', onUnhandled);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function printError(fe: FerryError, io: Io, json: boolean): void {
  if (json) {
    io.stdout.write(
      JSON.stringify({
        ok: false,
        error: { code: fe.code, exitCode: fe.exitCode, message: fe.message, hint: fe.hint },
      }) + '\n',
    );
  }
  io.stderr.write(`ferry: error: ${fe.message}\n`);
  if (fe.hint) io.stderr.write(`ferry: hint: ${fe.hint}\n`);
  if (fe.exitCode === EXIT.INTERNAL) {
    const cause = (fe.cause as Error | undefined) ?? fe;
    io.stderr.write(`${cause.stack ?? String(cause)}\n`);
    io.stderr.write('ferry: this is a bug in ferry; please report it with the output above\n');
  }
}
