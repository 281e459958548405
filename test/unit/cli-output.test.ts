/** backup -o on this host (src/cli/output.ts): what is a file, what a directory, and what is refused. */
import { existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkOutput, outputKind } from '../../src/cli/output.js';
import { EXIT, FerryError } from '../../src/errors.js';

async function refusal(p: Promise<unknown>): Promise<FerryError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    return err as FerryError;
  }
  throw new Error('expected a refusal');
}

describe('-o', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-out-'));

  it('is a file when it ends in .tar, stdout for -, a URL for a scheme, else a directory', () => {
    expect(outputKind('/b/web.tar')).toBe('file');
    expect(outputKind('-')).toBe('stdout');
    expect(outputKind('ssh://host/srv')).toBe('url');
    expect(outputKind('s3://bucket/x')).toBe('url');
    expect(outputKind('/backups')).toBe('directory');
    expect(outputKind('backups.tar.d')).toBe('directory');
  });

  it('an existing directory is taken; a missing one is refused (exit 5) unless --mkdir', async () => {
    await checkOutput(dir, {});
    const missing = path.join(dir, 'new');
    const e = await refusal(checkOutput(missing, {}));
    expect(e.exitCode).toBe(EXIT.NOT_FOUND);
    expect(e.hint).toMatch(/--mkdir/);
    expect(existsSync(missing)).toBe(false);
    await checkOutput(missing, { mkdir: true });
    expect(statSync(missing).isDirectory()).toBe(true);
    await checkOutput(missing, { mkdir: true }); // already there: fine
  });

  it('never creates a missing parent: an unmounted disk is not filled on the root filesystem', async () => {
    const deep = path.join(dir, 'unmounted', 'ferry');
    const e = await refusal(checkOutput(deep, { mkdir: true }));
    expect(e.exitCode).toBe(EXIT.NOT_FOUND);
    expect(e.message).toContain(path.join(dir, 'unmounted'));
    expect(existsSync(path.join(dir, 'unmounted'))).toBe(false);
    const file = await refusal(checkOutput(path.join(dir, 'unmounted', 'web.tar'), { force: true }));
    expect(file.exitCode).toBe(EXIT.NOT_FOUND);
    expect(existsSync(path.join(dir, 'unmounted'))).toBe(false);
  });

  it('an existing bundle is not overwritten unless --force (exit 6)', async () => {
    const b = path.join(dir, 'web.tar');
    await checkOutput(b, {}); // does not exist yet
    writeFileSync(b, 'x');
    const e = await refusal(checkOutput(b, {}));
    expect(e.exitCode).toBe(EXIT.CONFLICT);
    expect(e.hint).toMatch(/--force/);
    await checkOutput(b, { force: true });
  });

  it('a file where a directory is meant, a directory named .tar and a codec suffix are usage errors', async () => {
    writeFileSync(path.join(dir, 'plain'), 'x');
    expect((await refusal(checkOutput(path.join(dir, 'plain'), { mkdir: true }))).exitCode).toBe(EXIT.USAGE);
    mkdirSync(path.join(dir, 'd.tar'));
    expect((await refusal(checkOutput(path.join(dir, 'd.tar'), { force: true }))).exitCode).toBe(EXIT.USAGE);
    const z = await refusal(checkOutput(path.join(dir, 'web.tar.zst'), { mkdir: true }));
    expect(z.exitCode).toBe(EXIT.USAGE);
    expect(z.hint).toContain('web.tar');
    expect(existsSync(path.join(dir, 'web.tar.zst'))).toBe(false);
  });
});

describe('--filter', () => {
  it('label=<key>, label=<key>=<value> and name=<glob>, every one must match', async () => {
    const { filterOption, matches } = await import('../../src/cli/select.js');
    const f = (...v: string[]) =>
      v.reduce<ReturnType<typeof filterOption> | undefined>((p, x) => filterOption(x, p), undefined);
    expect(matches(f('label=backup'), 'web', { backup: '' })).toBe(true);
    expect(matches(f('label=backup'), 'web', {})).toBe(false);
    expect(matches(f('label=backup=nightly'), 'web', { backup: 'nightly' })).toBe(true);
    expect(matches(f('label=backup=nightly'), 'web', { backup: 'weekly' })).toBe(false);
    expect(matches(f('label=a=b=c'), 'web', { a: 'b=c' })).toBe(true);
    expect(matches(f('name=web-*'), 'web-1', {})).toBe(true);
    expect(matches(f('name=web-*'), 'my-web-1', {})).toBe(false);
    expect(matches(f('name=w?b'), 'web', {})).toBe(true);
    expect(matches(f('name=a.b'), 'axb', {})).toBe(false);
    expect(matches(f('name=web*', 'label=backup'), 'web', {})).toBe(false);
    expect(matches(undefined, 'web', undefined)).toBe(true);
    expect(() => filterOption('colour=red', undefined)).toThrow(/label=<key>/);
    expect(() => filterOption('label==x', undefined)).toThrow();
  });
});
