/** Argument parsers for commander: they throw InvalidArgumentError, which commander reports as usage errors. */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { CODECS, hasZstd, type Codec } from '../bundle/codec.js';
import { normalizeExclude } from '../data/excludes.js';
import { parseResticOptions } from '../store/restic/layout.js';

export function choice<T extends string>(values: readonly T[]) {
  return (v: string): T => {
    if (!values.includes(v as T)) throw new InvalidArgumentError(`expected one of: ${values.join(', ')}`);
    return v as T;
  };
}

export function codecOption(v: string): Codec {
  const c = choice(CODECS)(v);
  if (c === 'zstd' && !hasZstd())
    throw new InvalidArgumentError('zstd needs the zstd command (apt-get install zstd); or use gzip');
  return c;
}

/** --exclude-path (backup, migrate): repeatable, each pattern checked (data/excludes.ts). */
export function excludePathOption(): Option {
  return new Option(
    '--exclude-path <glob>',
    "leave out of every volume the paths that match, relative to the volume's root: * ? [...] never match /, a directory takes its content (repeatable; also each container's ferry.exclude-paths label)",
  ).argParser((v: string, previous: string[] | undefined) => {
    try {
      return [...(previous ?? []), normalizeExclude(v, '--exclude-path')];
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  });
}

/**
 * --restic-option (global): restic's own `-o key=value`, repeatable; one value may hold several,
 * one per line (so that FERRY_RESTIC_OPTION alone can give more than one).
 */
export function resticOption(): Option {
  return new Option(
    '--restic-option <key=value>',
    "an option for restic (its -o), for restic:<repo> locations, e.g. sftp.command='ssh -p 2222 backup@nas -s sftp' (repeatable; FERRY_RESTIC_OPTION: one per line)",
  ).argParser((v: string, previous: string[] | undefined) => {
    let opts: string[];
    try {
      opts = parseResticOptions(v);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
    if (!opts.length) throw new InvalidArgumentError('expected key=value');
    return [...(previous ?? []), ...opts];
  });
}

/** A repeatable option: every occurrence is kept, in order. */
export function collect(v: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), v];
}

/** --map-volume, --map-bind, --map-port, --map-network (restore and migrate; see plan/remap.ts). */
export function addRemapOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--map-volume <old=new>', 'restore the named volume OLD as NEW (mounts follow; repeatable)').argParser(
        collect,
      ),
    )
    .addOption(
      new Option(
        '--map-bind <old=new>',
        'bind mounts at or under host path OLD use NEW instead (repeatable)',
      ).argParser(collect),
    )
    .addOption(
      new Option(
        '--map-port <old=new>',
        'publish on host port NEW ([ip:]port) what was published on OLD (repeatable)',
      ).argParser(collect),
    )
    .addOption(
      new Option(
        '--map-network <old=new>',
        'the user-defined network OLD becomes NEW (an existing NEW is joined; repeatable)',
      ).argParser(collect),
    );
}

/** --stop-timeout: whole seconds (the Engine API takes an integer), 0 or more. */
export function stopTimeoutOption(v: string): number {
  if (!/^\d{1,6}$/.test(v)) throw new InvalidArgumentError('expected whole seconds (0 or more)');
  return Number(v);
}

export const STOP_TIMEOUT_HELP =
  'seconds a container gets to stop cleanly before the engine kills it (default: its own stop timeout, 10 unless set); a kill is reported';
