/**
 * Migrations between the two kinds of engine operators run: Docker 20.10 with overlay2 and
 * Docker 26 with the containerd image store. The everyday case is a target that already holds
 * the image's base layers (a shared base image): the container, its writable layer and its volume
 * arrive, and so does everything that makes it the same service, in both directions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  DOCKER_20,
  DOCKER_26_CONTAINERD,
  exists,
  ferry,
  inspect,
  removeSnapshots,
  sh,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

const name = uid('xeng');
const vol = `${name}-data`;
const base = `ferry-test/xeng-base-${name}:1`;

/** The settings a user gave the container, as `docker inspect` shows them. */
function settings(container: string, host: string) {
  const i = inspect('container', container, host);
  return {
    env: (i.Config.Env as string[]).filter((e) => !e.startsWith('HOSTNAME=')).sort(),
    labels: i.Config.Labels,
    cmd: i.Config.Cmd,
    restart: i.HostConfig.RestartPolicy,
    mounts: (i.Mounts as { Type: string; Name?: string; Destination: string }[]).map((m) => [
      m.Type,
      m.Name,
      m.Destination,
    ]),
  };
}

beforeAll(() => {
  // A base image both engines hold (loaded from one save, as a shared base image would be).
  docker(['run', '--name', `${name}-build`, BUSYBOX, 'sh', '-c', 'echo base > /base.txt'], { host: DOCKER_20 });
  docker(['commit', `${name}-build`, base], { host: DOCKER_20 });
  docker(['rm', `${name}-build`], { host: DOCKER_20 });
  const load = `docker -H ${DOCKER_20} save ${base} | docker -H ${DOCKER_26_CONTAINERD} load`;
  const r = sh(load);
  if (r.code !== 0) throw new Error(`${load}: ${r.stderr}`);
  docker(
    [
      'run',
      '-d',
      '--name',
      name,
      '-e',
      'MODE=production',
      '--label',
      'team=ops',
      '--restart',
      'unless-stopped',
      '-v',
      `${vol}:/data`,
      base,
      'sh',
      '-c',
      '[ -f /data/d/f ] || { echo layer > /top.txt; mkdir -p /data/d; echo volume > /data/d/f; }; exec sleep 100000',
    ],
    { host: DOCKER_20 },
  );
});

afterAll(() => {
  for (const host of [DOCKER_20, DOCKER_26_CONTAINERD]) {
    cleanup(host, { containers: [name], volumes: [vol], images: [base] });
  }
  removeSnapshots([name], [DOCKER_20, DOCKER_26_CONTAINERD]);
});

describe('migrate between Docker 20.10 (overlay2) and Docker 26 (containerd image store)', () => {
  let original: ReturnType<typeof settings>;
  let listing = '';

  it('20.10 -> containerd store, with the base image already there', async () => {
    await waitFor(
      'the volume data',
      () => docker(['exec', name, 'cat', '/data/d/f'], { host: DOCKER_20 }) === 'volume',
    );
    original = settings(name, DOCKER_20);
    listing = volumeListing(vol, DOCKER_20);
    const r = await ferry(['-H', DOCKER_20, 'migrate', name, '--to', DOCKER_26_CONTAINERD, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).ok).toBe(true);
    expect(settings(name, DOCKER_26_CONTAINERD)).toEqual(original);
    expect(volumeListing(vol, DOCKER_26_CONTAINERD)).toBe(listing);
    expect(inspect('container', name, DOCKER_26_CONTAINERD).State.Running).toBe(true);
    expect(docker(['exec', name, 'cat', '/top.txt', '/base.txt'], { host: DOCKER_26_CONTAINERD })).toBe('layer\nbase');
  });

  it('containerd store -> 20.10, with the base image already there', async () => {
    cleanup(DOCKER_20, { containers: [name], volumes: [vol] });
    expect(exists('container', name, DOCKER_20)).toBe(false);
    const r = await ferry(['-H', DOCKER_26_CONTAINERD, 'migrate', name, '--to', DOCKER_20, '--json']);
    expect(r.code, r.stderr).toBe(0);
    // The engine's save is an OCI layout there; the base layers 20.10 has are left out of it.
    const res = JSON.parse(r.stdout) as { skippedLayers: number; totalLayers: number; imageBytes: number };
    expect(res.skippedLayers).toBeGreaterThan(0);
    expect(res.skippedLayers).toBeLessThan(res.totalLayers);
    const baseBytes = inspect('image', base, DOCKER_20).Size as number;
    expect(res.imageBytes).toBeLessThan(baseBytes / 2);
    expect(settings(name, DOCKER_20)).toEqual(original);
    expect(volumeListing(vol, DOCKER_20)).toBe(listing);
    expect(inspect('container', name, DOCKER_20).State.Running).toBe(true);
    expect(docker(['exec', name, 'cat', '/top.txt', '/base.txt'], { host: DOCKER_20 })).toBe('layer\nbase');
  });
});
