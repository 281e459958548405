import { Command, InvalidArgumentError, Option } from 'commander';
import { openEngine } from '../../engine/connect.js';
import { resolveRegistryAuth } from '../../engine/auth.js';
import { EXIT } from '../../errors.js';
import { drill, type DrillReport } from '../../ops/drill.js';
import { readTarget } from '../../store/registry.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { resticSource } from './restic.js';
import { setExit, type Deps } from '../program.js';
import { errorJson, portFromDrill } from '../json.js';
import { createProgress } from '../render.js';
import { ALLOW_HELP, loadTrust, TRUST_HELP } from '../signing.js';
import { parseAllow } from '../../plan/policy.js';
import { collect } from '../options.js';
import { notifying, notifyHelp } from '../notify.js';

interface DrillFlags {
  probe?: string;
  probeIn?: string;
  timeout: number;
  registryAuthFile?: string;
  trust?: string;
  allow?: string[];
  notifyUrl?: string;
}

export const DEFAULT_DRILL_TIMEOUT_S = 120;

function positiveSeconds(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) throw new InvalidArgumentError('expected a number of seconds > 0');
  return n;
}

const s = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
const indent = (text: string) =>
  text
    .replace(/\s+$/, '')
    .split('\n')
    .map((l) => `    | ${l}`)
    .join('\n');

/** The human report: one headline, then containers, probe, timings and what was left. */
export function drillText(r: DrillReport): string {
  const lines: string[] = [];
  lines.push(
    `drill ${r.id} of ${r.bundle} on ${r.engine}: ${r.ok ? 'PASS' : `FAIL: ${r.error?.message ?? 'unknown failure'}`}`,
  );
  for (const c of r.containers) {
    const ports = c.ports.length ? `, ports ${c.ports.map((p) => `${p.container} -> ${p.host}`).join(', ')}` : '';
    lines.push(
      `  ${c.name}: ${c.drillName} ${c.status}${c.exitCode !== undefined ? ` (exit code ${c.exitCode})` : ''}${ports}`,
    );
  }
  if (r.probe) {
    lines.push(
      `  probe in ${r.probe.container}: ${r.probe.exitCode === null ? 'did not finish' : `exit ${r.probe.exitCode}`} (${r.probe.attempts} attempt${r.probe.attempts === 1 ? '' : 's'})`,
    );
    if (!r.ok && r.probe.output.trim()) lines.push(indent(r.probe.output));
  }
  if (!r.ok)
    for (const c of r.containers) if (c.logs?.trim()) lines.push(`  last log lines of ${c.name}:`, indent(c.logs));
  const t = r.timings;
  lines.push(
    `  timings: restore ${s(t.restoreMs)}, start ${s(t.startMs)}, healthy ${s(t.healthyMs)}, probe ${s(t.probeMs)}, cleanup ${s(t.cleanupMs)}, total ${s(t.totalMs)}`,
  );
  lines.push(
    r.leftovers.length ? `  NOT removed: ${r.leftovers.join(', ')}` : '  everything the drill made was removed',
  );
  return lines.join('\n') + '\n';
}

/** `ferry --json drill` (docs/json.md, "drill"). */
export function drillJson(r: DrillReport): { ok: boolean } & Record<string, unknown> {
  return {
    ok: r.ok,
    bundle: r.bundle,
    engine: r.engine,
    id: r.id,
    containers: r.containers.map((c) => c.name),
    results: r.containers.map(({ name, ports, ...c }) => ({ container: name, ...c, ports: ports.map(portFromDrill) })),
    timings: r.timings,
    probe: r.probe ?? null,
    notes: r.notes,
    leftovers: r.leftovers,
    ...(r.error ? { error: errorJson(r.error) } : {}),
  };
}

export function drillCommand(program: Command, deps: Deps): Command {
  return new Command('drill')
    .description(
      'Test that a bundle really restores: restore it under temporary names next to the real service, start it, check it, remove it',
    )
    .argument('<bundle>', 'a bundle file, - for stdin, or restic:<repo>[#<snapshot id or container>]')
    .option('--trust <allowed_signers>', TRUST_HELP)
    .addOption(new Option('--allow <kinds>', ALLOW_HELP).argParser(collect))
    .option(
      '--probe <cmd>',
      'a shell command run inside the restored container (sh -c); the drill passes when it exits 0 (retried until --timeout)',
    )
    .option(
      '--probe-in <container>',
      'the container (its name in the bundle) the probe runs in (default: the first one started)',
    )
    .addOption(
      new Option('--timeout <seconds>', 'how long to wait, after the start, for healthchecks and the probe to pass')
        .default(DEFAULT_DRILL_TIMEOUT_S)
        .argParser(positiveSeconds),
    )
    .option('--registry-auth-file <path>', 'credentials for a bundle whose images are in a registry (as for restore)')
    .option('--notify-url <url>', notifyHelp('drill'))
    .addHelpText(
      'after',
      `
The copy runs beside the original: containers, named volumes and user-defined networks are
called ferry-drill-<id>-<name> and labelled io.ferry.drill=<id> (Compose labels emptied); host
ports become free ones the engine picks; static IPs and fixed subnets are dropped; the restart
policy is "no"; host paths are never written. Everything the drill made is removed at the end
(also on failure, timeout and SIGINT/SIGTERM), including the image it loaded unless it was
already on the engine.

Exit status 0 when the drill passes; 9 when the copy did not become healthy, exited, or the probe
failed or timed out; otherwise the code of what failed (7 damaged bundle, 4 engine, 130 interrupted).

Examples:
  ferry drill /backups/ferry-web-20261123T021500Z.tar
  ferry drill web.tar --probe 'wget -q -O - http://127.0.0.1:8080/health' --timeout 60
  ferry -H ssh://root@spare drill web.tar --json`,
    )
    .action(async (bundle: string, flags: DrillFlags) => {
      const g = program.opts<{ host?: string; json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const progress = createProgress({ quiet: !!g.quiet });
      await notifying(
        flags.notifyUrl,
        'drill',
        (m) => progress.warn(m),
        async () => {
          const trust = await loadTrust(flags.trust);
          const allow = parseAllow(flags.allow);
          const engine = await openEngine(g.host, { ssh: deps.ssh() });
          const transport = isResticLocation(bundle)
            ? await resticSource(bundle, deps, progress).catch((err: unknown) => {
                engine.close();
                throw err;
              })
            : readTarget(bundle, deps.stores);
          let report: DrillReport | undefined;
          try {
            report = await drill(
              engine,
              transport,
              {
                probe: flags.probe,
                probeIn: flags.probeIn,
                timeoutSeconds: flags.timeout,
                allow,
                registryAuth: (host) => resolveRegistryAuth(host, { authFile: flags.registryAuthFile }),
              },
              {
                progress,
                signal: deps.signal,
                passphrase: await deps.passphrase(),
                identities: await deps.identities(),
                ...(trust ? { trust } : {}),
                hostAccess: deps.hostAccess,
                debug: deps.debug,
              },
            );
          } finally {
            progress.done(!report?.ok);
            await transport.close().catch(() => {});
            engine.close();
          }
          // A bug: main prints it with its stack (the cleanup has run).
          if (report.error?.exitCode === EXIT.INTERNAL) throw report.error;
          const out = deps.io.stdout;
          if (g.json) deps.emit('drill', drillJson(report));
          else if (!g.quiet || !report.ok) out.write(drillText(report));
          if (report.error) {
            deps.io.stderr.write(`ferry: error: ${report.error.message}\n`);
            if (report.error.hint) deps.io.stderr.write(`ferry: hint: ${report.error.hint}\n`);
            setExit(program, report.error.exitCode);
          } else {
            setExit(program, 0);
          }
          return {
            ok: report.ok,
            summary: `drill of ${report.bundle} on ${report.engine}: ${report.ok ? `PASS in ${s(report.timings.totalMs)}` : `FAIL: ${report.error?.message ?? 'unknown failure'}`}`,
          };
        },
      );
    });
}
