import { Command, Option } from 'commander';
import { defaultCodec, type Codec } from '../../bundle/codec.js';
import { openEngine } from '../../engine/connect.js';
import { UsageError } from '../../errors.js';
import { backup } from '../../pipeline/backup.js';
import type { Consistency } from '../../pipeline/capture.js';
import { resolveTransport } from '../../transport/resolve.js';
import { setExit, type Deps } from '../program.js';
import { createProgress, humanBytes } from '../render.js';
import { choice, codecOption } from '../options.js';

interface BackupFlags {
  output: string;
  all?: boolean;
  consistency: Consistency;
  compress?: Codec;
  includeBinds?: boolean;
}

export function backupCommand(program: Command, deps: Deps): Command {
  return new Command('backup')
    .description('Back up containers (configuration, committed writable layer, volume data) into one bundle')
    .argument('[container...]', 'containers to back up (name or id)')
    .requiredOption('-o, --output <target>', 'a directory (a bundle name is generated), a file ending in .tar, or - for stdout')
    .option('--all', 'back up every running container')
    .addOption(new Option('--consistency <mode>', 'pause: pause while committing and reading volumes; stop: stop and start again; none').default('pause').argParser(choice(['pause', 'stop', 'none'] as const)))
    .addOption(new Option('--compress <codec>', 'compression of volume data (the image uses gzip unless none): zstd, gzip, none').argParser(codecOption))
    .option('--include-binds', 'also copy the contents of bind mounts (they are always recorded)')
    .addHelpText('after', `
Examples:
  ferry backup web -o /backups
  ferry backup web db -o /backups/app.tar --consistency stop
  ferry backup --all -o /backups --compress gzip
  ferry backup web -o - | ssh host 'cat > web.tar'`)
    .action(async (containers: string[], flags: BackupFlags) => {
      const g = program.opts<{ host?: string; json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      const toStdout = flags.output === '-';
      const progress = createProgress({ quiet: !!g.quiet });
      const engine = await openEngine(g.host, { ssh: deps.ssh() });
      try {
        let names = containers;
        if (flags.all) {
          if (containers.length) throw new UsageError('give container names or --all, not both');
          names = (await engine.listContainers(false)).filter((c) => !c.Labels?.['io.ferry.managed']).map((c) => c.Names[0]!.replace(/^\//, ''));
          if (!names.length) throw new UsageError('--all: no running containers');
        }
        if (!names.length) throw new UsageError('name at least one container, or use --all');
        const transport = resolveTransport(flags.output, { ssh: deps.ssh });
        const res = await backup(engine, transport, { containers: names, consistency: flags.consistency, codec: flags.compress ?? defaultCodec(), includeBinds: !!flags.includeBinds }, { progress, signal: deps.signal });
        progress.done();
        const out = toStdout ? deps.io.stderr : deps.io.stdout;
        if (g.json) {
          out.write(JSON.stringify({ ok: true, bundle: res.location, containers: res.containers, volumes: res.volumes, bytes: res.bytes, durationMs: res.durationMs }) + '\n');
        } else if (!g.quiet) {
          out.write(`backed up ${res.containers.join(', ')} (${res.volumes.length} volume${res.volumes.length === 1 ? '' : 's'}) to ${res.location}: ${humanBytes(res.bytes)} in ${(res.durationMs / 1000).toFixed(1)}s\n`);
        }
        setExit(program, 0);
      } finally {
        progress.done();
        engine.close();
      }
    });
}
