import { Command, Option } from 'commander';
import { openEngine } from '../../engine/connect.js';
import { resolveRegistryAuth } from '../../engine/auth.js';
import { planOverwrites, restore } from '../../ops/restore.js';
import type { OnConflict } from '../../ops/steps/recreate.js';
import { readTarget } from '../../store/registry.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { resticRestoreSource } from './restic.js';
import { setExit, type Deps } from '../program.js';
import { portFromPlan } from '../json.js';
import { createProgress } from '../render.js';
import { ALLOW_HELP, loadTrust, TRUST_HELP } from '../signing.js';
import { allowFor, parseAllow } from '../../plan/policy.js';
import { addRemapOptions, choice, collect } from '../options.js';
import { describeRemap, parseRemap, remapRewrite, type RemapFlags } from '../../plan/remap.js';

interface RestoreFlags extends RemapFlags {
  name?: string;
  only?: string[];
  start: boolean;
  dryRun?: boolean;
  onConflict: OnConflict;
  restoreBinds?: boolean;
  registryAuthFile?: string;
  trust?: string;
  allow?: string[];
}

export function restoreCommand(program: Command, deps: Deps): Command {
  const cmd = new Command('restore')
    .description('Restore the containers of a bundle: image, volumes, networks and the container with its settings')
    .argument('<bundle>', 'a bundle file, - for stdin, or restic:<repo>[#<snapshot id or container>]')
    .option('--name <name>', 'restore the (single) container under another name')
    .addOption(
      new Option(
        '--only <container|volume:name>',
        'restore only this container of the bundle, with the volumes and networks it uses; volume:<name>: only that volume, no container (repeatable)',
      ).argParser(collect),
    )
    .option('--no-start', 'create the containers but do not start them')
    .option('--dry-run', 'print what would be done; change nothing')
    .addOption(
      new Option(
        '--on-conflict <policy>',
        'when a container or volume of the same name exists: fail, replace (kept intact until the new container runs, then replaced), rename (restore beside it)',
      )
        .default('fail')
        .argParser(choice(['fail', 'replace', 'rename'] as const)),
    )
    .option('--restore-binds', 'write bind-mount data in the bundle back to its host paths')
    .option('--trust <allowed_signers>', TRUST_HELP)
    .addOption(new Option('--allow <kinds>', ALLOW_HELP).argParser(collect))
    .option(
      '--registry-auth-file <path>',
      'credentials for a bundle whose images are in a registry: a JSON file {"username","password"} or a docker config.json (default: the docker config)',
    );
  return addRemapOptions(cmd)
    .addHelpText(
      'after',
      `
Examples:
  ferry restore /backups/ferry-web-20261123T021500Z.tar
  ferry restore web.tar --name web-copy --no-start
  ferry restore web.tar --dry-run
  ferry restore stack.tar --only db --on-conflict replace
  ferry restore web.tar --only volume:web-data --map-volume web-data=web-data-copy
  ferry restore web.tar --map-bind /srv/web=/mnt/disk2/web --map-port 8080=18080
  ssh host 'cat web.tar' | ferry restore -`,
    )
    .action(async (bundle: string, flags: RestoreFlags) => {
      const g = program.opts<{ host?: string; json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const remap = parseRemap(flags); // a malformed mapping fails before anything is opened
      const trust = await loadTrust(flags.trust);
      const allow = parseAllow(flags.allow);
      const progress = createProgress({ quiet: !!g.quiet });
      if (remap) for (const line of describeRemap(remap)) progress.info(`map ${line}`);
      const engine = await openEngine(g.host, { ssh: deps.ssh() });
      try {
        const restic = isResticLocation(bundle) ? await resticRestoreSource(bundle, deps, progress) : undefined;
        const res = await restore(
          engine,
          restic?.transport ?? readTarget(bundle, deps.stores),
          {
            ...(restic ? { direct: restic.direct } : {}),
            name: flags.name,
            only: flags.only,
            start: flags.start,
            dryRun: !!flags.dryRun,
            onConflict: flags.onConflict,
            restoreBinds: !!flags.restoreBinds,
            registryAuth: (host) => resolveRegistryAuth(host, { authFile: flags.registryAuthFile }),
            allow,
            ...(remap ? { rewrite: (m) => remapRewrite(remap, m) } : {}),
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
        progress.done();
        const out = deps.io.stdout;
        if (g.json) {
          deps.emit('restore', {
            ok: true,
            dryRun: res.dryRun,
            bundle: res.location,
            plan: {
              ...res.plan,
              containers: res.plan.containers.map((c) => ({ ...c, ports: c.ports.map(portFromPlan) })),
            },
            containers: res.containers.map((c) => c.name),
            results: res.containers.map(({ name, ...c }) => ({ container: name, ...c })),
            durationMs: res.durationMs,
            dataPaths: res.dataPaths,
          });
        } else if (res.dryRun) {
          const p = res.plan;
          out.write(`dry run: nothing was changed. Restoring ${res.location} would:\n`);
          if (planOverwrites(p).length)
            out.write(
              `  first read and check the whole bundle (${res.location === 'stdin' ? 'not possible from a pipe: it would go on unchecked' : 'a damaged one changes nothing'})\n`,
            );
          for (const n of p.networks) out.write(`  ${n.exists ? 'reuse' : 'create'} network ${n.name}\n`);
          for (const v of p.volumes)
            out.write(
              `  ${v.replace ? 'replace' : 'create'} volume ${v.to}${v.to !== v.from ? ` (from ${v.from})` : ''} and fill it\n`,
            );
          for (const c of p.containers) {
            out.write(
              `  ${c.pull ? `pull image ${c.image} from ${c.pull}` : `load image ${c.image}`}\n  ${c.replace ? 'replace' : 'create'} container ${c.to}${c.to !== c.from ? ` (from ${c.from})` : ''}${c.start ? ' and start it' : ''}\n`,
            );
            for (const port of c.ports) out.write(`    publishing ${port}\n`);
          }
          for (const b of p.binds) out.write(`  ${b.restore ? 'write' : 'skip'} bind data for ${b.hostPath}\n`);
          const refused = p.hostAccess.filter((h) => !h.allowed);
          if (p.hostAccess.length) out.write('host access (settings that give a container the host):\n');
          for (const h of p.hostAccess)
            out.write(`  ${h.container}: ${h.detail}  [${h.kind}: ${h.allowed ? 'allowed' : 'REFUSED'}]\n`);
          if (refused.length)
            out.write(
              `the restore would be refused (exit 12): allow with --allow ${allowFor(refused)}, or restore a bundle signed by a trusted key (--trust)\n`,
            );
        } else if (!g.quiet) {
          if (!res.containers.length)
            for (const v of res.plan.volumes)
              out.write(`restored volume ${v.to}${v.to !== v.from ? ` (from ${v.from})` : ''}\n`);
          for (const c of res.containers)
            out.write(
              `restored ${c.name} (${c.id.slice(0, 12)})${c.exitCode !== undefined ? `, started but exited (code ${c.exitCode})` : c.started ? ', running' : ', created'}\n`,
            );
        }
        setExit(program, 0);
      } finally {
        progress.done(true); // after a success, done() was called first: this one is a failure's
        engine.close();
      }
    });
}
