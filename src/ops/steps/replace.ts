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
import { type Engine, LABEL_OWNER, LABEL_ROLE, LABEL_RUN } from '../../engine/engine.js';
import type { VolumeEntry } from '../../bundle/manifest.js';
import type { Progress } from '../../context.js';
import { fillVolume, openVolumeReader } from '../../data/volumes.js';
import { ENGINE_ONLY, type Routing } from '../../data/paths.js';
import { ReplaceJournal, type ReplaceRecord } from '../../util/state.js';
import type { Undo } from './recreate.js';

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
   * The new containers ran and passed their watch: from here on the old do not come back. Remove
   * the old containers, then make each real volume again from its staging volume.
   */
  async retireOld(): Promise<void> {
    this.phase = 'committing';
    this.record();
    for (const a of this.aside) {
      this.progress.step(`remove the replaced container ${a.aside}`);
      await this.engine.removeContainer(a.id, { force: true });
    }
  }

  /** Each real volume made again (its settings from the bundle or source) and filled from its staging volume. */
  async moveData(holderImage: string, via: Routing = { access: ENGINE_ONLY }): Promise<void> {
    for (const s of this.staged) {
      this.progress.step(`replace volume ${s.real} with the new data of ${s.staging}`);
      await this.engine.removeVolume(s.real);
      await this.engine.createVolume({
        Name: s.real,
        Driver: s.entry.driver,
        DriverOpts: s.entry.driverOpts,
        Labels: { ...(s.entry.labels ?? {}) },
      });
      await copyVolume(this.engine, holderImage, s.staging, s.real, this.progress, via);
    }
  }

  /** The end: the staging volumes go, and the journal forgets this replace. */
  async finish(): Promise<void> {
    for (const s of this.staged) await this.engine.removeVolume(s.staging);
    this.journal.drop(this.engine.facts.endpoint, this.engine.run.id);
  }

  /**
   * After a rollback: nothing of this replace is left to put right. Except in the commit: then
   * the record stays, and the next run names the staging volumes that hold the new data.
   */
  forget(): void {
    if (this.phase === 'committing') {
      this.progress.warn(
        `the replaced containers were removed; the new data is complete in ${this.staged.map((s) => s.staging).join(', ')}: run the restore or migrate again, or move it by hand`,
      );
      return;
    }
    this.journal.drop(this.engine.facts.endpoint, this.engine.run.id);
  }

  private record(): void {
    this.journal.put({
      engine: this.engine.facts.endpoint,
      run: this.engine.run.id,
      phase: this.phase,
      staging: this.staged.map((s) => s.staging),
      aside: this.aside,
      created: this.created,
    });
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

/** One volume's content into another on the same engine (the new one empty). */
async function copyVolume(
  engine: Engine,
  holderImage: string,
  from: string,
  to: string,
  progress: Progress,
  via: Routing,
): Promise<void> {
  const r = await openVolumeReader(engine, holderImage, from, via.debug);
  try {
    await fillVolume(engine, holderImage, to, r.stream, progress, via);
  } finally {
    r.stream.destroy();
    await r.done();
  }
}
