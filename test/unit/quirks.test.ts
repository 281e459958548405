import { describe, expect, it } from 'vitest';
import { quirksFor } from '../../src/engine/quirks.js';

describe('quirksFor: what differs from Docker, decided once at connect', () => {
  it('Docker: none of the quirks', () => {
    expect(quirksFor({ podman: false, containerdStore: false })).toEqual({
      defaultBridge: 'bridge',
      defaultRuntime: 'runc',
      hostnameInEnv: false,
      bindsWithDefaultOptions: false,
      ulimitsAsRlimit: false,
      ownLogDriverNames: false,
      commitNeedsBody: false,
      archiveKeepsOwners: true,
      archiveAppliesRootEntry: false,
      chownsVolumeOnFirstStart: false,
      helperProbesHost: true,
      loadsPartialImages: true,
      hostVolumeDirs: true,
      dockerLayerStore: true,
    });
  });

  it('Podman: every one of them', () => {
    expect(quirksFor({ podman: true, containerdStore: false })).toEqual({
      defaultBridge: 'podman',
      defaultRuntime: 'oci',
      hostnameInEnv: true,
      bindsWithDefaultOptions: true,
      ulimitsAsRlimit: true,
      ownLogDriverNames: true,
      commitNeedsBody: true,
      archiveKeepsOwners: false,
      archiveAppliesRootEntry: true,
      chownsVolumeOnFirstStart: true,
      helperProbesHost: false,
      loadsPartialImages: false,
      hostVolumeDirs: false,
      dockerLayerStore: false,
    });
  });
  it('Docker with the containerd image store: whole image archives only, no layer store to read', () => {
    const q = quirksFor({ podman: false, containerdStore: true });
    expect(q.loadsPartialImages).toBe(false);
    expect(q.dockerLayerStore).toBe(false);
    // Everything else is Docker's
    const docker = quirksFor({ podman: false, containerdStore: false });
    expect({ ...q, loadsPartialImages: true, dockerLayerStore: true }).toEqual(docker);
  });
});
