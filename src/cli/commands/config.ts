import { Command } from 'commander';
import {
  applySettings,
  checkTables,
  commandTable,
  defaultConfigPaths,
  envName,
  loadConfig,
  type Setting,
} from '../config.js';
import { UsageError } from '../../errors.js';
import { setExit, type Deps } from '../program.js';
import { table } from './ls.js';

/** `ferry config [command]`: the settings that the file and the environment give, and where each comes from. */
export function configCommand(program: Command, deps: Deps): Command {
  return new Command('config')
    .description('Show the settings the config file and FERRY_* variables give each command (flags > env > file)')
    .argument('[command]', 'only this command (and the global options)')
    .addHelpText(
      'after',
      `
The file is --config, else FERRY_CONFIG, else ${defaultConfigPaths(process.env).join(', else ')}
(TOML: global options at the top, a [command] table each; see docs/commands.md, "Configuration").
Every option also has a variable: FERRY_ and its long name in capitals (${envName('--keep-daily')}).

Examples:
  ferry config
  ferry --config /etc/ferry/nightly.toml config backup
  FERRY_COMPRESS=gzip ferry --json config backup`,
    )
    .action(async (only: string | undefined) => {
      const g = program.opts<{ json?: boolean; config?: string }>();
      deps.setJson(!!g.json);
      const names = program.commands.map((c) => c.name()).filter((n) => n !== 'config');
      if (only && !names.includes(only))
        throw new UsageError(`ferry has no command ${only}`, `one of: ${names.join(', ')}`);
      const named = program.getOptionValueSource('config') === 'cli' ? g.config : process.env.FERRY_CONFIG || undefined;
      const file = await loadConfig(named, process.env);
      checkTables(
        file,
        program.commands.map((c) => c.name()),
      );
      const settings: Setting[] = applySettings(program, file?.values, process.env, { file: file?.path, command: '' });
      for (const c of program.commands)
        if (c.name() !== 'config' && (!only || c.name() === only))
          settings.push(
            ...applySettings(c, commandTable(file, c.name()), process.env, { file: file?.path, command: c.name() }),
          );
      if (g.json) deps.emit('config', { ok: true, file: file?.path ?? null, settings });
      else {
        const out = deps.io.stdout;
        out.write(
          file
            ? `config file: ${file.path}\n`
            : `config file: none (looked for ${defaultConfigPaths(process.env).join(', ')})\n`,
        );
        if (!settings.length) out.write('no settings from the file or the environment: each option has its default\n');
        else
          out.write(
            table([
              ['COMMAND', 'OPTION', 'VALUE', 'FROM'],
              ...settings.map((s) => [
                s.command || '(global)',
                `--${s.option}`,
                Array.isArray(s.value) ? s.value.join(', ') : String(s.value),
                s.source === 'env' ? envName(s.option) : 'file',
              ]),
            ]),
          );
      }
      setExit(program, 0);
    });
}
