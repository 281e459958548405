/**
 * --on-conflict replace, atomic (docs/architecture.md, Replace): what is replaced stays intact
 * until its replacement has run and passed its watch.
 *
 *   stage:   each volume to replace gets a staging volume `<name>-ferry-new-<run>`, which the op
 *            fills and the bundle's trailer (or the transfer) proves; the old service runs on.
 *   aside:   each old container is stopped and renamed `<name>-ferry-old-<run>` (its id,
 *            settings, writable layer and volumes untouched); the new containers are created on
 *            the staging volumes, started and watched. Any failure, or a signal, removes them and
 *            puts the old back under its name, running if it ran.
 *   commit:  the new ones proved themselves: the old containers go, each real volume is made
 *            again and filled from its staging volume, the new containers are created again on
 *            the real volumes and started, the staging volumes go.
 *
 * Docker cannot rename a volume, and a volume a container mounts cannot be removed: hence the
 * staging copy and the second create. The journal (util/state.ts, ReplaceJournal) lets the next
 * run put the old back after a SIGKILL (ops/steps/recover.ts).
 */
import { Transform, type Readable } from 'node:stream';
import { type Engine, LABEL_OWNER, LABEL_ROLE, LABEL_RUN } from '../../engine/engine.js';
import type { VolumeEntry } from '../../bundle/manifest.js';
import type { Progress } from '../../context.js';
import { fillVolume, namedVolumes, openVolumeReader, removeWithAnonymousVolumes } from '../../data/volumes.js';
import { ENGINE_ONLY, type Routing } from '../../data/paths.js';
import { describeTally, sameTally, tallied, tallyTar, type Tally } from '../../data/tally.js';
import { ConflictError, IoError, NotFoundError, ReplaceUnfinishedError } from '../../errors.js';
import { faultPoint } from '../../util/fault.js';
import { ReplaceJournal, replaceJournalFile, type ReplaceCommit, type ReplaceRecord } from '../../util/state.js';
import { watchStarted, type Undo } from './recreate.js';

export const STAGING_ROLE = 'staging';

/** The staging volume's name for `real` in run `run`. */
export function stagingName(real: string, run: string): string {
  return `${real}-ferry-new-${run}`;
}

/** The name an old container is set aside under in run `run`. */
export function asideName(name: string, run: string): string {
  return `${name}-ferry-old-${run}`;
}

export class Replacement {
  /** Volumes whose new data is staged: the real name, the staging volume, how to make it again. */
  readonly staged: { real: string; staging: string; entry: VolumeEntry }[] = [];
  private readonly wanted: string[] = [];
  private readonly aside: ReplaceRecord['aside'] = [];
  private readonly created: string[] = [];
  private phase: ReplaceRecord['phase'] = 'staging';
  private commit?: ReplaceCommit;

  constructor(
    private readonly engine: Engine,
    private readonly progress: Progress,
    private readonly journal = new ReplaceJournal(),
  ) {}

  /** Something to replace: a volume staged or a container to set aside. */
  get active(): boolean {
    return this.staged.length > 0 || this.wanted.length > 0;
  }

  /** The old containers are stopped and aside (a failure from here on puts them back). */
  get isAside(): boolean {
    return this.phase !== 'staging';
  }

  /** Containers that exist under the names the new ones take: set aside at setAside(). */
  replaceContainers(names: string[]): void {
    this.wanted.push(...names);
  }

  /** A staging volume for `v`, whose name is taken by the volume it replaces; returns the staging name. */
  async stageVolume(v: VolumeEntry, undo: Undo): Promise<string> {
    const run = this.engine.run;
    const staging = stagingName(v.name, run.id);
    this.progress.step(`create volume ${staging} for the new data of ${v.name} (--on-conflict replace)`);
    this.staged.push({ real: v.name, staging, entry: v });
    this.record();
    await this.engine.createVolume({
      Name: staging,
      Driver: v.driver,
      DriverOpts: v.driverOpts,
      Labels: { ...(v.labels ?? {}), [LABEL_ROLE]: STAGING_ROLE, [LABEL_RUN]: run.id, [LABEL_OWNER]: run.owner },
    });
    undo.add(`remove volume ${staging}`, () => this.engine.removeVolume(staging));
    return staging;
  }

  /** Stop each old container and rename it aside; the undo puts it back, running if it ran. */
  async setAside(undo: Undo): Promise<void> {
    if (this.isAside) return;
    this.phase = 'aside';
    this.record();
    for (const name of this.wanted) {
      const old = await this.engine.inspectContainer(name);
      const st = old.State;
      const entry = {
        name,
        aside: asideName(name, this.engine.run.id),
        id: old.Id,
        running: !!st.Running,
        paused: !!st.Paused,
      };
      this.progress.step(`stop ${name} and set it aside as ${entry.aside} until its replacement runs`);
      if (entry.running) await this.engine.stop(old.Id);
      this.aside.push(entry);
      this.record();
      undo.add(`put ${name} back`, () => putBack(this.engine, entry));
      await this.engine.renameContainer(old.Id, entry.aside);
    }
  }

  /** A new container was created (removed before the old is put back after a SIGKILL). */
  noteCreated(id: string): void {
    this.created.push(id);
    this.record();
  }

  /**
   * The new containers ran and passed their watch: from here on the old do not come back. The
   * journal gets everything needed to finish (`commit`) before the first old container goes, so
   * that a run killed from here on is rolled forward by the next one (finishCommit).
   */
  beginCommit(commit: ReplaceCommit): Omit<ReplaceRecord, 'pid' | 'host' | 'at'> & { commit: ReplaceCommit } {
    this.phase = 'committing';
    this.commit = commit;
    this.record();
    return { ...this.current(), commit };
  }

  /** The journal, updated as the commit goes (finishCommit's `save`). */
  saveCommit(commit: ReplaceCommit): void {
    this.commit = commit;
    this.record();
  }

  /** The end: the journal forgets this replace. */
  finish(): void {
    this.journal.drop(this.engine.facts.endpoint, this.engine.run.id);
  }

  /**
   * After a rollback: nothing of this replace is left to put right. Except in the commit: then
   * the record stays (the error said so), and the next run finishes it.
   */
  forget(): void {
    if (this.phase === 'committing') return;
    this.journal.drop(this.engine.facts.endpoint, this.engine.run.id);
  }

  private current(): Omit<ReplaceRecord, 'pid' | 'host' | 'at'> {
    return {
      engine: this.engine.facts.endpoint,
      run: this.engine.run.id,
      phase: this.phase,
      staging: this.staged.map((s) => s.staging),
      aside: this.aside,
      created: this.created,
      ...(this.commit ? { commit: this.commit } : {}),
    };
  }

  private record(): void {
    this.journal.put(this.current());
  }
}

/** An old container back under its name, running (or paused) if it was. */
export async function putBack(engine: Engine, a: ReplaceRecord['aside'][number]): Promise<void> {
  const now = await engine.inspectContainer(a.id);
  if (now.Name.replace(/^\//, '') !== a.name) await engine.renameContainer(a.id, a.name);
  if (!a.running) return;
  await engine.start(a.id);
  if (a.paused) await engine.pause(a.id);
}

/** What finishCommit did, and the new containers as they stand. */
export interface CommitDone {
  did: string[];
  containers: { name: string; id: string; started: boolean }[];
}

/**
 * Finish a replace's commit from wherever it stopped (its own run, or the next run after a
 * SIGKILL: recover.ts). Each step is skipped when the journal says it is done, and safe to do
 * again when the run died in it:
 *
 *   old      the old containers, set aside, are removed (those still there);
 *   trial    the new containers that ran on the staging volumes are removed; the anonymous
 *            volumes they made stay, recorded first, for their data (`adopt`);
 *   volume   each real volume is removed (the old data, or a half-made copy), made again with its
 *            settings, filled from its staging volume, and proven: its listing read back matches
 *            the staging volume's (data/tally.ts);
 *   create   each new container is created on the real volumes with the recorded body (one under
 *            its name made since the commit began is the commit's own, its answer lost), joins
 *            its later networks, and gets its anonymous volumes' data;
 *   start    each that is to run is started (and paused again if it was paused);
 *
 * then the staging volumes go, each only once its real volume was proven. `save` records the
 * progress after each step. `watch`: watch the started containers as a run would (recovery).
 */
export async function finishCommit(
  engine: Engine,
  rec: Pick<ReplaceRecord, 'aside'> & { commit: ReplaceCommit },
  save: (c: ReplaceCommit) => void,
  progress: Progress,
  opts: { via?: Routing; watch?: AbortSignal } = {},
): Promise<CommitDone> {
  const c = rec.commit;
  const did: string[] = [];
  const step = async (key: string, fn: () => Promise<void>) => {
    if (c.done.includes(key)) return;
    await fn();
    c.done.push(key);
    save(c);
  };
  const exists = (id: string) => engine.inspectContainer(id).catch(() => undefined);

  await step('old', async () => {
    for (const a of rec.aside) {
      if (!(await exists(a.id))) continue;
      progress.step(`remove the replaced container ${a.aside}`);
      await engine.removeContainer(a.id, { force: true });
      did.push(`removed the replaced container ${a.aside}`);
    }
  });
  await faultPoint('replace-commit');

  await step('trial', async () => {
    for (const id of c.trial) {
      const st = await exists(id);
      if (!st) continue;
      const name = st.Name.replace(/^\//, '');
      const to = c.containers.find((k) => k.name === name);
      const named = namedVolumes(st);
      const anonymous = ((st.Mounts ?? []) as { Type?: string; Name?: string; Destination?: string }[]).filter(
        (m) => m.Type === 'volume' && m.Name && m.Destination && !named.has(m.Name),
      );
      progress.step(`remove ${name} from the staging volumes`);
      if (!to) {
        await removeWithAnonymousVolumes(engine, id);
        continue;
      }
      if (anonymous.length) {
        to.adopt = anonymous.map((m) => ({ destination: m.Destination!, volume: m.Name! }));
        save(c); // before the removal: these volumes are all that holds that data then
      }
      await engine.removeContainer(id, { force: true });
    }
  });
  await faultPoint('commit-trial');

  for (const v of c.volumes)
    await step(`volume:${v.real}`, async () => {
      if (!(await engine.inspectVolume(v.staging)))
        throw new NotFoundError(`the staging volume ${v.staging}, which holds the new data of ${v.real}, is gone`);
      progress.step(`replace volume ${v.real} with the new data of ${v.staging}`);
      if (await engine.inspectVolume(v.real)) await engine.removeVolume(v.real);
      await engine.createVolume({
        Name: v.real,
        Driver: v.driver,
        DriverOpts: v.driverOpts,
        Labels: { ...(v.labels ?? {}) },
      });
      await faultPoint('commit-volume');
      const t = await copyProven(engine, v.staging, v.real, progress, opts.via);
      did.push(`made volume ${v.real} again and filled it from ${v.staging} (${describeTally(t)}, read back alike)`);
    });
  await faultPoint('commit-filled');

  for (const k of c.containers)
    await step(`create:${k.name}`, async () => {
      let id = c.made[k.name];
      const there = await exists(k.name);
      if (there && there.Id !== id) {
        const made = Date.parse(String((there as { Created?: string }).Created ?? ''));
        if (id || !(made >= Date.parse(c.at)))
          throw new ConflictError(
            `a container named ${k.name} is there that this replace did not make (${there.Id.slice(0, 12)})`,
            `remove or rename it, then run ferry again on ${engine.facts.endpoint} to finish the replace`,
          );
        id = there.Id; // made by this commit; the run died before it recorded the answer
      }
      if (!there) {
        progress.step(`create container ${k.name} on the real volumes`);
        id = await engine.createContainer(k.name, structuredClone(k.body));
      }
      c.made[k.name] = id!;
      save(c);
      const joined = Object.keys((await engine.inspectContainer(id!)).NetworkSettings?.Networks ?? {});
      for (const e of k.endpoints)
        if (!joined.includes(e.network)) await engine.connectNetwork(e.network, id!, structuredClone(e.config));
      for (const a of k.adopt) await adopt(engine, id!, a, progress, opts.via);
      did.push(`created container ${k.name} on the real volumes`);
    });
  await faultPoint('commit-create');

  for (const k of c.containers)
    if (k.start)
      await step(`start:${k.name}`, async () => {
        const id = c.made[k.name]!;
        const st = (await engine.inspectContainer(id)).State;
        if (!st.Running) {
          progress.step(`start ${k.name}`);
          await engine.start(id);
        }
        if (k.pause && !st.Paused) await engine.pause(id);
        did.push(`started ${k.name}`);
      });
  await faultPoint('commit-start');

  const containers = c.containers.map((k) => ({ name: k.name, id: c.made[k.name]!, started: k.start }));
  if (opts.watch)
    await watchStarted(
      engine,
      containers.filter((k) => k.started),
      progress,
      opts.watch,
    );

  for (const v of c.volumes) {
    if (!c.done.includes(`volume:${v.real}`)) continue; // never before its real volume was proven
    if (!(await engine.inspectVolume(v.staging))) continue;
    await engine.removeVolume(v.staging);
    did.push(`removed the staging volume ${v.staging}`);
  }
  return { did, containers };
}

/**
 * The typed error for a commit that could not be finished (exit 14): what is kept, and what to do.
 * The journal keeps the record: the next ferry run on that engine tries again.
 */
export function replaceUnfinished(
  engine: Engine,
  rec: Pick<ReplaceRecord, 'aside' | 'staging'> & { commit: ReplaceCommit },
  err: unknown,
): ReplaceUnfinishedError {
  const names = rec.commit.containers.map((k) => k.name).join(', ') || rec.aside.map((a) => a.name).join(', ');
  const kept = rec.commit.volumes.map((v) => `${v.staging} (for ${v.real})`).join(', ');
  return new ReplaceUnfinishedError(
    `the --on-conflict replace of ${names} could not be finished on ${engine.facts.endpoint}: ${(err as Error).message}`,
    {
      cause: err,
      hint: `the replaced container was removed; ${kept ? `the new data is whole in ${kept}, which ferry keeps` : 'nothing of the new data is lost'}. Fix the cause, then run ferry again on this engine (any command): it finishes the replace from where it stopped. The record is in ${replaceJournalFile()}`,
    },
  );
}

/** An anonymous volume's data, kept from the trial container, into the one the engine made at the same place. */
async function adopt(
  engine: Engine,
  id: string,
  a: ReplaceCommit['containers'][number]['adopt'][number],
  progress: Progress,
  via?: Routing,
): Promise<void> {
  if (!(await engine.inspectVolume(a.volume))) return; // moved already
  const into = ((await engine.inspectContainer(id)).Mounts ?? []).find(
    (m) => m.Type === 'volume' && m.Destination === a.destination,
  )?.Name;
  if (into && into !== a.volume) {
    progress.step(`move the anonymous volume at ${a.destination} into ${into.slice(0, 12)}`);
    await copyProven(engine, a.volume, into, progress, via);
  }
  await engine.removeVolume(a.volume);
}

/**
 * One volume's content into another on the same engine, then proven: the copy's listing, read
 * back, matches what was read from `from` (data/tally.ts). Returns that tally.
 */
async function copyProven(
  engine: Engine,
  from: string,
  to: string,
  progress: Progress,
  via: Routing = { access: ENGINE_ONLY },
): Promise<Tally> {
  const holderImage = await engine.ensureHolderImage();
  const r = await openVolumeReader(engine, holderImage, from, via.debug);
  let source: Tally;
  try {
    const { stream, tally } = tallied(r.stream);
    await fillVolume(engine, holderImage, to, pausedAfterFirstChunk(stream), progress, via);
    source = await tally;
  } finally {
    r.stream.destroy();
    await r.done();
  }
  const back = await openVolumeReader(engine, holderImage, to, via.debug);
  let copy: Tally;
  try {
    copy = await tallyTar(back.stream);
  } finally {
    back.stream.destroy();
    await back.done();
  }
  if (!sameTally(source, copy))
    throw new IoError(
      `volume ${to} does not read back as ${from} was read (${describeTally(copy)} against ${describeTally(source)})`,
      { hint: `${from} is kept: it holds the new data whole` },
    );
  return source;
}

/** `src` with the fault point `commit-fill` after its first chunk (a copy stopped half-way). */
function pausedAfterFirstChunk(src: Readable): Readable {
  let first = true;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (!first) return cb(null, chunk);
      first = false;
      this.push(chunk);
      faultPoint('commit-fill').then(() => cb(), cb);
    },
  });
  src.once('error', (err) => t.destroy(err));
  src.pipe(t);
  return t;
}
