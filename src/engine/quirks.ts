/**
 * How an engine's Docker-compatible API differs from Docker's, decided once when the engine is
 * connected (quirksFor), so that code above engine/ asks about a behaviour, never about which
 * engine it talks to. Each field says which engines have it and why ferry cares.
 */
import type { EngineFacts } from './engine.js';

export interface EngineQuirks {
  /**
   * The name of the default bridge network. Docker: "bridge"; Podman: "podman". Captured as
   * "bridge"; a container created on the default bridge goes on this one.
   */
  defaultBridge: 'bridge' | 'podman';
  /** The runtime inspect reports for a container that asked for none. Docker: "runc"; Podman: "oci". */
  defaultRuntime: 'runc' | 'oci';
  /** The engine puts HOSTNAME=<hostname> in every container's environment. Podman: yes; Docker: no. */
  hostnameInEnv: boolean;
  /**
   * Inspect spells out a bind's default options (`rw,rprivate,nosuid,nodev,rbind`), some of which
   * Docker refuses at create. Podman: yes; Docker: no.
   */
  bindsWithDefaultOptions: boolean;
  /** Inspect names ulimits as RLIMIT_NOFILE where Docker wants nofile. Podman: yes; Docker: no. */
  ulimitsAsRlimit: boolean;
  /**
   * Log drivers have the engine's own names (k8s-file, passthrough), so a container's log driver
   * is not looked up in the engine's list. Podman: yes; Docker: no.
   */
  ownLogDriverNames: boolean;
  /** The engine refuses a commit without a JSON body (docker-modem drops `{}`). Podman: yes; Docker: no. */
  commitNeedsBody: boolean;
  /**
   * The archive endpoint (GET /containers/{id}/archive) keeps file owners. Docker: yes; Podman:
   * no, every owner is 0:0, so volumes are read with the tar of the container's image in a helper.
   */
  archiveKeepsOwners: boolean;
  /**
   * PUT /containers/{id}/archive applies a `./` entry to the target directory itself. Podman:
   * yes; Docker: no (the root entry goes in from one level up).
   */
  archiveAppliesRootEntry: boolean;
  /**
   * The engine chowns (and chmods) a new volume's root to the container's mount point the first
   * time a container using it starts, undoing a restored root's owner. Podman: yes; Docker: no.
   */
  chownsVolumeOnFirstStart: boolean;
  /**
   * A helper container answers questions about the engine's host: the engine refuses a missing
   * bind source at create, and binds host ports and gathers devices before it runs the
   * entrypoint. Docker: yes; Podman: no (it checks at start, in another order).
   */
  helperProbesHost: boolean;
  /**
   * The engine loads a docker-archive without the layer files it already has, so an image is
   * shipped without them. Docker with its own image store: yes. Podman and Docker with the
   * containerd image store: no (they refuse an archive whose layer files are not all there: "failed
   * to resolve layers: layer … not found"). The containerd store takes an OCI archive without the
   * blobs its content store holds instead (data/oci.ts, data/content-store.ts).
   */
  loadsPartialImages: boolean;
  /**
   * Ferry may read and write a local volume in its directory on the engine's host (host-volume.ts).
   * Docker: yes; Podman: no.
   */
  hostVolumeDirs: boolean;
  /**
   * Images are in Docker's own layer store (`image/<driver>` under DockerRootDir), which ferry
   * may read on the engine's host (host-image.ts). Docker with its own image store: yes. Podman
   * (containers/storage) and Docker with the containerd image store (containerd's content store and
   * snapshotter): no.
   */
  dockerLayerStore: boolean;
}

/** The quirks of an engine, from what it said about itself when connected. Pure; unit-tested. */
export function quirksFor(facts: Pick<EngineFacts, 'podman' | 'containerdStore'>): EngineQuirks {
  const podman = facts.podman;
  const containerd = facts.containerdStore;
  return {
    defaultBridge: podman ? 'podman' : 'bridge',
    defaultRuntime: podman ? 'oci' : 'runc',
    hostnameInEnv: podman,
    bindsWithDefaultOptions: podman,
    ulimitsAsRlimit: podman,
    ownLogDriverNames: podman,
    commitNeedsBody: podman,
    archiveKeepsOwners: !podman,
    archiveAppliesRootEntry: podman,
    chownsVolumeOnFirstStart: podman,
    helperProbesHost: !podman,
    loadsPartialImages: !podman && !containerd,
    hostVolumeDirs: !podman,
    dockerLayerStore: !podman && !containerd,
  };
}
