/**
 * Migrations between the two kinds of engine operators run: Docker 20.10 with overlay2 and
 * Docker 26 with the containerd image store. The everyday case is a target that already holds
 * the image's base layers (a shared base image): the container, its writable layer and its volume
 * arrive, and so does everything that makes it the same service, in both directions.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
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
  sshHome,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

const name = uid('xeng');
const vol = `${name}-data`;
const base = `ferry-test/xeng-base-${name}:1`;

/** What a migration reports about its image (--json). */
interface Shipped {
  ok: boolean;
  imageBytes: number;
  skippedLayers: number;
  totalLayers: number;
  dataPaths: {
    images: { path: string; target?: { path: string; fallback?: { from: string; reason: string } } }[];
  };
}

/**
 * Whether the image a container runs on `host` saves whole: every layer file its save's
 * manifest.json names is in the archive (an image loaded without a blob its store lacks saves
 * without it, silently).
 */
function savesWhole(container: string, host: string): { layers: number; missing: string[] } {
  const image = inspect('container', container, host).Config.Image as string;
  const r = sh(
    `f=$(mktemp) && docker -H ${host} save ${image} >"$f" && tar -xOf "$f" manifest.json && echo && tar -tf "$f"; rm -f "$f"`,
  );
  if (r.code !== 0) throw new Error(`save ${image}: ${r.stderr}`);
  const [manifest, ...names] = r.stdout.split('\n');
  const layers = (JSON.parse(manifest!) as { Layers: string[] }[])[0]!.Layers;
  return { layers: layers.length, missing: layers.filter((l) => !names.includes(l)) };
}

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
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    // The base layers are in the target's content store (loaded from a 20.10 save): only the
    // container's own layer goes, in an OCI archive that names the target's blobs for the rest.
    expect(res.dataPaths.images[0]!.target).toEqual({ path: 'content-store' });
    expect(res.skippedLayers).toBe(res.totalLayers - 1);
    expect(res.imageBytes).toBeLessThan((inspect('image', base, DOCKER_20).Size as number) / 2);
    expect(savesWhole(name, DOCKER_26_CONTAINERD)).toEqual({ layers: res.totalLayers, missing: [] });
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
    // Read from the source's content store (the image's blobs as they are), without the base
    // layers 20.10 has.
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.dataPaths.images[0]).toMatchObject({ path: 'content-store', target: { path: 'engine-load' } });
    expect(res.skippedLayers).toBeGreaterThan(0);
    expect(res.skippedLayers).toBeLessThan(res.totalLayers);
    const baseBytes = inspect('image', base, DOCKER_20).Size as number;
    expect(res.imageBytes).toBeLessThan(baseBytes / 2);
    expect(settings(name, DOCKER_20)).toEqual(original);
    expect(volumeListing(vol, DOCKER_20)).toBe(listing);
    expect(inspect('container', name, DOCKER_20).State.Running).toBe(true);
    expect(docker(['exec', name, 'cat', '/top.txt', '/base.txt'], { host: DOCKER_20 })).toBe('layer\nbase');
  });

  it('20.10 -> ssh:// whose engine is the containerd store: the content store read over SSH', async () => {
    cleanup(DOCKER_26_CONTAINERD, { containers: [name], volumes: [vol] });
    // A top layer engine C has not seen (the first test sent the one before).
    docker(['exec', name, 'sh', '-c', 'echo over-ssh > /ssh.txt'], { host: DOCKER_20 });
    const { home } = sshHome(mkdtempSync(path.join(tmpdir(), 'ferry-xeng-ssh-')));
    // OpenSSH reads the passwd entry's home, not $HOME: the config is named (ferry reads $HOME's).
    const cfg = path.join(home, '.ssh', 'config');
    expect(sh(`ssh -F '${cfg}' ctrdhost "docker info --format '{{.DockerRootDir}}'"`).stdout.trim()).toBe(
      '/var/lib/docker-c',
    );
    const r = await ferry(['-H', DOCKER_20, 'migrate', name, '--to', 'ssh://ctrdhost', '--json'], {
      env: { HOME: home },
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.dataPaths.images[0]!.target).toEqual({ path: 'content-store' });
    expect(res.skippedLayers).toBe(res.totalLayers - 1);
    expect(res.imageBytes).toBeLessThan((inspect('image', base, DOCKER_20).Size as number) / 2);
    expect(savesWhole(name, DOCKER_26_CONTAINERD)).toEqual({ layers: res.totalLayers, missing: [] });
    expect(settings(name, DOCKER_26_CONTAINERD)).toEqual(original);
    expect(volumeListing(vol, DOCKER_26_CONTAINERD)).toBe(listing);
    expect(inspect('container', name, DOCKER_26_CONTAINERD).State.Running).toBe(true);
    expect(docker(['exec', name, 'cat', '/ssh.txt', '/top.txt', '/base.txt'], { host: DOCKER_26_CONTAINERD })).toBe(
      'over-ssh\nlayer\nbase',
    );
  });
});

// A base image built on the containerd store (its layers gzip-compressed there, so a blob's digest
// is not the layer's diff ID) and loaded into 20.10: the everyday case of a base pulled from a
// registry by the containerd engine.
describe('migrate with a base image whose layers the containerd store holds compressed', () => {
  const name2 = uid('xgz');
  const base2 = `ferry-test/xgz-base-${name2}:1`;

  beforeAll(() => {
    docker(
      [
        'run',
        '--network',
        'none',
        '--name',
        `${name2}-build`,
        BUSYBOX,
        'sh',
        '-c',
        'head -c 3000000 /dev/urandom > /base.bin',
      ],
      { host: DOCKER_26_CONTAINERD },
    );
    docker(['commit', `${name2}-build`, base2], { host: DOCKER_26_CONTAINERD });
    docker(['rm', `${name2}-build`], { host: DOCKER_26_CONTAINERD });
    const load = `docker -H ${DOCKER_26_CONTAINERD} save ${base2} | docker -H ${DOCKER_20} load`;
    const r = sh(load);
    if (r.code !== 0) throw new Error(`${load}: ${r.stderr}`);
    docker(
      ['run', '-d', '--name', name2, base2, 'sh', '-c', '[ -f /top.txt ] || echo top > /top.txt; exec sleep 100000'],
      { host: DOCKER_20 },
    );
  });

  afterAll(() => {
    for (const host of [DOCKER_20, DOCKER_26_CONTAINERD]) cleanup(host, { containers: [name2], images: [base2] });
    removeSnapshots([name2], [DOCKER_20, DOCKER_26_CONTAINERD]);
  });

  const sum = (host: string) => docker(['exec', name2, 'sh', '-c', 'cat /top.txt; md5sum /base.bin'], { host });

  it('20.10 -> containerd store with FERRY_HOST_LAYERS=0: the whole image, saying why', async () => {
    await waitFor('the top layer', () => docker(['exec', name2, 'cat', '/top.txt'], { host: DOCKER_20 }) === 'top');
    const want = sum(DOCKER_20);
    const r = await ferry(['-H', DOCKER_20, 'migrate', name2, '--to', DOCKER_26_CONTAINERD, '--json'], {
      env: { FERRY_HOST_LAYERS: '0' },
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.dataPaths.images[0]!.target).toEqual({
      path: 'engine-load',
      fallback: { from: 'content-store', reason: 'FERRY_HOST_LAYERS=0' },
    });
    expect(res.skippedLayers).toBe(0);
    expect(res.imageBytes).toBeGreaterThan(3000000);
    expect(sum(DOCKER_26_CONTAINERD)).toBe(want);
    expect(savesWhole(name2, DOCKER_26_CONTAINERD).missing).toEqual([]);
  });

  it("20.10 -> containerd store: the base layers go by the target's compressed blobs", async () => {
    cleanup(DOCKER_26_CONTAINERD, { containers: [name2] });
    // A top layer the target has not seen yet (the last migration sent the one before).
    docker(['exec', name2, 'sh', '-c', 'echo top2 > /top.txt'], { host: DOCKER_20 });
    const want = sum(DOCKER_20);
    expect(want).toMatch(/^top2\n/);
    const r = await ferry(['-H', DOCKER_20, 'migrate', name2, '--to', DOCKER_26_CONTAINERD, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.dataPaths.images[0]!.target).toEqual({ path: 'content-store' });
    expect(res.skippedLayers).toBe(res.totalLayers - 1);
    expect(res.imageBytes).toBeLessThan(100000);
    expect(sum(DOCKER_26_CONTAINERD)).toBe(want);
    expect(inspect('container', name2, DOCKER_26_CONTAINERD).State.Running).toBe(true);
    expect(savesWhole(name2, DOCKER_26_CONTAINERD)).toEqual({ layers: res.totalLayers, missing: [] });
  });

  it("containerd store -> 20.10: the compressed base blobs are known by the source's manifest and left out", async () => {
    cleanup(DOCKER_20, { containers: [name2] });
    const want = sum(DOCKER_26_CONTAINERD);
    const r = await ferry(['-H', DOCKER_26_CONTAINERD, 'migrate', name2, '--to', DOCKER_20, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.dataPaths.images[0]).toMatchObject({ path: 'content-store', target: { path: 'engine-load' } });
    expect(res.skippedLayers).toBeGreaterThanOrEqual(2);
    expect(res.skippedLayers).toBeLessThan(res.totalLayers);
    expect(res.imageBytes).toBeLessThan(100000);
    expect(sum(DOCKER_20)).toBe(want);
    expect(inspect('container', name2, DOCKER_20).State.Running).toBe(true);
  });
});
