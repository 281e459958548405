import { Command } from 'commander';
import { createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { catFile, parseVolumePath } from '../../ops/files.js';
import { readTarget } from '../../store/registry.js';
import { ConflictError, toFerryError } from '../../errors.js';
import { setExit, type Deps } from '../program.js';
import { loadTrust } from '../signing.js';
import { fileJson } from './ls.js';

export function catCommand(program: Command, deps: Deps): Command {
  return new Command('cat')
    .description('Write one file of a volume in a bundle to stdout (or -o), streaming')
    .argument('<bundle>', 'a bundle file, ssh://[user@]host[:port]/dir/x.tar or s3://bucket/prefix/x.tar')
    .argument('<volume:path>', 'the volume (its name in the bundle) and the path in it, e.g. web-data:/html/index.html')
    .option(
      '-o, --output-file <file>',
      'write the file here instead of stdout (never over an existing file unless --replace)',
    )
    .option('--replace', 'with -o: replace an existing file')
    .option(
      '--trust <allowed_signers>',
      'the bundle must be signed by a key this allowed_signers file allows (else FERRY_TRUST)',
    )
    .addHelpText(
      'after',
      `
The bundle is read once, start to end (decrypted and decompressed as it passes, nothing kept):
the file is written as soon as it is reached, and the run fails (exit 7) if the bundle then
turns out damaged, so trust what was written only when ferry cat exits 0. With -o, a failure
removes the partial file. A directory, a link or a special file is refused, saying what it is.
With --json, the result (path, size, mode, mtime) is printed only with -o; without it stdout
carries the file, and only a failure prints its JSON object.

Examples:
  ferry cat /backups/ferry-web-20261123T021500Z.tar web-data:/html/index.html
  ferry cat ssh://backup@vault/srv/backups/web.tar web-data:/conf/app.ini -o app.ini
  ferry ls web.tar --files --volume web-data       # which paths there are`,
    )
    .action(async (bundle: string, spec: string, flags: { outputFile?: string; replace?: boolean; trust?: string }) => {
      const g = program.opts<{ json?: boolean }>();
      deps.setJson(!!g.json);
      const where = parseVolumePath(spec);
      const trust = await loadTrust(flags.trust);
      const transport = readTarget(bundle, deps.stores);
      if (flags.outputFile && !flags.replace && (await stat(flags.outputFile).catch(() => undefined)))
        throw new ConflictError(
          `-o ${flags.outputFile}: the file exists`,
          'choose another name, or add --replace to replace it',
        );
      // Written beside it and renamed into place once the bundle checked out: never half a file.
      const part = flags.outputFile ? `${flags.outputFile}.ferry-${process.pid}.part` : undefined;
      const out = part ? createWriteStream(part, { flags: 'wx', mode: 0o600 }) : deps.io.stdout;
      try {
        if (part)
          await once(out, 'open').catch((err: unknown) => {
            throw toFerryError(err);
          });
        const r = await catFile(
          transport,
          { passphrase: await deps.passphrase(), signal: deps.signal, ...(trust ? { trust } : {}) },
          where,
          out,
        );
        if (part && flags.outputFile) {
          (out as NodeJS.WritableStream).end();
          await once(out, 'close');
          await rename(part, flags.outputFile);
          if (g.json)
            deps.emit('cat', {
              ok: true,
              bundle: r.location,
              output: flags.outputFile,
              bytes: r.bytes,
              file: fileJson(r.entry),
            });
        }
      } catch (err) {
        if (part) {
          (out as NodeJS.WritableStream & { destroy(): void }).destroy();
          await rm(part, { force: true }).catch(() => {});
        }
        throw err;
      } finally {
        await transport.close().catch(() => {});
      }
      setExit(program, 0);
    });
}
