import { Command, Option } from 'commander';
import { openEngine } from '../../engine/connect.js';
import { createRunIdentity } from '../../engine/run.js';
import { migrate } from '../../ops/migrate.js';
import { planMigrate, type MigratePlan } from '../../ops/migrate-plan.js';
import { projectContainers, type Consistency } from '../../ops/steps/capture.js';
import type { OnConflict } from '../../ops/steps/recreate.js';
import { setExit, type Deps } from '../program.js';
import { createProgress, humanBytes } from '../render.js';
import {
  addRemapOptions,
  choice,
  collect,
  excludePathOption,
  STOP_TIMEOUT_HELP,
  stopTimeoutOption,
} from '../options.js';
import { UsageError } from '../../errors.js';
import { describeRemap, parseRemap, type RemapFlags } from '../../plan/remap.js';

interface MigrateFlags extends RemapFlags {
  stopTimeout?: number;
  wait?: number;
  to?: string;
  consistency?: Consistency;
  onConflict: OnConflict;
  start: boolean;
  stopSource?: boolean;
  precopy: boolean;
  excludePath?: string[];
  project?: string[];
  dryRun?: boolean;
}

export function migrateCommand(program: Command, deps: Deps): Command {
  const cmd = new Command('migrate')
    .description(
      'Move containers to another engine with their data and settings, streamed directly (no bundle on disk)',
    )
    .argument('[container...]', 'containers to migrate (on the source engine: -H, else the default)')
    .option('--to <engine>', 'target engine: ssh://[user@]host[:port][/socket], unix:///path, tcp://host:port')
    .addOption(
      new Option(
        '--consistency <mode>',
        "pause (default), stop, or none, as for backup (default: each container's ferry.consistency label, else pause)",
      ).argParser(choice(['pause', 'stop', 'none'] as const)),
    )
    .addOption(
      new Option(
        '--on-conflict <policy>',
        'when the target has a container or volume of that name: fail, replace, rename',
      )
        .default('fail')
        .argParser(choice(['fail', 'replace', 'rename'] as const)),
    )
    .addOption(
      new Option(
        '--project <name>',
        'also migrate the containers of this Compose project (label com.docker.compose.project), running or not (repeatable)',
      ).argParser(collect),
    )
    .option('--no-start', 'create the containers on the target but do not start them')
    .option(
      '--dry-run',
      'print what would be paused, sent (sizes, data paths) and created on the target, and the conflicts; change nothing',
    )
    .option(
      '--stop-source',
      'the cutover: stop each source container cleanly before its snapshot and leave it stopped (nothing written to it is left behind; with the pre-copy the downtime is what changed since it, the snapshot and the start)',
    )
    .addOption(excludePathOption())
    .option(
      '--no-precopy',
      'copy each volume in one pass once its container is frozen, instead of copying it while it runs and then only what changed (docs/precopy.md)',
    )
    .addOption(
      new Option(
        '--stop-timeout <seconds>',
        `with --consistency stop or --stop-source: ${STOP_TIMEOUT_HELP}`,
      ).argParser(stopTimeoutOption),
    )
    .addOption(
      new Option(
        '--wait <seconds>',
        'when another ferry run is backing up or migrating a container, wait this long for it (default: fail at once, exit 6)',
      ).argParser(stopTimeoutOption),
    );
  return addRemapOptions(cmd)
    .addHelpText(
      'after',
      `
Examples:
  ferry migrate web --to ssh://root@newhost
  ferry migrate web --to ssh://root@newhost --dry-run     # what would move, where, how much
  ferry migrate web db --to ssh://newhost --stop-source
  ferry migrate --project shop --to ssh://newhost --stop-source
  ferry -H ssh://oldhost migrate web --to ssh://newhost
  ferry migrate web --to ssh://newhost --map-bind /srv/web=/data/web --map-network backend=prod`,
    )
    .action(async (containers: string[], flags: MigrateFlags) => {
      const g = program.opts<{ host?: string; json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const remap = parseRemap(flags); // a malformed mapping fails before any engine is contacted
      const progress = createProgress({ quiet: !!g.quiet });
      if (remap) for (const line of describeRemap(remap)) progress.info(`map ${line}`);
      if (!flags.to) throw new UsageError('migrate needs --to <engine>', 'e.g. --to ssh://root@newhost');
      const to = flags.to;
      if (!containers.length && !flags.project)
        throw new UsageError('name at least one container to migrate, or a Compose project with --project');
      // Both engines at once (an SSH handshake each, as a rule). A source that fails is reported
      // at once, and the target closed whenever its connection comes up. One run on both.
      const run = createRunIdentity();
      const targetOpening = openEngine(to, { ssh: deps.ssh(), run });
      targetOpening.catch(() => {});
      const source = await openEngine(g.host, { ssh: deps.ssh(), run }).catch((err: unknown) => {
        targetOpening.then(
          (t) => t.close(),
          () => {},
        );
        throw err;
      });
      try {
        const target = await targetOpening;
        try {
          if (flags.project)
            containers = [
              ...containers,
              ...(await projectContainers(source, flags.project)).filter((n) => !containers.includes(n)),
            ];
          const opts = {
            containers,
            consistency: flags.consistency,
            onConflict: flags.onConflict,
            start: flags.start,
            stopSource: !!flags.stopSource,
            precopy: flags.precopy,
            ...(flags.excludePath?.length ? { excludePaths: flags.excludePath } : {}),
            stopTimeout: flags.stopTimeout,
            wait: flags.wait,
            ...(remap ? { remap } : {}),
          };
          const ctx = { progress, signal: deps.signal, hostAccess: deps.hostAccess, debug: deps.debug };
          if (flags.dryRun) {
            // Both engines read, neither changed (ops/migrate-plan.ts).
            const plan = await planMigrate(source, target, opts, ctx);
            progress.done();
            if (g.json)
              deps.emit('migrate', {
                ok: true,
                dryRun: true,
                source: plan.source,
                target: plan.target,
                containers: plan.containers.map((c) => c.name),
                plan,
              });
            else deps.io.stdout.write(migratePlanText(plan));
            setExit(program, 0);
            return;
          }
          const res = await migrate(source, target, opts, ctx);
          progress.done();
          if (g.json) {
            deps.emit('migrate', {
              ok: true,
              source: source.facts.endpoint,
              target: target.facts.endpoint,
              ...res,
              containers: res.containers.map((c) => c.name),
              results: res.containers.map(({ name, ...c }) => ({ container: name, ...c })),
            });
          } else if (!g.quiet) {
            for (const c of res.containers)
              deps.io.stdout.write(
                `migrated ${c.name} to ${target.facts.endpoint}${c.exitCode !== undefined ? `, started but exited (code ${c.exitCode})` : c.started ? ', running' : ', created'}\n`,
              );
            deps.io.stdout.write(
              `sent ${humanBytes(res.imageBytes)} of image (${res.skippedLayers}/${res.totalLayers} layers already there) and ${humanBytes(res.volumeBytes)} of volume data in ${(res.durationMs / 1000).toFixed(1)}s\n`,
            );
            if (res.downtimeMs !== undefined)
              deps.io.stdout.write(
                `downtime ${(res.downtimeMs / 1000).toFixed(1)}s (source stopped -> target running)\n`,
              );
            else if (res.pausedMs) deps.io.stdout.write(`source paused ${(res.pausedMs / 1000).toFixed(1)}s\n`);
          }
          setExit(program, 0);
        } finally {
          target.close();
        }
      } finally {
        progress.done(true); // after a success, done() was called first: this one is a failure's
        source.close();
      }
    });
}

/** The dry run's plan as text: one line per container, volume, network and bind, then the conflicts. */
export function migratePlanText(p: MigratePlan): string {
  const size = (n?: number) => (n === undefined ? 'size unknown' : humanBytes(n));
  const held = (c: MigratePlan['containers'][number]) =>
    c.consistency === 'none'
      ? 'not held still'
      : c.consistency === 'stop'
        ? c.stopSource
          ? 'stopped, and left stopped (--stop-source)'
          : 'stopped, then started again'
        : 'paused, then resumed';
  const lines = [`dry run: nothing was paused, sent or created. migrate from ${p.source} to ${p.target} would:`];
  for (const c of p.containers)
    lines.push(
      `  ${c.name} (${c.state}): ${held(c)} while its layer is committed and its volumes read; image ${c.image} (${size(c.imageBytes)}${c.targetHasImage ? ', already on the target: only the new layer is sent' : ''}); created on the target as ${c.to}${c.replace ? ', replacing the one there' : ''}${c.start ? ', started' : ', not started'}`,
    );
  for (const v of p.volumes)
    lines.push(
      `  volume ${v.name} -> ${v.to}: ${size(v.rawBytes)}, read by ${v.read}, written by ${v.write}${v.replace ? ', replacing the one there' : v.exists ? ' (exists on the target)' : ''}`,
    );
  for (const n of p.networks)
    lines.push(`  network ${n.name}: ${n.exists ? 'exists on the target' : 'created on the target'}`);
  for (const b of p.binds)
    lines.push(`  bind ${b.hostPath} of ${b.container}: must exist on the target (bind data does not travel)`);
  lines.push(
    `  in all about ${humanBytes(p.volumeBytes)} of volume data and ${humanBytes(p.imageBytes)} of image layers the target lacks, plus each committed layer`,
  );
  if (p.conflicts.length) {
    lines.push('conflicts (the real run would stop here, before changing anything):');
    for (const c of p.conflicts) lines.push(`  ${c}`);
  } else
    lines.push('no conflicts found (host ports, devices and bind sources on the target are checked by the real run)');
  return lines.join('\n') + '\n';
}
