/**
 * What an engine's host offers ferry's data fast paths, decided once per engine and run: volume
 * data read and written with GNU tar on the host's disk (`host-tar`, data/host-volume.ts), and
 * image archives built from the host's layer store (`layer-store`, data/host-image.ts). The
 * switches (FERRY_HOST_VOLUMES, FERRY_HOST_LAYERS) come in from the CLI edge as HostEnv; nothing
 * below reads the environment.
 *
 * Per volume, host-volume.ts still checks what only that volume says (its driver, its options,
 * whether its directory is the one the engine mounts), and refuses with a reason of its own.
 */
import type { EngineFacts } from '../engine/engine.js';
import type { EngineQuirks } from '../engine/quirks.js';
import {
  HOST_LAYERS_ENV,
  HOST_VOLUMES_ENV,
  contentStoreRefusal,
  hostAccessRefusal,
  layerStoreRefusal,
} from './refusals.js';
import { noDebug, type Debug } from '../util/debug.js';
import { capture, type HostShell } from './shell.js';

/** The switches of the host fast paths, as the CLI read them from its environment. */
export interface HostEnv {
  FERRY_HOST_VOLUMES?: string;
  FERRY_HOST_LAYERS?: string;
}

/** The host switches of an environment (the CLI's process.env). Pure. */
export function hostEnv(env: Record<string, string | undefined>): HostEnv {
  const out: HostEnv = {};
  if (env[HOST_VOLUMES_ENV] !== undefined) out.FERRY_HOST_VOLUMES = env[HOST_VOLUMES_ENV];
  if (env[HOST_LAYERS_ENV] !== undefined) out.FERRY_HOST_LAYERS = env[HOST_LAYERS_ENV];
  return out;
}

/** Whether a fast path is taken on this engine, and why (or why not). */
export interface Decision {
  use: boolean;
  reason: string;
}

export interface HostAccess {
  /** host-tar for volumes (each volume is still checked on its own). */
  volumes: Decision;
  /** layer-store for images. */
  layers: Decision;
  /**
   * The containerd content store on the engine's host, read (never written) to learn which image
   * blobs a containerd-store target already holds (content-store.ts). Absent: not decided (no).
   */
  contentStore?: Decision;
  /** Where the commands run, when either is used. */
  shell?: HostShell;
}

/** What one host offers: root, and GNU tar 1.28+ (for --sort). */
export interface HostOffers {
  root: boolean;
  gnuTar: boolean;
}

/** Ask a host what it offers (one command). */
export function askHost(shell: HostShell): Promise<HostOffers> {
  return capture(shell, ['sh', '-c', 'id -u; tar --version 2>/dev/null | head -n 1']).then(
    ({ code, stdout }) => {
      const [uid, tarLine] = stdout.split('\n');
      const m = /GNU tar\)? (\d+)\.(\d+)/.exec(tarLine ?? '');
      return { root: code === 0 && uid?.trim() === '0', gnuTar: !!m && (Number(m[1]) > 1 || Number(m[2]) >= 28) };
    },
    () => ({ root: false, gnuTar: false }),
  );
}

type Facts = Pick<EngineFacts, 'remapped' | 'containerdStore' | 'storageDriver' | 'rootDir' | 'endpoint'>;
type Quirks = Pick<EngineQuirks, 'hostVolumeDirs' | 'dockerLayerStore'>;
/** What the decision reads of an engine. */
type EngineView = { facts: Facts; quirks: Quirks; host?: HostShell };

/** Why the engine alone rules each fast path out, before its host is asked; undefined where it does not. Pure. */
export function engineRefusals(
  facts: Facts & Quirks,
  shell: HostShell | undefined,
  env: HostEnv,
): { volumes?: string; layers?: string; contentStore?: string } {
  return {
    volumes: hostAccessRefusal(
      { ...facts, host: !!shell },
      { Driver: 'local', Options: null, Mountpoint: '/' },
      env.FERRY_HOST_VOLUMES,
    ),
    layers: layerStoreRefusal(facts, shell, env.FERRY_HOST_LAYERS),
    contentStore: contentStoreRefusal(facts, shell, env.FERRY_HOST_LAYERS),
  };
}

/** The decision, from the engine's refusals and what its host offers (undefined: not asked). Pure; unit-tested. */
export function decideHostAccess(
  early: { volumes?: string; layers?: string; contentStore?: string },
  offers: HostOffers | undefined,
  where: string,
): { volumes: Decision; layers: Decision; contentStore: Decision } {
  const notRoot = `not root on ${where}`;
  const volumes: Decision = early.volumes
    ? { use: false, reason: early.volumes }
    : !offers?.root
      ? { use: false, reason: notRoot }
      : !offers.gnuTar
        ? { use: false, reason: `no GNU tar 1.28 or newer on ${where}` }
        : { use: true, reason: `root on ${where}, with GNU tar 1.28+` };
  const layers: Decision = early.layers
    ? { use: false, reason: early.layers }
    : !offers?.root
      ? { use: false, reason: notRoot }
      : { use: true, reason: `root on ${where}, Docker's overlay2 layer store` };
  const contentStore: Decision = early.contentStore
    ? { use: false, reason: early.contentStore }
    : !offers?.root
      ? { use: false, reason: notRoot }
      : { use: true, reason: `root on ${where}, containerd's content store` };
  return { volumes, layers, contentStore };
}

/** What one engine's host offers (asks the host only where the engine does not rule both out). */
export async function hostAccess(
  engine: EngineView,
  env: HostEnv,
  ask: (shell: HostShell) => Promise<HostOffers> = askHost,
): Promise<HostAccess> {
  const shell = engine.host;
  const early = engineRefusals({ ...engine.facts, ...engine.quirks }, shell, env);
  const offers = shell && (!early.volumes || !early.layers || !early.contentStore) ? await ask(shell) : undefined;
  return { ...decideHostAccess(early, offers, shell?.where ?? engine.facts.endpoint), ...(shell ? { shell } : {}) };
}

/**
 * For one run: each engine's HostAccess, decided on first use and kept for the run (each host
 * asked once, even when two engines share it); the decision goes to the debug channel.
 */
export function hostAccessFor(env: HostEnv, debug: Debug = noDebug): (engine: EngineView) => Promise<HostAccess> {
  const byEngine = new WeakMap<object, Promise<HostAccess>>();
  const byShell = new WeakMap<HostShell, Promise<HostOffers>>();
  const ask = (shell: HostShell) => {
    let p = byShell.get(shell);
    if (!p) byShell.set(shell, (p = askHost(shell)));
    return p;
  };
  return (engine) => {
    let p = byEngine.get(engine);
    if (!p) {
      p = hostAccess(engine, env, ask).then((a) => {
        const say = (d: Decision) => `${d.use ? 'yes' : 'no'} (${d.reason})`;
        debug(
          `host access for ${engine.facts.endpoint}: volumes by host-tar ${say(a.volumes)}; images from the layer-store ${say(a.layers)}; containerd content store ${a.contentStore ? say(a.contentStore) : 'no'}`,
        );
        return a;
      });
      byEngine.set(engine, p);
    }
    return p;
  };
}
