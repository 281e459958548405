/**
 * `backup -o` on this host, checked before anything is paused: a path ending in .tar is a bundle
 * file (never overwritten unless --force), anything else a directory that must exist (--mkdir
 * creates it, but never a missing parent: an unmounted backup disk must not silently fill the
 * root filesystem). URLs (ssh://, ...) and `-` are their store's business.
 */
import { mkdir, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { ConflictError, NotFoundError, toFerryError, UsageError } from '../errors.js';

export interface OutputFlags {
  mkdir?: boolean;
  force?: boolean;
}

export type OutputKind = 'stdout' | 'url' | 'file' | 'directory';

/** What a -o value names, from its spelling alone. Pure. */
export function outputKind(output: string): OutputKind {
  if (output === '-') return 'stdout';
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(output)) return 'url';
  if (output.startsWith('restic:')) return 'url'; // a restic repository, in restic's own spelling
  return output.endsWith('.tar') ? 'file' : 'directory';
}

async function statOf(p: string): Promise<Stats | undefined> {
  try {
    return await stat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      return undefined;
    throw toFerryError(err);
  }
}

const NO_PARENTS =
  'ferry never creates missing parent directories, so that a backup disk that is not mounted is not filled on the root filesystem instead';

/**
 * Check (and with --mkdir, create) where a local -o points. Throws a UsageError (exit 2), a
 * NotFoundError (exit 5) or a ConflictError (exit 6) naming the path and what to do.
 */
export async function checkOutput(output: string, flags: OutputFlags): Promise<void> {
  const kind = outputKind(output);
  if (kind === 'stdout' || kind === 'url') return;
  const abs = path.resolve(output);
  if (kind === 'directory' && /\.(tar\.(gz|zst|zstd|xz|bz2)|tgz)$/.test(output))
    throw new UsageError(
      `-o ${output}: a bundle is a plain .tar (its members are compressed inside, see --compress)`,
      `name the file ${output.replace(/\.(tar\.[a-z0-9]+|tgz)$/, '.tar')}`,
    );
  if (kind === 'file') {
    const parent = await statOf(path.dirname(abs));
    if (!parent?.isDirectory())
      throw new NotFoundError(
        `-o ${output}: the directory ${path.dirname(abs)} does not exist`,
        `create it (or mount the disk it is on) first; ${NO_PARENTS}`,
      );
    const existing = await statOf(abs);
    if (existing?.isDirectory())
      throw new UsageError(`-o ${output} is a directory, not a bundle file`, 'remove the .tar ending to write into it');
    if (existing && !flags.force)
      throw new ConflictError(
        `-o ${output}: the bundle exists; ferry does not overwrite a bundle`,
        'choose another name, give -o the directory (each backup gets a new name there), or add --force to replace it',
      );
    return;
  }
  const st = await statOf(abs);
  if (st?.isDirectory()) return;
  if (st)
    throw new UsageError(
      `-o ${output} exists and is not a directory`,
      'a bundle file must end in .tar; a store is a directory',
    );
  if (!flags.mkdir)
    throw new NotFoundError(
      `-o ${output}: no such directory`,
      `create it first (or mount the disk it is on), or add --mkdir to create it; a bundle file must end in .tar`,
    );
  const parent = await statOf(path.dirname(abs));
  if (!parent?.isDirectory())
    throw new NotFoundError(
      `-o ${output}: --mkdir creates ${abs} but its parent ${path.dirname(abs)} does not exist`,
      `create the parent (or mount the disk it is on) first; ${NO_PARENTS}`,
    );
  try {
    await mkdir(abs, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw toFerryError(err);
  }
}
