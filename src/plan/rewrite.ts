/** How a restore renames and rewrites what it creates (ferry drill, --map-*). Types only. */
import type { BindEntry, VolumeEntry } from '../bundle/manifest.js';
import type { ContainerSpec, NetworkSpec } from '../model/spec.js';

/**
 * What a restore creates goes through these first. Each returns the object to create: a named
 * volume's or network's new name is the `name` it returns. Pure functions (see plan/drill.ts).
 */
export interface RestoreRewrite {
  containerName(name: string): string;
  /** The spec to create the container from (references to other containers, networks, ports...). */
  spec(spec: ContainerSpec): ContainerSpec;
  volume(v: VolumeEntry): VolumeEntry;
  network(n: NetworkSpec): NetworkSpec;
  /** A volume to restore this bind's data into, instead of writing it to the host path. */
  bindVolume(b: BindEntry): VolumeEntry | undefined;
  /** The host path this bind's data is written to (--restore-binds); default: the recorded one. */
  bindPath?(b: BindEntry): string;
}
