/**
 * backup --precopy (docs/precopy.md, Backup): each volume of a running container is pre-copied
 * into a staging volume on the same engine while the container runs (data/precopy.ts: the
 * migrate's passes and policy), the container is frozen only for the last delta into that copy
 * and the commit, and once it runs again the bundle's member is written from the staging copy,
 * which holds the volume as it was at the freeze. The bundle format does not change.
 *
 * A staging volume is ferry's own: `<volume>-ferry-stage-<run>`, labelled with its role, run and
 * owner (host/pid). It goes as soon as its member is written, and on every other path: a failure
 * or a signal (the op's finally), a SIGKILL (the made-journal, util/state.ts: the next run on the
 * engine removes it, ops/steps/recover.ts), and `ferry clean` removes any whose run is dead.
 */
import { type Engine, LABEL_OWNER, LABEL_ROLE, LABEL_RUN } from '../../engine/engine.js';
import type { Progress } from '../../context.js';
import { listingDiskBytes, type Listing } from '../../data/delta.js';
import { hostFreeBytes, hostVolumeReachable } from '../../data/host-volume.js';
import { isRefused, type Routing } from '../../data/paths.js';
import { Undo } from './recreate.js';

const mib = (n: number) => `${(n / 2 ** 20).toFixed(n < 2 ** 30 ? 1 : 0)} MiB`;

export const BACKUP_STAGING_ROLE = 'backup-staging';

/** The staging volume of `volume` in run `run`. */
export function backupStagingName(volume: string, run: string): string {
  return `${volume}-ferry-stage-${run}`;
}

/** Free space kept on top of what the staging copies take: the larger of this and STAGE_MARGIN_SHARE of them. */
export const STAGE_MARGIN_BYTES = 256 << 20;
export const STAGE_MARGIN_SHARE = 0.1;

/**
 * Why a staging copy of `need` bytes does not fit into `free` bytes (the margin on top: the
 * volume grows while it is copied, and the host needs room besides), or undefined. Pure; unit-tested.
 */
export function roomRefusal(need: number, free: number): string | undefined {
  const margin = Math.max(STAGE_MARGIN_BYTES, Math.ceil(need * STAGE_MARGIN_SHARE));
  if (need + margin <= free) return undefined;
  return `not enough free space for a staging copy on the engine's host: it needs ${mib(need)} and a margin of ${mib(margin)}, ${mib(free)} is free`;
}

/**
 * Why a pre-copy of a container's volumes cannot run, known before any volume is looked at
 * (undefined: it may). Pure; unit-tested.
 */
export function containerStageRefusal(o: {
  mode: 'pause' | 'stop' | 'none';
  running: boolean;
  paused: boolean;
  together: boolean;
}): string | undefined {
  if (o.mode === 'none') return '--consistency none: the container is never frozen';
  if (!o.running) return 'the container is not running';
  if (o.paused) return 'the container is paused already';
  if (o.together) return '--together: the set is frozen as one for the whole backup';
  return undefined;
}

/** The staging volumes of one backup run on one engine, and their removal on every path. */
export class StagingVolumes {
  private readonly undo: Undo;
  /** Staging name by volume name, while it exists. */
  private readonly made = new Map<string, string>();

  constructor(
    private readonly engine: Engine,
    private readonly progress: Progress,
    undo?: Undo,
  ) {
    this.undo = undo ?? new Undo(engine);
  }

  /** Why `volume` cannot be staged on this engine's host (its directory is not reached there), or undefined. */
  async refusal(volume: string, via: Routing): Promise<string | undefined> {
    const s = await hostVolumeReachable(this.engine, volume, via.access);
    return isRefused(s) ? s.refused : undefined;
  }

  /** Create the staging volume of `volume` (journalled first: a SIGKILL right after leaves it to the next run). */
  async create(volume: string): Promise<string> {
    const run = this.engine.run;
    const name = backupStagingName(volume, run.id);
    this.progress.step(`create volume ${name}, a staging copy of ${volume} (--precopy)`);
    this.undo.note({ kind: 'volume', name });
    this.made.set(volume, name);
    await this.engine.createVolume({
      Name: name,
      Driver: 'local',
      Labels: { [LABEL_ROLE]: BACKUP_STAGING_ROLE, [LABEL_RUN]: run.id, [LABEL_OWNER]: run.owner },
    });
    return name;
  }

  /** A `room` check for precopyVolume: the first listing's size against the free space where `staging` lies. */
  room(staging: string, via: Routing): (first: Listing) => Promise<string | undefined> {
    return async (first) => {
      const free = await hostFreeBytes(this.engine, staging, via.access);
      if (isRefused(free)) return free.refused;
      return roomRefusal(listingDiskBytes(first), free);
    };
  }

  /** The staging volume of `volume`, if it has one. */
  of(volume: string): string | undefined {
    return this.made.get(volume);
  }

  /** Remove the staging volume of `volume` (its member is written, or it was not used). */
  async remove(volume: string): Promise<void> {
    const name = this.made.get(volume);
    if (!name) return;
    this.progress.step(`remove volume ${name}`);
    await this.engine.removeVolume(name);
    this.made.delete(volume);
    if (!this.made.size) this.undo.clear();
  }

  /** Remove every staging volume still there (a failure, a signal, or the end of the run); never throws. */
  async removeAll(): Promise<void> {
    for (const volume of [...this.made.keys()])
      await this.remove(volume).catch((err: unknown) =>
        this.progress.warn(
          `could not remove the staging volume ${this.made.get(volume)}: ${(err as Error).message} (ferry clean removes it)`,
        ),
      );
  }
}
