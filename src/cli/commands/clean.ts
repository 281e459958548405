import { Command, InvalidArgumentError, Option } from 'commander';
import { openEngine } from '../../engine/connect.js';
import { clean, DEFAULT_MIN_AGE_S, type CleanItem, type CleanReport } from '../../ops/clean.js';
import { FerryError } from '../../errors.js';
import { setExit, type Deps } from '../program.js';
import { errorJson } from '../json.js';
import { createProgress } from '../render.js';
import { table } from './ls.js';

function seconds(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('a whole number of seconds (0 or more)');
  return Number(v);
}

const itemJson = (i: CleanItem) => ({ kind: i.kind, name: i.name, id: i.id, reason: i.reason });

export function cleanJson(r: CleanReport) {
  return {
    engine: r.engine,
    dryRun: r.dryRun,
    removed: r.removed.map(itemJson),
    kept: r.kept.map(itemJson),
    failed: r.failed.map((f) => ({ ...itemJson(f), error: errorJson(f.error) })),
  };
}

export function cleanText(r: CleanReport): string {
  const rows = [['', 'KIND', 'NAME', 'WHY']];
  const verb = r.dryRun ? 'would remove' : 'removed';
  for (const i of r.removed) rows.push([verb, i.kind, i.name, i.reason]);
  for (const i of r.failed) rows.push(['FAILED', i.kind, i.name, i.error.message]);
  for (const i of r.kept) rows.push(['kept', i.kind, i.name, i.reason]);
  const head =
    r.removed.length + r.failed.length + r.kept.length === 0 ? `no ferry leftovers on ${r.engine}\n` : table(rows);
  const n = r.removed.length;
  return (
    head +
    `${n} ${n === 1 ? 'object' : 'objects'} ${r.dryRun ? 'would be removed' : 'removed'}${r.failed.length ? `, ${r.failed.length} could not be removed` : ''}, ${r.kept.length} kept\n`
  );
}

export function cleanCommand(program: Command, deps: Deps): Command {
  return new Command('clean')
    .description(
      "Remove ferry's own leftovers on an engine: unused snapshot images, the holder image, helpers of dead runs",
    )
    .argument('[container...]', 'only the snapshot images of these containers (ferry/<name>:*)')
    .option('--dry-run', 'list what would be removed, and what is kept and why, without removing anything')
    .addOption(
      new Option('--min-age <seconds>', 'keep snapshot images younger than this (a run elsewhere may be using one)')
        .default(DEFAULT_MIN_AGE_S)
        .argParser(seconds),
    )
    .addHelpText(
      'after',
      `
What is removed:
  snapshot images ferry/<name>:<stamp> that no container (running or stopped) was created from;
  ferry-holder:empty when no container uses it (ferry imports it again when it needs it);
  helper containers (label io.ferry.role) of ferry runs on this host that are no longer running.
What is kept, and listed with the reason: anything a container uses; what a ferry run that is
still running recorded (snapshot, loaded image); snapshots younger than --min-age; while any
ferry run is seen on the engine, the newest snapshot of each container and the holder image;
helpers made on another host. Images are removed by reference and never forced: an image that
has another tag only loses its ferry/ tag. Nothing else (your images, containers, volumes) is
ever touched.

Examples:
  ferry clean --dry-run
  ferry clean
  ferry -H ssh://root@old-host clean web db --min-age 0
  ferry --json clean --dry-run | jq -r '.removed[].name'`,
    )
    .action(async (containers: string[], flags: { dryRun?: boolean; minAge: number }) => {
      const g = program.opts<{ host?: string; json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const progress = createProgress({ quiet: !!g.quiet });
      const engine = await openEngine(g.host, { ssh: deps.ssh() });
      let report: CleanReport;
      try {
        report = await clean(
          engine,
          { progress, signal: deps.signal },
          { dryRun: !!flags.dryRun, minAgeSeconds: flags.minAge, containers },
        );
      } catch (err) {
        progress.done(true);
        throw err;
      } finally {
        engine.close();
      }
      progress.done(report.failed.length > 0);
      const first = report.failed[0]?.error;
      const err = first
        ? new FerryError(
            first.code,
            first.exitCode,
            `${report.failed.length} of ferry's leftovers could not be removed; the first: ${first.message}`,
            { hint: first.hint ?? 'run ferry clean again; see the list for what was kept and why' },
          )
        : undefined;
      if (g.json) deps.emit('clean', { ok: !err, ...cleanJson(report), ...(err ? { error: errorJson(err) } : {}) });
      else if (!g.quiet || err) deps.io.stdout.write(cleanText(report));
      if (err) throw err;
      setExit(program, 0);
    });
}
