import { Command, InvalidArgumentError, Option } from 'commander';
import path from 'node:path';
import { IoError } from '../../errors.js';
import { describePolicy, prune, type PruneResult } from '../../ops/prune.js';
import { parseWithin, RULES, type KeepPolicy, type Rule } from '../../plan/retention.js';
import { DEFAULT_LOCK_TIMEOUT_S } from '../../store/lock.js';
import { setExit, type Deps } from '../program.js';
import { errorJson } from '../json.js';
import { createProgress, humanBytes } from '../render.js';
import { shortTime, table } from './ls.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { pruneRestic } from './restic.js';
import { notifying, notifyHelp } from '../notify.js';

export function countOption(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a whole number >= 0');
  return Number(v);
}

export function secondsOption(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !Number.isFinite(n))
    throw new InvalidArgumentError('expected a number of seconds >= 0');
  return n;
}

type PruneFlags = Partial<Record<`keep${Capitalize<Rule>}`, number>> & {
  keepWithin?: string;
  dryRun?: boolean;
  lockTimeout: number;
  notifyUrl?: string;
};

export function withinOption(v: string): string {
  if (!parseWithin(v))
    throw new InvalidArgumentError('expected a duration such as 30d, 2w, 6m, 1y or 1y6m (y, m for months, w, d, h)');
  return v;
}

function policyFrom(flags: PruneFlags): KeepPolicy {
  const p: KeepPolicy = {};
  for (const r of RULES) {
    const v = flags[`keep${(r[0]!.toUpperCase() + r.slice(1)) as Capitalize<Rule>}`];
    if (v !== undefined) p[r] = v;
  }
  if (flags.keepWithin !== undefined) p.within = flags.keepWithin;
  return p;
}

/** `ferry --json prune` (docs/json.md, "prune"). */
export function pruneJson(r: PruneResult): Record<string, unknown> {
  const b = (x: PruneResult['kept'][number]) => ({
    bundle: x.bundle,
    createdAt: x.created,
    containers: x.containers,
    fileBytes: x.bytes,
    group: x.group,
    reasons: x.reasons,
  });
  const failure = (message: string) => ({ code: 'IO', exitCode: 8, message, hint: null });
  return {
    store: r.store,
    dryRun: r.dryRun,
    policy: r.policy,
    kept: r.kept.map(b),
    removed: r.removed.map(b),
    damaged: r.damaged.map((x) => ({ ...b(x), damage: { at: x.mark.at, reason: x.mark.reason } })),
    unreadable: r.unreadable.map((u) => ({
      bundle: u.bundle,
      fileBytes: u.bytes,
      error: { code: 'BUNDLE', exitCode: 7, message: u.error, hint: null },
    })),
    failed: r.failed.map((f) => ({ bundle: f.bundle, error: failure(f.error) })),
    freedBytes: r.freedBytes,
  };
}

export function pruneText(r: PruneResult): string {
  const out: string[] = [];
  const verb = r.dryRun ? 'would remove' : 'removed';
  if (r.dryRun) out.push(`dry run: nothing was removed. Pruning ${r.store} with ${describePolicy(r.policy)} would:`);
  const groups = [...new Set([...r.kept, ...r.removed, ...r.damaged].map((b) => b.group))].sort();
  for (const g of groups) {
    out.push(`containers ${g}:`);
    const all = [
      ...r.kept.map((b) => ({ b, act: 'keep', why: b.reasons.join(', ') })),
      ...r.removed.map((b) => ({ b, act: verb, why: 'no rule keeps it' })),
      ...r.damaged.map((b) => ({
        b,
        act: 'DAMAGED',
        why: `verify found it damaged ${shortTime(b.mark.at)}: counts towards no rule, never removed`,
      })),
    ]
      .filter((x) => x.b.group === g)
      .sort((x, y) => Date.parse(y.b.created) - Date.parse(x.b.created) || (x.b.bundle < y.b.bundle ? 1 : -1));
    const rows = all.map(({ b, act, why }) => [
      act,
      shortTime(b.created),
      path.basename(b.bundle),
      humanBytes(b.bytes),
      why,
    ]);
    out.push(
      ...table(rows)
        .trimEnd()
        .split('\n')
        .map((l) => `  ${l}`),
    );
  }
  if (r.unreadable.length) {
    out.push('not readable as bundles (never removed):');
    for (const u of r.unreadable) out.push(`  keep  ${path.basename(u.bundle)}: ${u.error}`);
  }
  for (const f of r.failed) out.push(`could not remove ${f.bundle}: ${f.error}`);
  if (r.damaged.length) {
    out.push('damaged (verify marked them; look at them, then remove them and their .damaged mark by hand):');
    for (const d of r.damaged) out.push(`  ${path.basename(d.bundle)}: ${d.mark.reason}`);
  }
  const n = r.removed.length;
  out.push(
    `${n} bundle${n === 1 ? '' : 's'} ${r.dryRun ? 'would be removed' : 'removed'} (${humanBytes(r.freedBytes)}), ${r.kept.length + r.unreadable.length + r.damaged.length} kept${r.damaged.length ? ` (${r.damaged.length} damaged)` : ''}`,
  );
  return out.join('\n') + '\n';
}

export function pruneCommand(program: Command, deps: Deps): Command {
  const cmd = new Command('prune')
    .description(
      'Remove old bundles from a store, keeping those that a retention rule keeps (restic-style, per container set)',
    )
    .argument('<store>', 'a directory that backups are written to, ssh://[user@]host[:port]/dir, or restic:<repo>');
  const help: Record<Rule, string> = {
    last: 'keep the N newest bundles',
    hourly: 'keep the newest bundle of each of the last N hours that have one',
    daily: 'keep the newest bundle of each of the last N days (UTC) that have one',
    weekly: 'keep the newest bundle of each of the last N ISO weeks that have one',
    monthly: 'keep the newest bundle of each of the last N months that have one',
    yearly: 'keep the newest bundle of each of the last N years that have one',
  };
  for (const r of RULES) cmd.addOption(new Option(`--keep-${r} <n>`, help[r]).argParser(countOption));
  cmd.addOption(
    new Option(
      '--keep-within <duration>',
      'keep every bundle made within this long before the newest one (30d, 2w, 6m, 1y6m)',
    ).argParser(withinOption),
  );
  return cmd
    .option('--dry-run', 'show what would be removed and why the rest is kept; remove nothing')
    .addOption(
      new Option('--lock-timeout <seconds>', 'wait this long for another ferry run to release the store')
        .default(DEFAULT_LOCK_TIMEOUT_S)
        .argParser(secondsOption),
    )
    .option('--notify-url <url>', notifyHelp('prune'))
    .addHelpText(
      'after',
      `
Rules apply to each container set on its own (the containers a bundle holds). A bundle is kept
when any rule keeps it; the newest bundle of each set is always kept; files that are not
readable bundles are never removed. A bundle that \`ferry verify\` marked damaged (a
<bundle>.damaged file beside it) counts towards no rule, so the rules keep that many good
bundles, and is never removed: look at it. Times are the manifests' creation times, in UTC.

Examples:
  ferry prune /backups --keep-daily 7 --keep-weekly 4 --keep-monthly 6
  ferry prune /backups --keep-last 3 --dry-run
  ferry prune /backups --keep-within 30d --keep-monthly 12
  ferry prune ssh://backup@vault/srv/backups --keep-daily 14`,
    )
    .action(async (store: string, flags: PruneFlags) => {
      const g = program.opts<{ json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const progress = createProgress({ quiet: !!g.quiet });
      // A dry run tells nobody.
      await notifying(
        flags.dryRun ? undefined : flags.notifyUrl,
        'prune',
        (m) => progress.warn(m),
        async () => {
          if (isResticLocation(store)) {
            // ferry's snapshots in a restic repository: the same rules, then restic forget --prune.
            try {
              await pruneRestic(
                store,
                { policy: policyFrom(flags), dryRun: !!flags.dryRun, json: !!g.json, quiet: !!g.quiet },
                deps,
                progress,
              );
            } finally {
              progress.done();
            }
            setExit(program, 0);
            return { ok: true, summary: 'pruned the restic repository (restic forget --prune)' };
          }
          let res: PruneResult;
          try {
            res = await prune(
              store,
              { policy: policyFrom(flags), dryRun: !!flags.dryRun, lock: { timeoutMs: flags.lockTimeout * 1000 } },
              {
                progress,
                signal: deps.signal,
                passphrase: await deps.passphrase(),
                identities: await deps.identities(),
                ...deps.stores,
              },
            );
          } catch (err) {
            progress.done(true);
            throw err;
          }
          progress.done(res.failed.length > 0);
          const err = res.failed.length
            ? new IoError(`${res.failed.length} bundle${res.failed.length === 1 ? '' : 's'} could not be removed`, {
                hint: 'check the permissions of the store',
              })
            : undefined;
          if (g.json) deps.emit('prune', { ...pruneJson(res), ok: !err, ...(err ? { error: errorJson(err) } : {}) });
          else if (!g.quiet || res.failed.length) deps.io.stdout.write(pruneText(res));
          if (err) throw err;
          setExit(program, 0);
          const n = res.removed.length;
          return {
            ok: true,
            summary: `pruned ${res.store}: ${n} bundle${n === 1 ? '' : 's'} removed (${humanBytes(res.freedBytes)}), ${res.kept.length + res.unreadable.length + res.damaged.length} kept${res.damaged.length ? ` (${res.damaged.length} damaged)` : ''}`,
          };
        },
      );
    });
}
