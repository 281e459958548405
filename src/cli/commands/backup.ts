import { Command, Option } from 'commander';
import { defaultCodec, type Codec } from '../../bundle/codec.js';
import { openEngine } from '../../engine/connect.js';
import { parseRegistryOption, resolveRegistryAuth } from '../../engine/auth.js';
import { BundleError, EXIT, FerryError, NotFoundError, PartialError, toFerryError, UsageError } from '../../errors.js';
import { errorJson, type JsonError } from '../json.js';
import { notifying, notifyHelp } from '../notify.js';
import { backup } from '../../ops/backup.js';
import { projectContainers, type Consistency } from '../../ops/steps/capture.js';
import { writeTarget } from '../../store/registry.js';
import { isResticLocation } from '../../store/restic/layout.js';
import { backupToRestic } from './restic.js';
import { DEFAULT_LOCK_TIMEOUT_S } from '../../store/lock.js';
import { badMembers, verifyOrQuarantine } from '../../ops/verify.js';
import { checkShrinkage, type Shrunk } from '../../plan/shrink.js';
import { Catalog } from '../../store/catalog.js';
import path from 'node:path';
import { secondsOption } from './prune.js';
import { verifyText } from './verify.js';
import { setExit, type Deps } from '../program.js';
import { createProgress, humanBytes } from '../render.js';
import { checkOutput, type OutputFlags } from '../output.js';
import { backupPlan, backupPlanText, filterOption, matches, type ContainerFilter } from '../select.js';
import { composeProject, inspectRefs, referenceGroups } from '../../model/spec.js';
import { loadSigner, SIGN_KEY_HELP } from '../signing.js';
import { describeKey } from '../../bundle/trust.js';
import { checkRecipient, parseRecipients } from '../../bundle/age.js';
import { readFile } from 'node:fs/promises';
import { choice, codecOption, collect, excludePathOption, STOP_TIMEOUT_HELP, stopTimeoutOption } from '../options.js';

interface BackupFlags extends OutputFlags {
  output?: string;
  filter?: ContainerFilter[];
  dryRun?: boolean;
  stopTimeout?: number;
  wait?: number;
  preExec?: string;
  postExec?: string;
  notifyUrl?: string;
  encrypt?: boolean;
  recipient: string[];
  recipientsFile: string[];
  all?: boolean;
  project?: string[];
  together?: boolean;
  consistency?: Consistency;
  compress?: Codec;
  includeBinds?: boolean;
  verify?: boolean;
  lockTimeout: number;
  imageMode: 'archive' | 'push';
  registry?: string;
  registryAuthFile?: string;
  signKey?: string;
  excludePath?: string[];
  precopy?: boolean;
}

export function backupCommand(program: Command, deps: Deps): Command {
  return new Command('backup')
    .description('Back up containers (configuration, committed writable layer, volume data) into one bundle')
    .argument('[container...]', 'containers to back up (name or id)')
    .option(
      '-o, --output <target>',
      'a directory that exists (a bundle name is generated), a file ending in .tar, - for stdout, or ssh://host/dir',
    )
    .option('--mkdir', '-o names a directory to create (its parent must exist: missing parents are never created)')
    .option('--force', '-o names a bundle file that may exist: replace it (default: refuse, exit 6)')
    .option(
      '--all',
      'back up every running container, one bundle each (containers that refer to each other, or belong to one Compose project, share one; exit 3 when some fail)',
    )
    .addOption(
      new Option(
        '--filter <key=value>',
        'with --all: only the containers that match: label=<key> or label=<key>=<value>, name=<glob> (* and ?); repeatable, each must match',
      ).argParser(filterOption),
    )
    .option(
      '--dry-run',
      'print what would be backed up (containers, how they are held, volumes, binds, bundles) and change nothing',
    )
    .addOption(
      new Option(
        '--project <name>',
        'the containers of a Compose project (label com.docker.compose.project), running or not, into one bundle (repeatable)',
      ).argParser(collect),
    )
    .addOption(
      new Option(
        '--consistency <mode>',
        "pause: pause while committing and reading volumes; stop: stop and start again; none (default: each container's ferry.consistency label, else pause)",
      ).argParser(choice(['pause', 'stop', 'none'] as const)),
    )
    .addOption(
      new Option('--stop-timeout <seconds>', `with --consistency stop: ${STOP_TIMEOUT_HELP}`).argParser(
        stopTimeoutOption,
      ),
    )
    .addOption(
      new Option(
        '--wait <seconds>',
        'when another ferry run is backing up or migrating a container, wait this long for it (default: fail at once, exit 6)',
      ).argParser(stopTimeoutOption),
    )
    .option(
      '--together',
      "pause (or stop) all the containers of a bundle at once and resume them together: a stack's data from one instant, each one paused for the whole backup",
    )
    .option(
      '--precopy',
      "copy each volume while its container runs into a staging volume on the engine's host, then pause only for what changed since and the commit; needs the volumes' size in free space there and writes one more local copy (host-tar path only; elsewhere, or when short of space, one paused pass as without it; docs/precopy.md)",
    )
    .addOption(
      new Option(
        '--compress <codec>',
        'compression of volume data (the image uses gzip unless none): zstd, gzip, none',
      ).argParser(codecOption),
    )
    .option('--include-binds', 'also copy the contents of bind mounts (they are always recorded)')
    .option(
      '--pre-exec <cmd>',
      'run `sh -c cmd` inside each container before its snapshot (e.g. a database dump); a failure skips that container (default: its ferry.pre-exec label)',
    )
    .option(
      '--post-exec <cmd>',
      'run `sh -c cmd` inside each container after it is resumed (default: its ferry.post-exec label)',
    )
    .option('--notify-url <url>', notifyHelp('backup'))
    .option(
      '--encrypt',
      'encrypt the bundle as an age file to a passphrase (scrypt): FERRY_PASSPHRASE or --passphrase-file; opens with `age -d`',
    )
    .option(
      '--recipient <age1...>',
      'encrypt the bundle as an age file to this public key (repeatable; implies --encrypt); restore with --identity',
      collect,
      [],
    )
    .addOption(excludePathOption())
    .option(
      '--recipients-file <file>',
      'encrypt to the age public keys listed in this file, one per line (repeatable; implies --encrypt)',
      collect,
      [],
    )
    .option(
      '--verify',
      'read the written bundle back and check it (as `ferry verify`) before reporting success; a bad one is renamed to <name>.tar.corrupt',
    )
    .addOption(
      new Option(
        '--image-mode <mode>',
        'archive: save the committed image into the bundle; push: push it to --registry and keep only its reference and digest',
      )
        .default('archive')
        .argParser(choice(['archive', 'push'] as const)),
    )
    .option(
      '--registry <host[:port]/prefix>',
      'with --image-mode push: where images go, as <registry>/<container>:<UTC stamp>',
    )
    .option(
      '--registry-auth-file <path>',
      'registry credentials: a JSON file {"username","password"} or a docker config.json (default: the docker config, its credential helpers included)',
    )
    .option('--sign-key <key>', SIGN_KEY_HELP)
    .addOption(
      new Option(
        '--lock-timeout <seconds>',
        "wait this long for the store's lock (held briefly while another run picks its bundle name, or by prune)",
      )
        .default(DEFAULT_LOCK_TIMEOUT_S)
        .argParser(secondsOption),
    )
    .addHelpText(
      'after',
      `
Examples:
  ferry backup web -o /backups
  ferry backup web -o /mnt/usb/ferry --mkdir      # creates ferry/, never a missing /mnt/usb
  ferry backup web -o web.tar --force             # replace web.tar if it exists
  ferry backup web db -o /backups/app.tar --consistency stop
  ferry backup --all -o /backups --compress gzip
  ferry backup --all --filter label=backup=nightly -o /backups --dry-run
  ferry backup --project shop -o /backups --together
  ferry backup web -o - | ssh host 'cat > web.tar'
  ferry backup web -o /backups --image-mode push --registry registry.example.com:5000/backups`,
    )
    .action(async (containers: string[], flags: BackupFlags) => {
      const g = program.opts<{ host?: string; json?: boolean; quiet?: boolean }>();
      deps.setJson(!!g.json);
      // Checked here rather than by commander, so that a misspelt option is reported as such first.
      if (!flags.output)
        throw new UsageError(
          'backup needs -o, --output <target>',
          'e.g. -o /backups (a directory), -o web.tar or -o -',
        );
      const output = flags.output;
      const toStdout = output === '-';
      const progress = createProgress({ quiet: !!g.quiet });
      let summary: string;
      /** Volumes that shrank or went since their previous bundle: said in the notification too. */
      const shrankNames: string[] = [];
      const shrinkNote = () =>
        shrankNames.length ? `; warning: since the previous bundle, ${shrankNames.join(', ')}` : '';
      if (flags.filter && !flags.all)
        throw new UsageError('--filter narrows --all', 'add --all, or name the containers');
      // A dry run tells nobody.
      await notifying(
        flags.dryRun ? undefined : flags.notifyUrl,
        'backup',
        (m) => progress.warn(m),
        async () => {
          let engine: Awaited<ReturnType<typeof openEngine>> | undefined;
          try {
            if (!flags.dryRun) await checkOutput(output, flags);
            const eng = (engine = await openEngine(g.host, { ssh: deps.ssh() }));
            let names = containers;
            let groups: string[][] = [];
            if (flags.all) {
              if (containers.length || flags.project)
                throw new UsageError(`give ${containers.length ? 'container names' : '--project'} or --all, not both`);
              // One bundle per container: they need a store (a directory), not one file or stdout.
              if (output === '-' || output.endsWith('.tar'))
                throw new UsageError(
                  '--all writes one bundle per container into a directory',
                  'give -o a directory (a local path or ssh://host/dir)',
                );
              const listed = (await eng.listContainers(false)).filter((c) => !c.Labels?.['io.ferry.managed']);
              const all = listed.filter((c) => matches(flags.filter, c.Names[0]!.replace(/^\//, ''), c.Labels));
              if (flags.filter && !all.length)
                throw new NotFoundError(
                  `--all --filter ${flags.filter.map((f) => f.text).join(' --filter ')}: no running container matches`,
                  'check the label or name (docker ps --filter label=...); nothing was backed up',
                );
              const running = all.filter((c) => !excluded(c.Labels));
              for (const c of all)
                if (excluded(c.Labels))
                  progress.info(`${c.Names[0]!.replace(/^\//, '')}: not backed up (label ferry.exclude)`);
              if (!running.length)
                throw new UsageError(
                  `--all: no running containers${all.length ? ' that are not excluded (label ferry.exclude)' : ''}`,
                );
              // Containers that refer to each other (a sidecar in another's network, --volumes-from,
              // links) share a bundle: one restores only where the other exists.
              const list = await Promise.all(
                running.map(async (c) => ({
                  id: c.Id,
                  name: c.Names[0]!.replace(/^\//, ''),
                  refs: inspectRefs((await eng.inspectContainer(c.Id)) as never),
                  project: composeProject(c.Labels),
                })),
              );
              const left = listed
                .filter((c) => excluded(c.Labels) || !all.includes(c))
                .map((c) => ({
                  id: c.Id,
                  name: c.Names[0]!.replace(/^\//, ''),
                  why: excluded(c.Labels) ? 'label ferry.exclude' : '--filter',
                }));
              for (const c of list)
                for (const ref of c.refs) {
                  const x = left.find((e) => e.name === ref || e.id.startsWith(ref));
                  if (x)
                    progress.warn(
                      `${c.name} refers to ${x.name} (network, volumes-from or link), which is left out (${x.why}): ${c.name} cannot be restored where ${x.name} is not`,
                    );
                }
              groups = referenceGroups(list);
              names = groups.flat();
            } else if (flags.project) {
              const members = await projectContainers(eng, flags.project);
              const labels = new Map(
                (await eng.listContainers(true)).map((c) => [c.Names[0]!.replace(/^\//, ''), c.Labels]),
              );
              const kept = members.filter((n) => containers.includes(n) || !excluded(labels.get(n)));
              for (const n of members)
                if (!kept.includes(n)) progress.info(`${n}: not backed up (label ferry.exclude)`);
              names = [...containers, ...kept.filter((n) => !containers.includes(n))];
            }
            if (!names.length) throw new UsageError('name at least one container, or use --all');
            if (flags.dryRun) {
              const plan = await backupPlan(eng, groups.length ? groups : [names], flags.consistency);
              if (g.json)
                deps.emit('backup', {
                  ok: true,
                  dryRun: true,
                  containers: plan.flatMap((b) => b.containers.map((c) => c.name)),
                  plan,
                });
              else deps.io.stdout.write(backupPlanText(plan, output));
              setExit(program, 0);
              return { ok: true, summary: 'dry run' };
            }
            if (isResticLocation(output)) {
              // A restic repository: one snapshot per set (commands/restic.ts).
              summary = await backupToRestic(
                eng,
                output,
                flags.all ? groups : [names],
                { ...flags, all: !!flags.all, json: !!g.json, quiet: !!g.quiet },
                deps,
                progress,
              );
              setExit(program, 0);
              return { ok: true, summary };
            }
            let registry:
              { host: string; prefix: string; auth: Awaited<ReturnType<typeof resolveRegistryAuth>> } | undefined;
            if (flags.imageMode === 'push') {
              if (!flags.registry)
                throw new UsageError(
                  '--image-mode push needs --registry <host[:port]/prefix>',
                  'e.g. --registry registry.example.com/backups',
                );
              const r = parseRegistryOption(flags.registry);
              registry = { ...r, auth: await resolveRegistryAuth(r.host, { authFile: flags.registryAuthFile }) };
            } else if (flags.registry || flags.registryAuthFile) {
              throw new UsageError(
                `${flags.registry ? '--registry' : '--registry-auth-file'} is for --image-mode push`,
                'add --image-mode push to push images to a registry',
              );
            }
            // The key is read (and an agent asked) once, before any container is touched.
            const signer = await loadSigner(flags.signKey);
            if (signer) progress.info(`bundles are signed with ${describeKey(signer.publicKey)} (${signer.source})`);
            // age recipients, checked before any container is touched.
            const recipients = [
              ...flags.recipient.map((r) => checkRecipient(r.trim(), '--recipient')),
              ...(await Promise.all(flags.recipientsFile.map(readRecipientsFile))).flat(),
            ];
            // Encrypted to public keys, a bundle can be read back (--verify) only with an identity.
            const identities = recipients.length ? await deps.identities() : undefined;
            if (recipients.length && flags.verify && !identities?.length)
              throw new UsageError(
                '--verify cannot read back a bundle encrypted to --recipient without an identity',
                'drop --verify and run `ferry verify --identity <key file>` where the key is, or give --identity here (FERRY_AGE_IDENTITY)',
              );
            const one = async (set: string[]) => {
              let passphrase: string | undefined;
              if (flags.encrypt && !recipients.length) {
                passphrase = await deps.passphrase();
                if (!passphrase)
                  throw new UsageError(
                    '--encrypt needs a passphrase',
                    'set FERRY_PASSPHRASE or pass --passphrase-file (never on the command line), or encrypt to a public key with --recipient',
                  );
              }
              const encrypt = recipients.length
                ? { recipients, ...(identities ? { identities } : {}) }
                : passphrase
                  ? { passphrase }
                  : undefined;
              // Where the store is lockable, create() waits this long for its lock while it picks a name.
              const target = writeTarget(output, deps.stores, {
                lock: { timeoutMs: flags.lockTimeout * 1000, signal: deps.signal, onWait: (m) => progress.info(m) },
                ...(encrypt ? { encrypt, meta: { createdAt: new Date().toISOString(), containers: set } } : {}),
              });
              const store = target.writeSide.store;
              const res = await backup(
                eng,
                target,
                {
                  containers: set,
                  consistency: flags.consistency,
                  stopTimeout: flags.stopTimeout,
                  wait: flags.wait,
                  codec: flags.compress ?? defaultCodec(),
                  includeBinds: !!flags.includeBinds,
                  ...(registry ? { registry } : {}),
                  hooks: { pre: flags.preExec, post: flags.postExec },
                  together: !!flags.together,
                  ...(flags.precopy ? { precopy: true } : {}),
                  ...(signer ? { signer } : {}),
                  ...(flags.excludePath?.length ? { excludePaths: flags.excludePath } : {}),
                },
                { progress, signal: deps.signal, hostAccess: deps.hostAccess, debug: deps.debug },
              );
              // Into a store: a volume that shrank sharply since the previous bundle is worth a look.
              let shrunk: Shrunk[] | undefined;
              if (target.intoStore) {
                try {
                  shrunk = await checkShrinkage(
                    new Catalog(store, await deps.passphrase(), await deps.identities()),
                    res,
                  );
                } catch (err) {
                  progress.warn(
                    `could not compare ${res.location} with the previous bundle: ${toFerryError(err).message}`,
                  );
                }
                const look =
                  'if that is not expected, look at the service before the rotation removes the bundles that still hold its data';
                for (const x of shrunk ?? [])
                  shrankNames.push(
                    `volume ${x.volume} ${x.gone ? 'is no longer mounted' : `shrank from ${humanBytes(x.previousBytes)} to ${humanBytes(x.bytes)}`}`,
                  );
                for (const x of shrunk ?? [])
                  progress.warn(
                    x.gone
                      ? `volume ${x.volume} (${humanBytes(x.previousBytes)} in ${path.posix.basename(x.previous)}, ${x.previousCreated}) is not in this bundle of ${set.join(', ')}: they no longer mount it; ${look}`
                      : `volume ${x.volume} of ${set.join(', ')} holds ${humanBytes(x.bytes)}, down from ${humanBytes(x.previousBytes)} in ${path.posix.basename(x.previous)} (${x.previousCreated}); ${look}`,
                  );
              }
              let verified = false;
              if (flags.verify) {
                if (!store.capabilities.rereadable || !target.created) {
                  progress.warn(
                    `--verify: a bundle written to ${toStdout ? 'stdout' : res.location} cannot be verified here; run \`ferry verify\` where it is stored`,
                  );
                } else {
                  progress.step(`verify ${res.location}`);
                  const v = await verifyOrQuarantine(target.created, {
                    progress,
                    signal: deps.signal,
                    passphrase: await deps.passphrase(),
                    identities: await deps.identities(),
                  });
                  progress.done();
                  if (!v.report.ok) {
                    if (!g.json) deps.io.stderr.write(verifyText(v.report));
                    throw new BundleError(
                      `the bundle written to ${res.location} failed verification (bad: ${badMembers(v.report).join(', ')}); it was renamed to ${v.quarantined}`,
                      {
                        member: badMembers(v.report)[0],
                        hint: 'the backup is not usable; check the disk of the store and run the backup again',
                      },
                    );
                  }
                  verified = true;
                }
              }
              return { ...res, verified, shrunk };
            };
            const out = toStdout ? deps.io.stderr : deps.io.stdout;
            const report = (res: Awaited<ReturnType<typeof one>>) => {
              if (g.quiet || g.json) return;
              out.write(
                `backed up ${res.containers.join(', ')} (${res.volumes.length} volume${res.volumes.length === 1 ? '' : 's'}) to ${res.location}: ${humanBytes(res.bytes)} in ${(res.durationMs / 1000).toFixed(1)}s${res.verified ? ', verified' : ''}\n`,
              );
              for (const p of res.pushed ?? []) out.write(`pushed ${p.ref} (${p.digest})\n`);
            };
            const asJson = (res: Awaited<ReturnType<typeof one>>) => ({
              bundle: res.location,
              createdAt: res.manifest.createdAt,
              containers: res.containers,
              volumes: res.volumes,
              storedBytes: res.bytes,
              durationMs: res.durationMs,
              pausedMs: res.pausedMs,
              ...(flags.verify ? { verified: res.verified } : {}),
              ...(res.shrunk?.length
                ? {
                    shrunk: res.shrunk.map((x) => ({
                      volume: x.volume,
                      rawBytes: x.bytes,
                      previousRawBytes: x.previousBytes,
                      previousBundle: x.previous,
                      previousCreatedAt: x.previousCreated,
                      ...(x.gone ? { gone: x.gone } : {}),
                    })),
                  }
                : {}),
              ...(res.pushed ? { pushed: res.pushed } : {}),
              dataPaths: res.dataPaths,
            });

            if (!flags.all) {
              const res = await one(names);
              progress.done();
              report(res);
              if (g.json) deps.emit('backup', { ok: true, ...asJson(res) }, out);
              summary = `backed up ${res.containers.join(', ')} to ${res.location} (${humanBytes(res.bytes)})${shrinkNote()}`;
            } else {
              // --all: one bundle per container (per group of containers that refer to each other), so
              // that one that fails does not cost the others their backup; exit 3 when some failed and
              // some did not.
              const results: {
                container: string;
                ok: boolean;
                result?: ReturnType<typeof asJson>;
                error?: JsonError;
              }[] = [];
              let firstError: FerryError | undefined;
              for (const set of groups) {
                try {
                  const res = await one(set);
                  progress.done();
                  report(res);
                  for (const n of set) results.push({ container: n, ok: true, result: asJson(res) });
                } catch (err) {
                  const fe = toFerryError(err);
                  if (fe.exitCode === EXIT.INTERRUPTED || deps.signal.aborted) throw err;
                  firstError ??= fe;
                  progress.done();
                  deps.io.stderr.write(`ferry: error: ${set.join(', ')}: ${fe.message}\n`);
                  for (const n of set) results.push({ container: n, ok: false, error: errorJson(fe) });
                }
              }
              const failed = results.filter((r) => !r.ok).map((r) => r.container);
              summary = `backed up ${results.length - failed.length} of ${results.length} containers${failed.length ? `; failed: ${failed.join(', ')}` : ''}${shrinkNote()}`;
              const partial = failed.length > 0 && failed.length < results.length;
              if (g.json)
                deps.emit(
                  'backup',
                  {
                    ok: failed.length === 0,
                    partial,
                    containers: results.map((r) => r.container),
                    results,
                    ...(failed.length
                      ? {
                          error: errorJson(
                            partial
                              ? new PartialError(
                                  summary,
                                  failed.map((name) => ({ name, error: firstError! })),
                                )
                              : firstError!,
                          ),
                        }
                      : {}),
                  },
                  out,
                );
              if (failed.length === results.length) throw firstError!;
              if (failed.length) {
                if (!g.quiet && !g.json) deps.io.stderr.write(`ferry: ${summary}\n`);
                setExit(program, EXIT.PARTIAL);
                return { ok: false, summary };
              }
            }
            setExit(program, 0);
            return { ok: true, summary };
          } finally {
            progress.done(true); // after a success, done() was called first: this one is a failure's
            engine?.close();
          }
        },
      );
    });
}

/** A container an operator has marked to be left out of --all and --project backups (`ferry.exclude=true`). */
export function excluded(labels: Record<string, string> | undefined): boolean {
  return /^(true|yes|1)$/i.test(labels?.['ferry.exclude'] ?? '');
}

/** The age recipients of a --recipients-file (a UsageError naming the file when it cannot be read). */
async function readRecipientsFile(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `cannot read the recipients file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      'check --recipients-file',
    );
  }
  return parseRecipients(text, file);
}
