import { Command } from 'commander';
import path from 'node:path';
import { BundleError, FerryError, NotFoundError, toFerryError, type ExitCode } from '../../errors.js';
import type { RunContext } from '../../context.js';
import { badMembers, recordVerdict, verifyStream, type VerifyReport } from '../../ops/verify.js';
import { openBundleAt, openStore, readTarget } from '../../store/registry.js';
import { markName, type MarkOutcome } from '../../store/marks.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { verifyRestic } from './restic.js';
import type { Store } from '../../store/store.js';
import { setExit, type Deps } from '../program.js';
import { errorJson } from '../json.js';
import { createProgress, humanBytes } from '../render.js';
import { describeSignerInfo } from '../../ops/restore.js';
import { loadTrust, TRUST_HELP } from '../signing.js';
import { notifying, notifyHelp } from '../notify.js';

/** One line per member: ok, or BAD with each problem. */
export function verifyText(r: VerifyReport): string {
  const lines: string[] = [];
  for (const m of r.members) {
    const what = [m.kind === 'bundle' ? '' : m.kind, m.codec ?? '', m.bytes !== undefined ? humanBytes(m.bytes) : '']
      .filter(Boolean)
      .join(', ');
    if (m.ok) lines.push(`ok   ${m.name}${what ? `  (${what})` : ''}`);
    else for (const p of m.problems) lines.push(`BAD  ${m.name}: ${p}`);
  }
  const bad = badMembers(r);
  if (r.signer) lines.push(`signed by ${describeSignerInfo(r.signer)}`);
  lines.push(
    bad.length
      ? `${r.bundle}: ${bad.length} of ${r.members.length} members are bad`
      : `${r.bundle}: whole (${r.members.length} member${r.members.length === 1 ? '' : 's'} checked)`,
  );
  return lines.join('\n') + '\n';
}

/** A verify report of a bundle in a store, with what became of its damage mark (store/marks.ts). */
export type StoreVerifyReport = VerifyReport & { marking?: MarkOutcome };

/** The damage mark's fate in --json: `damageMark` ("recorded", "cleared") or `damageMarkError`. */
export function markJson(m: MarkOutcome | undefined): Record<string, unknown> {
  if (!m?.mark) return {};
  if (m.mark === 'unwritable') return { damageMarkError: errorJson(m.error) };
  return { damageMark: m.mark };
}

/** The damage mark's fate as a line of text, if anything happened to it. */
export function markText(name: string, m: MarkOutcome | undefined): string | undefined {
  if (m?.mark === 'recorded')
    return `     marked damaged: ${markName(name)} (prune counts it towards no rule and never removes it)`;
  if (m?.mark === 'cleared') return `     whole again: removed ${markName(name)}`;
  if (m?.mark === 'unwritable') return `     could not record the verdict in ${markName(name)}: ${m.error.message}`;
  return undefined;
}

/** One bundle's report in the --json schema (docs/json.md, "verify"). */
export function reportJson(r: StoreVerifyReport): { ok: boolean } & Record<string, unknown> {
  return {
    bundle: r.bundle,
    ok: r.ok,
    ...markJson(r.marking),
    members: r.members.map((m) => ({
      name: m.name,
      kind: m.kind,
      ...(m.codec ? { codec: m.codec } : {}),
      ...(m.bytes !== undefined ? { storedBytes: m.bytes } : {}),
      ok: m.ok,
      problems: m.problems,
    })),
    ...(r.signer ? { signer: r.signer } : {}),
    ...(r.unverified
      ? { error: errorJson({ ...r.unverified, hint: 'fix what kept it from being read, then verify again' }) }
      : !r.ok
        ? { error: errorJson(verifyFailure(r)) }
        : {}),
  };
}

export function verifyFailure(r: VerifyReport, prefix = ''): BundleError {
  const bad = badMembers(r);
  return new BundleError(
    `${prefix}${r.bundle} is not whole: bad member${bad.length === 1 ? '' : 's'} ${bad.join(', ')}`,
    {
      member: bad[0],
      hint: 'do not rely on this bundle; take a new backup (and check the disk it is stored on)',
    },
  );
}

/**
 * Verify every bundle of a store, one after the other; a bundle that cannot even be opened is
 * reported, not fatal. Each verdict is recorded beside its bundle (a damage mark, or none).
 */
export async function verifyStore(store: Store, ctx: RunContext): Promise<StoreVerifyReport[]> {
  const out: StoreVerifyReport[] = [];
  const settle = async (name: string, size: number) => {
    const r = out[out.length - 1]!;
    const marking = await recordVerdict(store, name, r, size);
    if (marking.mark === 'unwritable')
      ctx.progress.warn(`could not record the verdict on ${name} in ${markName(name)}: ${marking.error.message}`);
    if (marking.mark) r.marking = marking;
  };
  for (const { name, location: b, size } of await store.list()) {
    ctx.progress.step(`verify ${name}`);
    try {
      out.push(await verifyStream((await store.open(name)).stream, b, ctx));
      await settle(name, size);
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      const fe = toFerryError(err);
      // Only content that fails its checks is damage; a passphrase missing or wrong, or a file
      // ferry may not read, is reported as not verified, and the other bundles are still checked.
      if (fe instanceof BundleError) {
        out.push({
          bundle: b,
          ok: false,
          members: [{ name: 'bundle', kind: 'bundle', ok: false, problems: [fe.message] }],
        });
        await settle(name, size);
      } else
        out.push({
          bundle: b,
          ok: false,
          members: [],
          unverified: { code: fe.code, exitCode: fe.exitCode, message: fe.message },
        });
    }
  }
  return out;
}

/** One line per bundle (and one per bad member), then a count. */
export function storeVerifyText(where: string, reports: StoreVerifyReport[]): string {
  const lines: string[] = [];
  for (const r of reports) {
    const name = path.posix.basename(r.bundle);
    if (r.unverified) lines.push(`NOT VERIFIED  ${name}: ${r.unverified.message}`);
    else if (r.ok)
      lines.push(
        `ok   ${name}  (${r.members.length} member${r.members.length === 1 ? '' : 's'}${r.signer ? `; signed by ${describeSignerInfo(r.signer)}` : ''})`,
      );
    else
      for (const m of r.members.filter((x) => !x.ok))
        for (const p of m.problems) lines.push(`BAD  ${name}: ${m.name}: ${p}`);
    const mark = markText(name, r.marking);
    if (mark) lines.push(mark);
  }
  const bad = reports.filter((r) => !r.ok && !r.unverified).length;
  const unverified = reports.filter((r) => r.unverified).length;
  lines.push(
    `${where}: ${reports.length} bundle${reports.length === 1 ? '' : 's'}, ${reports.length - bad - unverified} whole, ${bad} bad${unverified ? `, ${unverified} not verified` : ''}`,
  );
  return lines.join('\n') + '\n';
}

export function verifyCommand(program: Command, deps: Deps): Command {
  return new Command('verify')
    .description(
      'Read a whole bundle, or every bundle of a store, and check every member: checksums, sizes, image archives, volume archives',
    )
    .argument(
      '<bundle|store>',
      'a bundle file, - for stdin, or a store (a directory, or ssh://host/dir): every bundle in it',
    )
    .option('--trust <allowed_signers>', TRUST_HELP)
    .option('--notify-url <url>', notifyHelp('verify'))
    .addHelpText(
      'after',
      `
Exit status 0 only when the bundle is whole (every bundle of a store); 7 otherwise, with each bad
member named. Nothing in a store is renamed or removed; each verdict on a bundle of a store is
recorded beside it: a damaged one gets a <bundle>.damaged mark (prune then counts it towards no
keep rule and never removes it), a whole one loses an old mark. A store that cannot be written is
reported, and verify goes on.

Examples:
  ferry verify /backups/ferry-web-20261123T021500Z.tar
  ferry verify /backups                         # every bundle in the store
  ssh host 'cat web.tar' | ferry verify -`,
    )
    .action(async (bundle: string, flags: { trust?: string; notifyUrl?: string }) => {
      const g = program.opts<{ json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const progress = createProgress({ quiet: !!g.quiet });
      await notifying(
        flags.notifyUrl,
        'verify',
        (m) => progress.warn(m),
        async () => {
          const trust = await loadTrust(flags.trust);
          if (isResticLocation(bundle)) {
            // restic check, then ferry's checks of each snapshot read back as a bundle.
            await verifyRestic(
              bundle,
              { json: !!g.json, quiet: !!g.quiet, ...(trust ? { trust } : {}) },
              deps,
              progress,
            );
            setExit(program, 0);
            return { ok: true, summary: 'verified the restic repository (restic check and the newest snapshots)' };
          }
          const store = openStore(bundle, deps.stores);
          if (await store.exists()) {
            let reports: StoreVerifyReport[] | undefined;
            try {
              reports = await verifyStore(store, {
                progress,
                signal: deps.signal,
                passphrase: await deps.passphrase(),
                identities: await deps.identities(),
                ...(trust ? { trust } : {}),
              });
            } finally {
              progress.done(!reports?.length || reports.some((r) => !r.ok));
            }
            if (!reports.length)
              throw new NotFoundError(
                `no bundles in ${store.describe()}: nothing was verified`,
                'check the path: ferry verify <dir> reads the bundles (*.tar) that backups wrote there',
              );
            const bad = reports.filter((r) => !r.ok && !r.unverified);
            const unverified = reports.filter((r) => r.unverified);
            if (!g.json && (!g.quiet || bad.length)) deps.io.stdout.write(storeVerifyText(store.describe(), reports));
            const names = (rs: VerifyReport[]) => rs.map((r) => path.posix.basename(r.bundle)).join(', ');
            const notVerified = unverified.length
              ? `; ${unverified.length} could not be verified (${names(unverified)}: ${unverified[0]!.unverified!.message})`
              : '';
            // The worst first: damage (7); else why the others could not be read (their own code).
            const err = bad.length
              ? new BundleError(
                  `${bad.length} of ${reports.length} bundles in ${store.describe()} are not whole: ${names(bad)}${notVerified}`,
                  { hint: 'do not rely on those bundles; take new backups (and check the disk they are stored on)' },
                )
              : unverified.length
                ? new FerryError(
                    unverified[0]!.unverified!.code,
                    unverified[0]!.unverified!.exitCode as ExitCode,
                    `${store.describe()}${notVerified.replace(/^;/, ':')}`,
                    { hint: 'those bundles were not checked: fix what kept them from being read, then verify again' },
                  )
                : undefined;
            if (g.json)
              deps.emit('verify', {
                ok: !err,
                store: store.describe(),
                bundles: reports.map(reportJson),
                ...(err ? { error: errorJson(err) } : {}),
              });
            if (err) throw err;
            setExit(program, 0);
            return {
              ok: true,
              summary: `verified ${store.describe()}: ${reports.length} bundle${reports.length === 1 ? '' : 's'}, all whole`,
            };
          }
          const transport = readTarget(bundle, deps.stores);
          let report: StoreVerifyReport | undefined;
          try {
            const src = await transport.openBundle();
            report = await verifyStream(src.stream, src.location, {
              progress,
              signal: deps.signal,
              passphrase: await deps.passphrase(),
              identities: await deps.identities(),
              ...(trust ? { trust } : {}),
            });
            if (bundle !== '-') {
              // A bundle of a store: its verdict goes beside it, as for a whole store.
              const at = openBundleAt(bundle, deps.stores);
              try {
                const size = (await at.store.stat(at.name).catch(() => undefined))?.size;
                const marking = await recordVerdict(at.store, at.name, report, size);
                if (marking.mark === 'unwritable')
                  progress.warn(`could not record the verdict in ${markName(at.name)}: ${marking.error.message}`);
                if (marking.mark) report.marking = marking;
              } finally {
                await at.store.close();
              }
            }
          } finally {
            progress.done(!report?.ok);
            await transport.close();
          }
          if (g.json)
            deps.emit('verify', {
              ...reportJson(report),
              ...(report.ok ? {} : { error: errorJson(verifyFailure(report)) }),
            });
          else if (!g.quiet || !report.ok) {
            const mark = markText(path.posix.basename(report.bundle), report.marking);
            deps.io.stdout.write(verifyText(report) + (mark ? `${mark.trim()}\n` : ''));
          }
          if (!report.ok) throw verifyFailure(report);
          setExit(program, 0);
          return { ok: true, summary: `verified ${report.bundle}: whole (${report.members.length} members checked)` };
        },
      );
    });
}
