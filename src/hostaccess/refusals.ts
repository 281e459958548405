/**
 * Why a host fast path is ruled out, from what the engine (and, for host-tar, one volume) says:
 * the rules access.ts decides with once per engine, and the data paths ask again where a single
 * volume or image has more to say (data/host-volume.ts, data/host-image.ts,
 * data/content-store.ts). Each returns a reason, or undefined where the path may be taken, its
 * host permitting (root there: access.ts). Pure; unit-tested.
 */
import type { EngineFacts, VolumeInspect } from '../engine/engine.js';
import type { EngineQuirks } from '../engine/quirks.js';
import type { HostShell } from './shell.js';

/** The switch of the `host-tar` volume path (data/host-volume.ts). */
export const HOST_VOLUMES_ENV = 'FERRY_HOST_VOLUMES';
/** The switch of the `layer-store` image path (data/host-image.ts) and of the content store's reading. */
export const HOST_LAYERS_ENV = 'FERRY_HOST_LAYERS';

const NO_SHELL = 'no way onto the engine host (a TCP engine)';

/** Whether a switch turns its path off (0, off, no, false). Pure. */
export function switchedOff(setting: string | undefined): setting is string {
  return setting !== undefined && /^(0|off|no|false)$/i.test(setting);
}

/** Why the volume cannot be reached on the host's disk (`setting`: FERRY_HOST_VOLUMES), or undefined when it can. */
export function hostAccessRefusal(
  facts: Pick<EngineFacts, 'remapped'> & Pick<EngineQuirks, 'hostVolumeDirs'> & { host: boolean },
  volume: Pick<VolumeInspect, 'Driver' | 'Options' | 'Mountpoint'> | undefined,
  setting: string | undefined,
): string | undefined {
  if (switchedOff(setting)) return `${HOST_VOLUMES_ENV}=${setting}`;
  if (!facts.host) return NO_SHELL;
  if (!facts.hostVolumeDirs) return 'Podman';
  if (facts.remapped) return 'the engine remaps user ids (rootless or userns-remap)';
  if (!volume) return 'no such volume';
  if (volume.Driver !== 'local') return `volume driver ${volume.Driver}`;
  if (volume.Options && Object.keys(volume.Options).length)
    return 'a volume with driver options (mounted only while in use)';
  if (!volume.Mountpoint || !volume.Mountpoint.startsWith('/')) return 'no mount point';
  return undefined;
}

/** Why the engine's layer store cannot give its images (`setting`: FERRY_HOST_LAYERS), or undefined where it can. */
export function layerStoreRefusal(
  f: Pick<EngineFacts, 'remapped' | 'containerdStore' | 'storageDriver' | 'rootDir'> &
    Pick<EngineQuirks, 'dockerLayerStore'>,
  shell: HostShell | undefined,
  setting: string | undefined,
): string | undefined {
  if (switchedOff(setting)) return `${HOST_LAYERS_ENV}=${setting}`;
  if (!shell) return NO_SHELL;
  if (!f.dockerLayerStore || f.remapped || f.storageDriver !== 'overlay2' || !f.rootDir?.startsWith('/'))
    return `not Docker's own overlay2 layer store (storage driver ${f.storageDriver ?? 'unknown'}${f.containerdStore ? ', containerd image store' : ''}${f.remapped ? ', user ids remapped' : ''})`;
  return undefined;
}

/** Why the containerd content store of an engine is not read (`setting`: FERRY_HOST_LAYERS); undefined where it may be. */
export function contentStoreRefusal(
  f: Pick<EngineFacts, 'containerdStore' | 'remapped'> & Partial<Pick<EngineQuirks, 'dockerLayerStore'>>,
  shell: HostShell | undefined,
  setting: string | undefined,
): string | undefined {
  if (!f.containerdStore) return 'not the containerd image store';
  if (switchedOff(setting)) return `${HOST_LAYERS_ENV}=${setting}`;
  if (!shell) return NO_SHELL;
  if (f.remapped) return 'user ids remapped';
  return undefined;
}
