/**
 * ferry schedule: run backups on a schedule, with retention, for a long-lived process (ferry's
 * container image runs it as its entrypoint beside the engine, as docker-volume-backup users run
 * theirs). Each tick runs `ferry backup` and then `ferry prune` as child processes of this one,
 * with the same environment (so every FERRY_* variable and the config file apply to them as to a
 * command typed by hand): a run that fails or crashes never takes the scheduler down, and each
 * starts with fresh memory. A signal is passed on to the child under way, which stops in order
 * (everything put back, no partial bundle), and then the scheduler exits.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { InterruptedError, UsageError } from '../../errors.js';
import { runSchedule } from '../../ops/schedule.js';
import { parseSchedule, type Schedule } from '../../plan/schedule.js';
import { RULES } from '../../plan/retention.js';
import { countOption, withinOption } from './prune.js';
import { setExit, type Deps } from '../program.js';

/** bin/ferry.js, from dist/cli/commands/schedule.js. */
const FERRY_BIN = fileURLToPath(new URL('../../../bin/ferry.js', import.meta.url));

function scheduleOption(v: string): Schedule {
  try {
    return parseSchedule(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

type Flags = {
  schedule?: Schedule;
  output?: string;
  once?: boolean;
  keepWithin?: string;
} & Partial<Record<string, unknown>>;

/** What one child run ended with: its exit code and its --json object (when it printed one). */
interface ChildResult {
  code: number;
  json?: Record<string, unknown>;
}

/**
 * Run `ferry <args>` as a child with this process's environment; its stderr is ours. The run's
 * signal is passed on as the signal it stands for (once); the child is in a process group of its
 * own, so a Ctrl-C at a terminal reaches it once, through here, not twice.
 */
function runFerry(args: string[], signal: AbortSignal, env: NodeJS.ProcessEnv = process.env): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--max-semi-space-size=2', FERRY_BIN, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    const onAbort = () => {
      const r = signal.reason as unknown;
      const sig = r instanceof InterruptedError && r.signal !== 'SIGPIPE' ? r.signal : 'SIGTERM';
      child.kill(sig);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(err);
    });
    child.on('close', (code, sig) => {
      signal.removeEventListener('abort', onAbort);
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(out.trim().split('\n').pop() ?? '') as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      // killed by a signal it did not handle (SIGKILL): 128 + its number, as a shell reports it
      resolve({ code: code ?? 128 + (sig ? (constants.signals[sig] ?? 0) : 0), json });
    });
  });
}

/** The bundles a `backup --json` object names (one, or one per result with --all). */
function bundlesOf(json: Record<string, unknown> | undefined): string[] {
  // --all: { results: [{ container, ok, result: { bundle, ... } }] }; one set: { bundle, ... }
  const results = Array.isArray(json?.results)
    ? (json.results as { result?: Record<string, unknown> }[]).map((r) => r.result)
    : [json];
  return results.map((r) => r?.bundle).filter((b): b is string => typeof b === 'string');
}

const GLOBALS: [string, string][] = [
  ['host', '--host'],
  ['config', '--config'],
  ['passphraseFile', '--passphrase-file'],
  ['identity', '--identity'],
  ['s3Endpoint', '--s3-endpoint'],
];
const GLOBAL_SWITCHES: [string, string][] = [
  ['s3PathStyle', '--s3-path-style'],
  ['sshAcceptNew', '--ssh-accept-new'],
  ['debug', '--debug'],
];

export function scheduleCommand(program: Command, deps: Deps): Command {
  const cmd = new Command('schedule')
    .description(
      'Run backups on a schedule, each followed by a prune (--keep-*): a long-lived process, e.g. the entrypoint of ferry in a container',
    )
    .argument('[container...]', 'containers to back up at each run (default: --all, narrowed by FERRY_FILTER)')
    .addOption(
      new Option(
        '--schedule <when>',
        'when to run: 5 cron fields (minute hour day-of-month month day-of-week, local time), @hourly, @daily, @weekly, @monthly, or an interval: @every 6h, 30m, 1d',
      ).argParser(scheduleOption),
    )
    .option('-o, --output <store>', 'the store backups go to and are pruned in: a directory, ssh://, s3://')
    .option('--once', 'run one backup (and prune) now and exit with its exit code, whatever --schedule says');
  for (const r of RULES)
    cmd.addOption(
      new Option(`--keep-${r} <n>`, `prune after each run: as ferry prune --keep-${r}`).argParser(countOption),
    );
  cmd.addOption(
    new Option('--keep-within <duration>', 'prune after each run: as ferry prune --keep-within').argParser(
      withinOption,
    ),
  );
  return cmd
    .addHelpText(
      'after',
      `
Each run is \`ferry backup\` then, when a --keep-* rule is given, \`ferry prune\`, as child
processes with this environment: backup's own settings come from FERRY_* variables (FERRY_FILTER,
FERRY_COMPRESS, FERRY_VERIFY, ...) or the config file's [backup] table. One line per run on
stdout (one JSON object with --json). Runs never overlap: one that outlasts the interval delays
the next. SIGTERM (docker stop) or Ctrl-C stops the run under way in order (containers resumed,
no partial bundle) and exits (143, 130); a run that fails is logged and the next one still runs.

Examples:
  ferry schedule --schedule '0 3 * * *' -o /backups --keep-daily 7 --keep-weekly 4
  FERRY_SCHEDULE='@every 6h' FERRY_OUTPUT=/backups FERRY_FILTER=label=ferry.backup=true ferry schedule
  ferry schedule web db -o /backups --once`,
    )
    .action(async (containers: string[], flags: Flags) => {
      const g = program.opts<Record<string, unknown> & { json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      if (!flags.schedule && !flags.once)
        throw new UsageError(
          'ferry schedule needs --schedule (or FERRY_SCHEDULE), unless --once',
          'e.g. --schedule @daily',
        );
      const output = flags.output;
      if (!output) throw new UsageError('ferry schedule needs -o <store> (or FERRY_OUTPUT)', 'e.g. -o /backups');
      const globals: string[] = [];
      for (const [k, flag] of GLOBALS) if (typeof g[k] === 'string') globals.push(flag, g[k]);
      for (const [k, flag] of GLOBAL_SWITCHES) if (g[k] === true) globals.push(flag);
      for (const o of (g.resticOption as string[] | undefined) ?? []) globals.push('--restic-option', o);
      const keep: string[] = [];
      for (const r of RULES) {
        const v = flags[`keep${r[0]!.toUpperCase()}${r.slice(1)}`];
        if (typeof v === 'number') keep.push(`--keep-${r}`, String(v));
      }
      if (flags.keepWithin !== undefined) keep.push('--keep-within', flags.keepWithin);
      const log = (line: string) => deps.io.stdout.write(`${line}\n`);
      let last = 0;
      await runSchedule({
        schedule: flags.schedule ?? parseSchedule('@daily'),
        once: !!flags.once,
        signal: deps.signal,
        waiting: (next) => {
          if (!g.json && !g.quiet) log(`ferry schedule: next run at ${next.toISOString()}`);
        },
        tick: async (due) => {
          const started = Date.now();
          const b = await runFerry(
            [...globals, '--json', '--quiet', 'backup', '-o', output, ...(containers.length ? containers : ['--all'])],
            deps.signal,
            // Containers named on the command line replace the label selection (FERRY_FILTER,
            // which ferry's image sets), which only narrows --all.
            containers.length ? { ...process.env, FERRY_FILTER: undefined } : process.env,
          );
          if (deps.signal.aborted) throw deps.signal.reason as Error;
          const bundles = bundlesOf(b.json);
          // Retention after a backup that went through (or partly: exit 3), never after one that failed.
          const p =
            keep.length && (b.code === 0 || b.code === 3)
              ? await runFerry([...globals, '--json', '--quiet', 'prune', output, ...keep], deps.signal)
              : undefined;
          if (deps.signal.aborted) throw deps.signal.reason as Error;
          const removed = Array.isArray(p?.json?.removed) ? p.json.removed.length : undefined;
          last = b.code !== 0 ? b.code : (p?.code ?? 0);
          const summary = {
            ok: last === 0,
            due: due.toISOString(),
            durationMs: Date.now() - started,
            backup: { exitCode: b.code, bundles },
            ...(p ? { prune: { exitCode: p.code, ...(removed !== undefined ? { removed } : {}) } } : {}),
            // a failed run: the error its child reported (docs/json.md), else its exit code
            ...(last !== 0
              ? {
                  error: (b.code !== 0 ? b.json?.error : p?.json?.error) ?? {
                    code: 'RUN_FAILED',
                    exitCode: last,
                    message: `ferry ${b.code !== 0 ? 'backup' : 'prune'} exited with ${last}`,
                    hint: null,
                  },
                }
              : {}),
          };
          if (g.json) deps.emit('schedule', summary);
          else
            log(
              `ferry schedule: run due ${summary.due}: backup ${b.code === 0 ? 'ok' : `failed (exit ${b.code})`}, ${bundles.length} bundle(s)${bundles.length ? ` (${bundles.join(', ')})` : ''}` +
                (p
                  ? `; prune ${p.code === 0 ? 'ok' : `failed (exit ${p.code})`}${removed !== undefined ? `, ${removed} removed` : ''}`
                  : '') +
                `; ${(summary.durationMs / 1000).toFixed(1)} s`,
            );
        },
      });
      setExit(program, last);
    });
}
