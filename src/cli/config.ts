/**
 * Settings for cron and scripts without long command lines: a TOML file and FERRY_* variables
 * for every option, applied before a command runs. Precedence: the command line, then the
 * environment, then the file, then the option's default (docs/commands.md, "Configuration").
 *
 *   # ~/.config/ferry/ferry.toml (or /etc/ferry/ferry.toml, --config, FERRY_CONFIG)
 *   host = "unix:///var/run/docker.sock"   # global options at the top
 *   [backup]                               # a table per command
 *   output = "/backups"
 *   filter = ["label=backup=nightly"]      # a repeatable option: a list
 *   [prune]
 *   keep-daily = 7
 *
 * The variable of an option is FERRY_ and its long name in capitals, `-` as `_`: FERRY_OUTPUT,
 * FERRY_KEEP_DAILY, FERRY_NO_START=1. Per-container settings stay in labels (ferry.*).
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, type Command, type Option } from 'commander';
import { parse as parseToml } from 'smol-toml';
import { UsageError } from '../errors.js';

/** Options that are not settings: they steer commander or name the file itself. */
const NOT_SETTINGS = new Set(['help', 'version', 'config']);

export type Env = Record<string, string | undefined>;

export interface ConfigFile {
  path: string;
  /** Top-level keys (global options) and one table per command. */
  values: Record<string, unknown>;
}

/** Where a config file is looked for when none is named: the XDG place, then /etc. Pure. */
export function defaultConfigPaths(env: Env): string[] {
  const xdg = env.XDG_CONFIG_HOME || path.join(env.HOME || homedir(), '.config');
  return [path.join(xdg, 'ferry', 'ferry.toml'), '/etc/ferry/ferry.toml'];
}

/** The variable of an option: `--keep-daily` -> FERRY_KEEP_DAILY. Pure. */
export function envName(long: string): string {
  return `FERRY_${long.replace(/^--/, '').replace(/-/g, '_').toUpperCase()}`;
}

/**
 * The config file: the one named (--config, else FERRY_CONFIG), which must exist, else the
 * first of the default places that exists, else none.
 */
export async function loadConfig(named: string | undefined, env: Env): Promise<ConfigFile | undefined> {
  const candidates = named ? [named] : defaultConfigPaths(env);
  for (const p of candidates) {
    let text: string;
    try {
      text = await readFile(p, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!named && (code === 'ENOENT' || code === 'ENOTDIR')) continue;
      throw new UsageError(
        `cannot read the config file ${p}: ${code ?? (err as Error).message}`,
        named ? 'check --config (or FERRY_CONFIG)' : `fix its permissions, or move it away`,
      );
    }
    try {
      return { path: p, values: parseToml(text) };
    } catch (err) {
      throw new UsageError(
        `the config file ${p} is not valid TOML: ${(err as Error).message.split('\n')[0]}`,
        'see docs/commands.md, "Configuration"',
      );
    }
  }
  return undefined;
}

/** Where a setting came from, as `ferry config` shows it. */
export type SettingSource = 'file' | 'env';

export interface Setting {
  /** The command, or "" for a global option. */
  command: string;
  /** The option's long name without dashes (`keep-daily`). */
  option: string;
  /** As written: the variable's text, or the file's value (a string, number, boolean or list). */
  value: string | number | boolean | (string | number)[];
  source: SettingSource;
}

const isTable = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

/** One value of a setting through the option's own parser (a usage error names where it came from). */
function parseValue(option: Option, raw: unknown, where: string): unknown {
  const key = option.long!.slice(2);
  if (option.isBoolean()) {
    let on: boolean;
    if (typeof raw === 'boolean') on = raw;
    else if (typeof raw === 'string' && /^(1|true|yes|on)$/i.test(raw)) on = true;
    else if (typeof raw === 'string' && /^(0|false|no|off|)$/i.test(raw)) on = false;
    else throw new UsageError(`${where}: ${key} is a switch: give true or false`);
    return option.negate ? !on : on;
  }
  const list = Array.isArray(raw) ? raw : [raw];
  let acc: unknown = undefined;
  for (const item of list) {
    if (typeof item !== 'string' && typeof item !== 'number')
      throw new UsageError(
        `${where}: ${key} takes ${Array.isArray(raw) ? 'a list of strings' : 'a string or a number'}`,
      );
    try {
      acc = option.parseArg ? option.parseArg(String(item), acc) : String(item);
    } catch (err) {
      if (err instanceof InvalidArgumentError) throw new UsageError(`${where}: ${key} ${String(item)}: ${err.message}`);
      throw err;
    }
  }
  return acc;
}

/**
 * Give `cmd`'s options that the command line left unset their value from the environment, else
 * from `table` (its part of the config file). Returns what was applied. Unknown keys in the table
 * are usage errors (a misspelt setting must not be silently ignored).
 */
export function applySettings(
  cmd: Command,
  table: Record<string, unknown> | undefined,
  env: Env,
  where: { file?: string; command: string },
): Setting[] {
  const options = cmd.options.filter((o) => o.long && !NOT_SETTINGS.has(o.long.slice(2)));
  const byKey = new Map(options.map((o) => [o.long!.slice(2), o]));
  const section = where.command ? `[${where.command}]` : 'the top level';
  for (const [k, v] of Object.entries(table ?? {})) {
    if (!where.command && isTable(v)) continue; // a command's table
    if (!byKey.has(k))
      throw new UsageError(
        `the config file ${where.file}: ${section} has no setting ${k}`,
        `the settings there are the long options of ${where.command ? `ferry ${where.command}` : 'ferry (global options)'}: ${[...byKey.keys()].join(', ')}`,
      );
  }
  const applied: Setting[] = [];
  for (const [key, option] of byKey) {
    const attr = option.attributeName();
    if (cmd.getOptionValueSource(attr) === 'cli') continue;
    const name = envName(key);
    const fromEnv = env[name];
    if (fromEnv !== undefined) {
      const value = parseValue(option, fromEnv, `environment variable ${name}`);
      cmd.setOptionValueWithSource(attr, value, 'env');
      applied.push({ command: where.command, option: key, value: fromEnv, source: 'env' });
    } else if (table && key in table) {
      const value = parseValue(option, table[key], `the config file ${where.file}, ${section}`);
      cmd.setOptionValueWithSource(attr, value, 'config');
      applied.push({ command: where.command, option: key, value: table[key] as Setting['value'], source: 'file' });
    }
  }
  return applied;
}

/** The table of a command in the file (none: undefined); a key that is not a table is an error. */
export function commandTable(file: ConfigFile | undefined, command: string): Record<string, unknown> | undefined {
  const t = file?.values[command];
  if (t === undefined) return undefined;
  if (!isTable(t)) throw new UsageError(`the config file ${file!.path}: ${command} must be a table ([${command}])`);
  return t;
}

/** Tables in the file that name no command: a misspelt [bakup] must not be ignored. */
export function checkTables(file: ConfigFile | undefined, commands: string[]): void {
  for (const [k, v] of Object.entries(file?.values ?? {}))
    if (isTable(v) && !commands.includes(k))
      throw new UsageError(
        `the config file ${file!.path}: [${k}] is not a ferry command`,
        `the tables are: ${commands.map((c) => `[${c}]`).join(', ')}`,
      );
}

/**
 * Apply the file and the environment to the global options and to the command about to run
 * (commander's preAction hook). The file is --config, else FERRY_CONFIG, else the default places.
 */
export async function applyConfig(program: Command, command: Command, env: Env): Promise<ConfigFile | undefined> {
  const named =
    program.getOptionValueSource('config') === 'cli'
      ? program.opts<{ config?: string }>().config
      : env.FERRY_CONFIG || undefined;
  const file = await loadConfig(named, env);
  checkTables(
    file,
    program.commands.map((c) => c.name()),
  );
  applySettings(program, file?.values, env, { file: file?.path, command: '' });
  if (command !== program)
    applySettings(command, commandTable(file, command.name()), env, { file: file?.path, command: command.name() });
  return file;
}
