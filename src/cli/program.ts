/** The commander program: global options and one subcommand per file in cli/commands/. */
import { Command } from 'commander';
import { VERSION } from '../version.js';
import { backupCommand } from './commands/backup.js';
import { restoreCommand } from './commands/restore.js';
import { lsCommand } from './commands/ls.js';
import { inspectCommand } from './commands/inspect.js';
import { verifyCommand } from './commands/verify.js';
import { pruneCommand } from './commands/prune.js';
import { migrateCommand } from './commands/migrate.js';
import { drillCommand } from './commands/drill.js';
import { configCommand } from './commands/config.js';
import { cleanCommand } from './commands/clean.js';
import { scheduleCommand } from './commands/schedule.js';
import { catCommand } from './commands/cat.js';
import { completionCommand } from './commands/completion.js';
import { applyConfig } from './config.js';
import { resticOption } from './options.js';
import type { Io } from './main.js';
import type { SshPool } from '../ssh/client.js';
import type { StoreDeps } from '../store/registry.js';
import type { Engine } from '../engine/engine.js';
import type { HostAccess } from '../hostaccess/access.js';
import type { Debug } from '../util/debug.js';

export interface Deps {
  io: Io;
  signal: AbortSignal;
  setJson(json: boolean): void;
  /**
   * Print the command's one --json object (docs/json.md): the envelope is added here. Once it is
   * printed, an error that ends the run is not printed again as JSON.
   */
  emit(command: string, body: { ok: boolean } & Record<string, unknown>, stream?: NodeJS.WritableStream): void;
  /** The run's SSH connections (one per host), created on first use. */
  ssh(): SshPool;
  /** What stores need from the run: its SSH connections, its S3 settings (--s3-endpoint, --s3-path-style). */
  stores: StoreDeps;
  /** The passphrase for encrypted bundles: --passphrase-file, else FERRY_PASSPHRASE, else none. */
  passphrase(): Promise<string | undefined>;
  /** age identities for bundles encrypted to recipients: --identity, else FERRY_AGE_IDENTITY, else none. */
  identities(): Promise<string[] | undefined>;
  /** What each engine's host offers the data fast paths, with the run's FERRY_HOST_* switches (once per engine). */
  hostAccess(engine: Engine): Promise<HostAccess>;
  /** The debug channel (--debug, FERRY_DEBUG=1); absent when off. */
  debug?: Debug;
  /** restic's `-o key=value` options for restic:<repo> locations (--restic-option, FERRY_RESTIC_OPTION). */
  resticOptions?(): string[];
}

/** Every subcommand, in the order of --help (a test checks it against the program and the JSON schema). */
export const COMMAND_NAMES = [
  'backup',
  'restore',
  'ls',
  'cat',
  'inspect',
  'verify',
  'prune',
  'migrate',
  'drill',
  'clean',
  'schedule',
  'config',
  'completion',
] as const;

export const EXIT_HELP = `
Exit codes:
  0    success
  1    internal error (a bug in ferry; the stack trace is printed)
  2    usage error (bad option or argument), missing or wrong passphrase,
       no age identity given or none matching the bundle's recipients
  3    partial: some containers were backed up, some failed
  4    the Docker engine could not be reached or refused a request
  5    a container, image, volume, bundle, store (-o directory) or bucket was not
       found, or the target lacks what a container needs (a bind source, device,
       driver, CPUs, ...)
  6    conflict: a container or volume of that name exists (see --on-conflict),
       the -o bundle file exists (see --force),
       a host port or static address is taken on the target, or the store is
       locked by another ferry run (see --lock-timeout)
  7    the bundle is damaged, incomplete, or of an unknown format
  8    a file or object could not be read or written (disk full, permissions,
       S3 credentials refused, S3 access denied, S3 server unreachable)
  9    drill failed: the restored copy did not become healthy, exited, or its
       probe failed or timed out (everything it made was removed)
  10   a pre-exec hook failed inside a container (that container was not backed up)
  11   --trust: the bundle is unsigned, badly signed or changed after signing,
       or its signer is not allowed in the allowed_signers file (nothing changed)
  12   the restore policy: host access (privileged, host binds, host namespaces,
       devices, capabilities) that --allow did not allow (nothing changed)
  14   an --on-conflict replace could not be finished after the old container
       was removed: the new data is kept whole in <volume>-ferry-new-<run>
       volumes, and the next ferry run on that engine tries again
  129  interrupted by SIGHUP (the terminal or SSH session closed)
  130  interrupted by SIGINT (Ctrl-C)
  141  interrupted by SIGPIPE, or stdout or stderr was closed
  143  interrupted by SIGTERM
       after an interruption, containers were resumed and partial files removed`;

export function createProgram(deps: Deps): Command {
  const program = new Command('ferry');
  program
    .description('Back up, restore and migrate Docker containers with their configuration and data.')
    .version(VERSION, '-V, --version')
    .option(
      '-H, --host <engine>',
      'Docker engine: unix:///path, tcp://host:port, ssh://[user@]host[:port][/socket] (DOCKER_HOST, docker context, local socket otherwise)',
    )
    .option('--json', 'print the result as one JSON object on stdout')
    .option('-q, --quiet', 'print only warnings and errors')
    .option(
      '--debug',
      'log each engine call, each data path chosen and each fallback, with its reason, on stderr (also FERRY_DEBUG=1)',
    )
    .option(
      '--passphrase-file <file>',
      'file holding the passphrase of encrypted bundles (else FERRY_PASSPHRASE; never on the command line)',
    )
    .option(
      '--identity <file>',
      'age identity file (age-keygen) that opens bundles encrypted to its recipient (else FERRY_AGE_IDENTITY)',
    )
    .option(
      '--ssh-accept-new',
      'add the host key of an ssh:// host that is not yet in known_hosts (a changed key is always refused)',
    )
    .option(
      '--s3-endpoint <url>',
      'S3-compatible server of s3:// stores, e.g. http://minio:9000 (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS)',
    )
    .option('--s3-path-style', 'address S3 buckets as host/bucket, not bucket.host (automatic for an IP address)')
    .addOption(resticOption())
    .option(
      '--config <file>',
      'settings file (TOML; else FERRY_CONFIG, else ~/.config/ferry/ferry.toml, else /etc/ferry/ferry.toml); flags > FERRY_* variables > file',
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput(output(deps))
    .addHelpText('after', EXIT_HELP);
  program.addCommand(backupCommand(program, deps));
  program.addCommand(restoreCommand(program, deps));
  program.addCommand(lsCommand(program, deps));
  program.addCommand(catCommand(program, deps));
  program.addCommand(inspectCommand(program, deps));
  program.addCommand(verifyCommand(program, deps));
  program.addCommand(pruneCommand(program, deps));
  program.addCommand(migrateCommand(program, deps));
  program.addCommand(drillCommand(program, deps));
  program.addCommand(cleanCommand(program, deps));
  program.addCommand(scheduleCommand(program, deps));
  program.addCommand(configCommand(program, deps));
  program.addCommand(completionCommand(program, deps));
  // Every option the command line leaves unset: from its FERRY_* variable, else the config file.
  program.hook('preAction', async (_program, command) => {
    await applyConfig(program, command, process.env);
  });
  for (const c of program.commands)
    c.exitOverride()
      .configureOutput(output(deps))
      .configureHelp({ showGlobalOptions: true })
      .showHelpAfterError(`(run ferry ${c.name()} --help for usage)`);
  return program;
}

/** commander's messages on ferry's streams, with ferry's one error prefix. */
function output(deps: Deps) {
  return {
    writeOut: (s: string) => deps.io.stdout.write(s),
    writeErr: (s: string) => deps.io.stderr.write(s),
    outputError: (s: string, write: (s: string) => void) => write(s.replace(/^error: /, 'ferry: error: ')),
  };
}

/** The exit code a command's action chose, by program (a command that sets none exits 0). */
const exitCodes = new WeakMap<Command, number>();

export function setExit(program: Command, code: number) {
  exitCodes.set(program, code);
}

/** The exit code setExit() recorded for `program`, if any. */
export function exitCodeOf(program: Command): number | undefined {
  return exitCodes.get(program);
}
