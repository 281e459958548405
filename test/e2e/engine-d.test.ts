/**
 * Engine D: Docker 28 on containerd 2 with the containerd image store. A backup made there
 * restores there, and containers migrate between two containerd-store engines (C, Docker 26 on
 * containerd 1.7, and D), both ways: the case a single containerd-store engine cannot cover.
 * The second migration of the same image finds the base layers already on the target (the
 * shared-base case that once failed on a containerd store with `failed to resolve layers`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildBaseImage,
  cleanup,
  docker,
  ENGINE_C,
  ENGINE_D,
  exists,
  ferry,
  inspect,
  removeSnapshots,
  runLayeredService,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

const name = uid('engd');
const vol = `${name}-data`;
const base = `ferry-test/engd-base-${name}:1`;
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-engd-'));

/** What a migration reports about its image (--json). */
interface Shipped {
  ok: boolean;
  imageBytes: number;
  skippedLayers: number;
  totalLayers: number;
}

/** The settings a user gave the container, as `docker inspect` shows them. */
function settings(container: string, host: string) {
  const i = inspect('container', container, host);
  return {
    env: (i.Config.Env as string[]).filter((e) => !e.startsWith('HOSTNAME=')).sort(),
    labels: i.Config.Labels,
    cmd: i.Config.Cmd,
    workdir: i.Config.WorkingDir,
    restart: i.HostConfig.RestartPolicy,
    mounts: (i.Mounts as { Type: string; Name?: string; Destination: string }[]).map((m) => [
      m.Type,
      m.Name,
      m.Destination,
    ]),
  };
}

/** The container's own files (writable layer over the base image) and volume file. */
const files = (host: string) => docker(['exec', name, 'cat', '/top.txt', '/base.txt', '/data/d/f'], { host });

/** Run the test container on `host` from the base image, with a volume and a changed writable layer. */
function runOn(host: string) {
  runLayeredService(name, base, vol, host, ['--network', 'none', '-w', '/data']);
}

beforeAll(() => {
  // A base image built on engine C, with a 2 MB layer of its own; engine D does not hold it yet.
  for (const host of [ENGINE_C, ENGINE_D]) cleanup(host, { containers: [name], volumes: [vol] });
  buildBaseImage(base, 'echo base > /base.txt && head -c 2000000 /dev/urandom > /base.bin', ENGINE_C, []);
});

afterAll(() => {
  for (const host of [ENGINE_C, ENGINE_D]) {
    cleanup(host, { containers: [name], volumes: [vol], images: [base] });
  }
  removeSnapshots([name], [ENGINE_C, ENGINE_D]);
  rmSync(dir, { recursive: true, force: true });
});

describe('engine D (Docker 28, containerd 2, containerd image store)', () => {
  let original: ReturnType<typeof settings>;
  let listing = '';

  it('is Docker 28 with the containerd snapshotter', () => {
    const v = JSON.parse(docker(['version', '--format', '{{json .Server}}'], { host: ENGINE_D }));
    expect(v.Version).toMatch(/^28\./);
    expect(docker(['info', '--format', '{{json .DriverStatus}}'], { host: ENGINE_D })).toContain(
      'io.containerd.snapshotter.v1',
    );
  });

  it('migrates C -> D (containerd store to containerd store), base layers not on D', async () => {
    runOn(ENGINE_C);
    await waitFor('the container files', () => files(ENGINE_C) === 'layer\nbase\nvolume');
    original = settings(name, ENGINE_C);
    listing = volumeListing(vol, ENGINE_C);
    expect(exists('image', base, ENGINE_D)).toBe(false);
    const r = await ferry(['-H', ENGINE_C, 'migrate', name, '--to', ENGINE_D, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    expect(settings(name, ENGINE_D)).toEqual(original);
    expect(volumeListing(vol, ENGINE_D)).toBe(listing);
    expect(inspect('container', name, ENGINE_D).State.Running).toBe(true);
    expect(files(ENGINE_D)).toBe('layer\nbase\nvolume');
    expect(docker(['exec', name, 'md5sum', '/base.bin'], { host: ENGINE_D })).toBe(
      docker(['exec', name, 'md5sum', '/base.bin'], { host: ENGINE_C }),
    );
  });

  it('migrates D -> C, with the base layers already on C', async () => {
    cleanup(ENGINE_C, { containers: [name], volumes: [vol] });
    expect(exists('container', name, ENGINE_C)).toBe(false);
    docker(['exec', name, 'sh', '-c', 'echo from-d > /top.txt'], { host: ENGINE_D });
    const r = await ferry(['-H', ENGINE_D, 'migrate', name, '--to', ENGINE_C, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    // C holds the base image's layers: they are left out, the 2 MB layer with them.
    expect(res.skippedLayers).toBeGreaterThan(0);
    expect(res.skippedLayers).toBeLessThan(res.totalLayers);
    expect(res.imageBytes).toBeLessThan(1_000_000);
    expect(settings(name, ENGINE_C)).toEqual(original);
    expect(volumeListing(vol, ENGINE_C)).toBe(listing);
    expect(inspect('container', name, ENGINE_C).State.Running).toBe(true);
    expect(files(ENGINE_C)).toBe('from-d\nbase\nvolume');
  });

  it('migrates C -> D again, the shared base layers already on D', async () => {
    cleanup(ENGINE_D, { containers: [name], volumes: [vol] });
    expect(exists('container', name, ENGINE_D)).toBe(false);
    // A top layer D has not seen. The base image's layers are in D's store since the first
    // migration, held by the image that migration made there (left in place: removing it would
    // let containerd collect them).
    docker(['exec', name, 'sh', '-c', 'echo again > /top.txt'], { host: ENGINE_C });
    const r = await ferry(['-H', ENGINE_C, 'migrate', name, '--to', ENGINE_D, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    expect(res.skippedLayers).toBeGreaterThan(0);
    expect(res.imageBytes).toBeLessThan(1_000_000);
    expect(settings(name, ENGINE_D)).toEqual(original);
    expect(volumeListing(vol, ENGINE_D)).toBe(listing);
    expect(inspect('container', name, ENGINE_D).State.Running).toBe(true);
    expect(files(ENGINE_D)).toBe('again\nbase\nvolume');
  });

  it('backs up on D and restores on D', async () => {
    const r = await ferry(['-H', ENGINE_D, 'backup', name, '-o', dir, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const bundle = (JSON.parse(r.stdout) as { bundle: string }).bundle;
    expect(inspect('container', name, ENGINE_D).State.Running).toBe(true);
    cleanup(ENGINE_D, { containers: [name], volumes: [vol] });
    expect(exists('volume', vol, ENGINE_D)).toBe(false);
    const back = await ferry(['-H', ENGINE_D, 'restore', bundle]);
    expect(back.code, back.stderr).toBe(0);
    expect(settings(name, ENGINE_D)).toEqual(original);
    expect(volumeListing(vol, ENGINE_D)).toBe(listing);
    expect(inspect('container', name, ENGINE_D).State.Running).toBe(true);
    expect(files(ENGINE_D)).toBe('again\nbase\nvolume');
  });
});
