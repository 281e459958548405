/**
 * Migrations between the two kinds of engine operators run: Docker 20.10 with overlay2 (engine A)
 * and each engine of the lab with the containerd image store: engine C (Docker 26 on containerd
 * 1.7) and engine D (Docker 28 on containerd 2.1). The everyday case is a target that already holds
 * the image's base layers (a shared base image): the container, its writable layer and its volume
 * arrive, and so does everything that makes it the same service, in every direction: 20.10 → the
 * containerd store, back, and from the containerd store to an `ssh://` engine.
 *
 * Every engine is named here, whatever the run's primary engine (FERRY_E2E_ENGINE): this file runs
 * in the default run only (it is not in containerd-suite.txt), so each case runs once in CI.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildBaseImage,
  cleanup,
  docker,
  DOCKER_20,
  ENGINE_B,
  ENGINE_C,
  ENGINE_D,
  exists,
  ferry,
  inspect,
  removeSnapshots,
  runLayeredService,
  sh,
  sshHome,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

/** The containerd-store engines of the lab. `sshd`: the ~/.ssh/config host (sshHome) whose engine it is. */
const ENGINES = [
  { engine: 'C', version: 'Docker 26, containerd 1.7', host: ENGINE_C, sshd: 'ctrdhost' as string | undefined },
  { engine: 'D', version: 'Docker 28, containerd 2.1', host: ENGINE_D, sshd: undefined },
];

/** The base image every engine holds (loaded from one save, as a shared base image would be). */
const baseId = uid('xeng-base');
const base = `ferry-test/${baseId}:1`;

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

/**
 * Inspect fields each engine fills in for itself: two `docker run`s of the same command on two
 * engines differ there. Hostname (the container's short ID), Image (a restored container runs on
 * ferry's snapshot of the original) and MaskedPaths (the engine's default list, longer on newer
 * engines; ferry keeps only an explicit empty one).
 */
const ENGINE_OWN = ['Config.Hostname', 'Config.Image', 'HostConfig.MaskedPaths'];

/**
 * Fields one engine's inspect has and another's does not, for the same container: KernelMemory
 * and KernelMemoryTCP left the API in 1.42 (20.10 still reports them); DNSNames (API 1.44) and
 * GwPriority (1.48) are new per network. Any other field on one side only fails the comparison:
 * a field a newer engine adds is mapped, or named here, once someone has looked at it.
 */
const ONE_SIDE_ONLY = [
  /^HostConfig\.KernelMemory(TCP)?$/,
  /^Networks\.[^.]+\.DNSNames$/,
  /^Networks\.[^.]+\.GwPriority$/,
];

/**
 * A container as `docker inspect` shows it, flattened to `Config.<key>`, `HostConfig.<key>`,
 * `Mounts` and `Networks.<network>.<key>` (the settings a user gives an endpoint, not its
 * addresses: the engines hand out addresses from pools of their own). Env is sorted; the default
 * bridge's NetworkMode is "default" on 20.10 and "bridge" from API 1.44, which is one setting; an
 * empty list or map and none are one setting too (the docker CLI sends `"Dns": []` where a create
 * through the API that leaves the field out reads `null`), and so are the restart policies "" and
 * "no" (20.10 reads "" for a container created through the API without one, where the CLI sends
 * "no"; Docker 26 and 28 read "no" for both).
 */
function noneIfEmpty(v: unknown): unknown {
  if (v === '' || (Array.isArray(v) && v.length === 0)) return null;
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0) return null;
  return v ?? null;
}

function inspected(container: string, host: string): Map<string, string> {
  const i = inspect('container', container, host);
  const out = new Map<string, string>();
  for (const part of ['Config', 'HostConfig'] as const)
    for (const [k, v] of Object.entries(i[part] as Record<string, unknown>)) {
      let value = v;
      if (part === 'Config' && k === 'Env') value = [...(v as string[])].sort();
      if (part === 'HostConfig' && k === 'NetworkMode' && v === 'default') value = 'bridge';
      if (part === 'HostConfig' && k === 'RestartPolicy' && (v as { Name?: string }).Name === '')
        value = { ...(v as object), Name: 'no' };
      out.set(`${part}.${k}`, JSON.stringify(noneIfEmpty(value)));
    }
  const mounts = (i.Mounts as Record<string, unknown>[]).map(({ Source: _, ...m }) => m);
  out.set('Mounts', JSON.stringify(mounts));
  for (const [net, ep] of Object.entries(i.NetworkSettings.Networks as Record<string, Record<string, unknown>>))
    for (const k of ['Aliases', 'IPAMConfig', 'Links', 'DriverOpts', 'DNSNames', 'GwPriority'])
      if (k in ep) out.set(`Networks.${net}.${k}`, JSON.stringify(noneIfEmpty(ep[k])));
  for (const k of ENGINE_OWN) out.delete(k);
  return out;
}

/**
 * Check a restored container against the original's inspect: every field both engines report is
 * the same, and a field only one reports is one ONE_SIDE_ONLY names.
 */
function expectSameContainer(restored: Map<string, string>, original: Map<string, string>) {
  const both = (m: Map<string, string>, other: Map<string, string>) =>
    Object.fromEntries([...m].filter(([k]) => other.has(k)));
  expect(both(restored, original)).toEqual(both(original, restored));
  const oneSide = [...restored.keys(), ...original.keys()].filter((k) => !(restored.has(k) && original.has(k)));
  expect(oneSide.filter((k) => !ONE_SIDE_ONLY.some((re) => re.test(k)))).toEqual([]);
}

beforeAll(() => {
  buildBaseImage(base, 'echo base > /base.txt', DOCKER_20, [ENGINE_B, ...ENGINES.map((e) => e.host)]);
});

afterAll(() => {
  for (const host of [DOCKER_20, ENGINE_B, ...ENGINES.map((e) => e.host)]) cleanup(host, { images: [base] });
});

describe.each(ENGINES)('migrate between Docker 20.10 and engine $engine ($version)', ({ host: target, sshd }) => {
  const name = uid('xeng');
  const vol = `${name}-data`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-xeng-ssh-'));
  const { home } = sshHome(dir);
  let original: Map<string, string>;
  let listing = '';

  beforeAll(() => {
    runLayeredService(name, base, vol, DOCKER_20, [
      ...['-w', '/data', '--cap-add', 'NET_ADMIN', '--memory', '64m', '--init'],
      ...['--stop-signal', 'SIGUSR1', '--tmpfs', '/scratch:size=1m'],
    ]);
  });

  afterAll(() => {
    for (const host of [DOCKER_20, ENGINE_B, target]) cleanup(host, { containers: [name], volumes: [vol] });
    removeSnapshots([name], [DOCKER_20, ENGINE_B, target]);
  });

  /** The restored container on `host` is the original: inspect, volume listing, files, running. */
  function expectRestored(host: string, files: string) {
    expectSameContainer(inspected(name, host), original);
    expect(volumeListing(vol, host)).toBe(listing);
    expect(inspect('container', name, host).State.Running).toBe(true);
    expect(docker(['exec', name, 'sh', '-c', 'cat /top.txt /base.txt /data/d/f'], { host })).toBe(files);
  }

  it('20.10 -> containerd store, with the base image already there: only the top layer goes', async () => {
    await waitFor(
      'the volume data',
      () => docker(['exec', name, 'cat', '/data/d/f'], { host: DOCKER_20 }) === 'volume',
    );
    original = inspected(name, DOCKER_20);
    listing = volumeListing(vol, DOCKER_20);
    const r = await ferry(['-H', DOCKER_20, 'migrate', name, '--to', target, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    // The base layers are in the target's content store (loaded from a 20.10 save): only the
    // container's own layer goes, in an OCI archive that names the target's blobs for the rest.
    expect(res.dataPaths.images[0]!.target).toEqual({ path: 'content-store' });
    expect(res.skippedLayers).toBe(res.totalLayers - 1);
    expect(res.imageBytes).toBeLessThan((inspect('image', base, DOCKER_20).Size as number) / 2);
    expect(savesWhole(name, target)).toEqual({ layers: res.totalLayers, missing: [] });
    expectRestored(target, 'layer\nbase\nvolume');
  });

  it('containerd store -> 20.10, with the base image already there', async () => {
    cleanup(DOCKER_20, { containers: [name], volumes: [vol] });
    expect(exists('container', name, DOCKER_20)).toBe(false);
    docker(['exec', name, 'sh', '-c', 'echo back > /top.txt'], { host: target });
    const r = await ferry(['-H', target, 'migrate', name, '--to', DOCKER_20, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    // Read from the source's content store (the image's blobs as they are), without the base
    // layers 20.10 has.
    expect(res.dataPaths.images[0]).toMatchObject({ path: 'content-store', target: { path: 'engine-load' } });
    expect(res.skippedLayers).toBeGreaterThan(0);
    expect(res.skippedLayers).toBeLessThan(res.totalLayers);
    expect(res.imageBytes).toBeLessThan((inspect('image', base, DOCKER_20).Size as number) / 2);
    expectRestored(DOCKER_20, 'back\nbase\nvolume');
  });

  it('containerd store -> ssh:// (Docker 20.10 over SSH), with the base image already there', async () => {
    docker(['exec', name, 'sh', '-c', 'echo to-ssh > /top.txt'], { host: target });
    const r = await ferry(['-H', target, 'migrate', name, '--to', 'ssh://newhost', '--json'], {
      env: { HOME: home },
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    expect(res.skippedLayers).toBeGreaterThan(0);
    expect(res.skippedLayers).toBeLessThan(res.totalLayers);
    expect(res.imageBytes).toBeLessThan((inspect('image', base, DOCKER_20).Size as number) / 2);
    expectRestored(ENGINE_B, 'to-ssh\nbase\nvolume');
  });

  // Only engine C has an sshd of the lab in front of it (127.0.0.1:2224).
  it.runIf(sshd)('20.10 -> ssh:// whose engine is the containerd store: the content store read over SSH', async () => {
    cleanup(target, { containers: [name], volumes: [vol] });
    // A top layer the target has not seen (the migrations before sent other ones).
    docker(['exec', name, 'sh', '-c', 'echo over-ssh > /top.txt'], { host: DOCKER_20 });
    // OpenSSH reads the passwd entry's home, not $HOME: the config is named (ferry reads $HOME's).
    const cfg = path.join(home, '.ssh', 'config');
    const root = docker(['info', '--format', '{{.DockerRootDir}}'], { host: target });
    expect(sh(`ssh -F '${cfg}' ${sshd} "docker info --format '{{.DockerRootDir}}'"`).stdout.trim()).toBe(root);
    const r = await ferry(['-H', DOCKER_20, 'migrate', name, '--to', `ssh://${sshd}`, '--json'], {
      env: { HOME: home },
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.dataPaths.images[0]!.target).toEqual({ path: 'content-store' });
    // Left out: what the target's images hold (busybox, the base, and the first top layer, in the
    // snapshot the first migration made there). Sent: the layers committed since, on 20.10, and
    // on the target by the migrations from it (their snapshots are removed there, so containerd
    // collects their blobs).
    expect(res.skippedLayers).toBeGreaterThanOrEqual(3);
    expect(res.skippedLayers).toBeLessThan(res.totalLayers);
    expect(res.imageBytes).toBeLessThan((inspect('image', base, DOCKER_20).Size as number) / 2);
    expect(savesWhole(name, target)).toEqual({ layers: res.totalLayers, missing: [] });
    expectRestored(target, 'over-ssh\nbase\nvolume');
  });
});

// A base image built on the containerd store (its layers gzip-compressed there, so a blob's digest
// is not the layer's diff ID) and loaded into 20.10: the everyday case of a base pulled from a
// registry by the containerd engine.
describe.each(ENGINES)(
  'migrate with a base image whose layers engine $engine ($version) holds compressed',
  ({ host: target }) => {
    const name2 = uid('xgz');
    const base2 = `ferry-test/xgz-base-${name2}:1`;

    beforeAll(() => {
      buildBaseImage(base2, 'head -c 3000000 /dev/urandom > /base.bin', target, [DOCKER_20]);
      docker(
        ['run', '-d', '--name', name2, base2, 'sh', '-c', '[ -f /top.txt ] || echo top > /top.txt; exec sleep 100000'],
        { host: DOCKER_20 },
      );
    });

    afterAll(() => {
      for (const host of [DOCKER_20, target]) cleanup(host, { containers: [name2], images: [base2] });
      removeSnapshots([name2], [DOCKER_20, target]);
    });

    const sum = (host: string) => docker(['exec', name2, 'sh', '-c', 'cat /top.txt; md5sum /base.bin'], { host });

    it('20.10 -> containerd store with FERRY_HOST_LAYERS=0: the whole image, saying why', async () => {
      await waitFor('the top layer', () => docker(['exec', name2, 'cat', '/top.txt'], { host: DOCKER_20 }) === 'top');
      const want = sum(DOCKER_20);
      const r = await ferry(['-H', DOCKER_20, 'migrate', name2, '--to', target, '--json'], {
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
      expect(sum(target)).toBe(want);
      expect(savesWhole(name2, target).missing).toEqual([]);
    });

    it("20.10 -> containerd store: the base layers go by the target's compressed blobs", async () => {
      cleanup(target, { containers: [name2] });
      // A top layer the target has not seen yet (the last migration sent the one before).
      docker(['exec', name2, 'sh', '-c', 'echo top2 > /top.txt'], { host: DOCKER_20 });
      const want = sum(DOCKER_20);
      expect(want).toMatch(/^top2\n/);
      const r = await ferry(['-H', DOCKER_20, 'migrate', name2, '--to', target, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as Shipped;
      expect(res.dataPaths.images[0]!.target).toEqual({ path: 'content-store' });
      expect(res.skippedLayers).toBe(res.totalLayers - 1);
      expect(res.imageBytes).toBeLessThan(100000);
      expect(sum(target)).toBe(want);
      expect(inspect('container', name2, target).State.Running).toBe(true);
      expect(savesWhole(name2, target)).toEqual({ layers: res.totalLayers, missing: [] });
    });

    it("containerd store -> 20.10: the compressed base blobs are known by the source's manifest and left out", async () => {
      cleanup(DOCKER_20, { containers: [name2] });
      const want = sum(target);
      const r = await ferry(['-H', target, 'migrate', name2, '--to', DOCKER_20, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as Shipped;
      expect(res.dataPaths.images[0]).toMatchObject({ path: 'content-store', target: { path: 'engine-load' } });
      expect(res.skippedLayers).toBeGreaterThanOrEqual(2);
      expect(res.skippedLayers).toBeLessThan(res.totalLayers);
      expect(res.imageBytes).toBeLessThan(100000);
      expect(sum(DOCKER_20)).toBe(want);
      expect(inspect('container', name2, DOCKER_20).State.Running).toBe(true);
    });
  },
);

const REGISTRY = '127.0.0.1:5000';

// Registry mode across engine kinds: the committed image goes to the lab's registry and the
// restore pulls it by digest, onto the containerd store (which keeps what it pulls in its content
// store, by digest) and from it (which pushes an OCI manifest) onto 20.10.
describe.each(ENGINES)('registry mode between Docker 20.10 and engine $engine ($version)', ({ host: target }) => {
  const name = uid('xreg');
  const vol = `${name}-data`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-xreg-'));
  const env = { DOCKER_CONFIG: path.join(dir, 'docker-config') };
  let original: Map<string, string>;
  let listing = '';

  beforeAll(() => {
    mkdirSync(env.DOCKER_CONFIG);
    docker(
      [
        'run',
        '-d',
        '--name',
        name,
        '-e',
        'WHERE=a',
        '--label',
        'team=ops',
        '-v',
        `${vol}:/data`,
        base,
        'sleep',
        '100000',
      ],
      { host: DOCKER_20 },
    );
    docker(['exec', name, 'sh', '-c', 'echo in-layer > /top.txt; mkdir -p /data/d; echo volume > /data/d/f'], {
      host: DOCKER_20,
    });
  });

  afterAll(() => {
    for (const host of [DOCKER_20, target]) {
      cleanup(host, { containers: [name], volumes: [vol] });
      const imgs = docker(['images', '-q', `${REGISTRY}/ferry-e2e/${name}`], { host, allowFail: true });
      for (const id of new Set(imgs.split('\n').filter(Boolean))) docker(['rmi', '-f', id], { host, allowFail: true });
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** Back the container up on `from` with --image-mode push, remove it on `to`, restore it there. */
  async function pushAndRestore(from: string, to: string, bundle: string) {
    const b = await ferry(
      [
        '-H',
        from,
        'backup',
        name,
        '--image-mode',
        'push',
        '--registry',
        `${REGISTRY}/ferry-e2e`,
        '-o',
        bundle,
        '--json',
      ],
      { env },
    );
    expect(b.code, b.stderr).toBe(0);
    cleanup(to, { containers: [name], volumes: [vol] });
    const r = await ferry(['-H', to, 'restore', bundle, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.dataPaths.images).toEqual([
      { container: name, ref: expect.stringMatching(`^${REGISTRY}/ferry-e2e/${name}:`), path: 'registry' },
    ]);
    expectSameContainer(inspected(name, to), original);
    expect(volumeListing(vol, to)).toBe(listing);
    expect(inspect('container', name, to).State.Running).toBe(true);
    expect(docker(['exec', name, 'cat', '/top.txt', '/base.txt'], { host: to })).toBe('in-layer\nbase');
  }

  it('20.10 pushes, the containerd store pulls by digest', async () => {
    original = inspected(name, DOCKER_20);
    listing = volumeListing(vol, DOCKER_20);
    await pushAndRestore(DOCKER_20, target, path.join(dir, 'from-20.tar'));
  });

  it('the containerd store pushes, 20.10 pulls by digest', async () => {
    await pushAndRestore(target, DOCKER_20, path.join(dir, 'from-ctrd.tar'));
  });
});

/** Put a blob in the lab registry's repository `repo`: its descriptor. */
async function putBlob(repo: string, data: Buffer, mediaType: string) {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const start = await fetch(`http://${REGISTRY}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`upload to ${repo}: ${start.status} ${await start.text()}`);
  const url = new URL(start.headers.get('location')!, `http://${REGISTRY}`);
  url.searchParams.set('digest', digest);
  const put = await fetch(url, { method: 'PUT', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`put blob ${digest}: ${put.status} ${await put.text()}`);
  return { mediaType, digest, size: data.length };
}

/** Put a manifest or index in `repo` as `ref`: its descriptor. */
async function putManifest(repo: string, ref: string, doc: { mediaType: string }) {
  const body = Buffer.from(JSON.stringify(doc));
  const r = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${ref}`, {
    method: 'PUT',
    body,
    headers: { 'Content-Type': doc.mediaType },
  });
  if (r.status !== 201) throw new Error(`put manifest ${repo}:${ref}: ${r.status} ${await r.text()}`);
  return {
    mediaType: doc.mediaType,
    digest: `sha256:${createHash('sha256').update(body).digest('hex')}`,
    size: body.length,
  };
}

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

/**
 * Push `image` (of engine A) to the lab registry as `repo:1`, a multi-platform OCI index:
 * linux/amd64 (the image, its layers gzip-compressed as a registry holds them) and linux/arm64 (a
 * layer of its own). An amd64 engine that pulls it holds the index and the amd64 content only:
 * the index names a manifest whose blobs its content store never gets, as with any multi-platform
 * image pulled by Docker 25+ with the containerd image store.
 */
async function pushMultiPlatform(image: string, repo: string): Promise<string> {
  const tmp = mkdtempSync(path.join(tmpdir(), 'ferry-xmulti-'));
  try {
    const r = sh(`docker -H ${DOCKER_20} save ${image} | tar -xf - -C '${tmp}'`);
    if (r.code !== 0) throw new Error(`save ${image}: ${r.stderr}`);
    const m = (
      JSON.parse(readFileSync(path.join(tmp, 'manifest.json'), 'utf8')) as { Config: string; Layers: string[] }[]
    )[0]!;
    const layers = [];
    for (const l of m.Layers)
      layers.push(await putBlob(repo, gzipSync(readFileSync(path.join(tmp, l))), OCI_LAYER_GZIP));
    const amd64 = await putManifest(repo, 'amd64', {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: await putBlob(repo, readFileSync(path.join(tmp, m.Config)), OCI_CONFIG),
      layers,
    } as { mediaType: string });
    mkdirSync(path.join(tmp, 'arm'));
    writeFileSync(path.join(tmp, 'arm', 'arm64.txt'), 'arm64 only\n');
    const armTar = execFileSync('tar', ['-cf', '-', '-C', path.join(tmp, 'arm'), 'arm64.txt']);
    const armConfig = Buffer.from(
      JSON.stringify({
        architecture: 'arm64',
        os: 'linux',
        config: { Cmd: ['sh'] },
        rootfs: { type: 'layers', diff_ids: [`sha256:${createHash('sha256').update(armTar).digest('hex')}`] },
      }),
    );
    const arm64 = await putManifest(repo, 'arm64', {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: await putBlob(repo, armConfig, OCI_CONFIG),
      layers: [await putBlob(repo, gzipSync(armTar), OCI_LAYER_GZIP)],
    } as { mediaType: string });
    const index = await putManifest(repo, '1', {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { ...amd64, platform: { architecture: 'amd64', os: 'linux' } },
        { ...arm64, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    } as { mediaType: string });
    return index.digest;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// An image as Docker 25+ with the containerd store pulls it: a multi-platform index, pulled while
// the engine already held its layers (the base image, loaded from a 20.10 save), so that its
// content store has no blob of its own for them. The engine's save of it, and of ferry's commit on
// it, is then incomplete: Docker 26 leaves the layer blobs out and exits 0, Docker 28 (platform
// sent) refuses it. ferry must never write such an image into a bundle or send it: it reads the
// layers the store holds under their diff IDs (content-store) and the bundle restores on 20.10;
// with the engine's save only, it fails, leaving nothing that looks like a bundle.
describe.each(ENGINES)('a multi-platform image pulled by engine $engine ($version)', ({ host: source }) => {
  const name = uid('xmulti');
  const vol = `${name}-data`;
  const repo = `ferry-e2e/${name}`;
  const image = `${REGISTRY}/${repo}:1`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-xmulti-'));
  let original: Map<string, string>;
  let listing = '';

  beforeAll(async () => {
    const index = await pushMultiPlatform(base, repo);
    docker(['pull', '-q', image], { host: source });
    // The engine's image is the index (its ID is the index's digest), whose arm64 manifest it
    // never fetched.
    expect(docker(['image', 'inspect', '--format', '{{.Id}}', image], { host: source })).toBe(index);
    docker(['run', '-d', '--name', name, '-v', `${vol}:/data`, '-e', 'MODE=multi', image, 'sleep', '100000'], {
      host: source,
    });
    docker(['exec', name, 'sh', '-c', 'echo on-multi > /top.txt; mkdir -p /data/d; echo volume > /data/d/f'], {
      host: source,
    });
    original = inspected(name, source);
    listing = volumeListing(vol, source);
  });

  afterAll(() => {
    for (const host of [ENGINE_B, source]) cleanup(host, { containers: [name], volumes: [vol], images: [image] });
    removeSnapshots([name], [ENGINE_B, source]);
    rmSync(dir, { recursive: true, force: true });
  });

  function expectRestored(host: string, top: string) {
    expectSameContainer(inspected(name, host), original);
    expect(volumeListing(vol, host)).toBe(listing);
    expect(inspect('container', name, host).State.Running).toBe(true);
    expect(docker(['exec', name, 'sh', '-c', 'cat /top.txt /base.txt /data/d/f'], { host })).toBe(
      `${top}\nbase\nvolume`,
    );
    expect(docker(['exec', name, 'ls', '/'], { host }).split('\n')).not.toContain('arm64.txt');
  }

  /** The files in `d`: none may look like a bundle (a .tar, or a .partial left behind). */
  const filesIn = (d: string) => readdirSync(d);

  it("the engine's save of the image is incomplete (what this table is about)", () => {
    // Docker 26 saves it without its layer blobs; Docker 28's CLI save fails outright.
    const r = sh(`docker -H ${source} save ${image} | tar -tf -`);
    const names = r.stdout.split('\n');
    const m = JSON.parse(sh(`docker -H ${source} save ${image} | tar -xOf - manifest.json`).stdout || '[{}]') as {
      Layers?: string[];
    }[];
    const whole = r.code === 0 && (m[0]?.Layers ?? []).length > 0 && m[0]!.Layers!.every((l) => names.includes(l));
    expect(whole).toBe(false);
  });

  it("with only the engine's save (FERRY_HOST_LAYERS=0): exit 4, no bundle, the container running", async () => {
    const out = mkdtempSync(path.join(dir, 'save-only-'));
    const b = await ferry(['-H', source, 'backup', name, '-o', out, '--json'], { env: { FERRY_HOST_LAYERS: '0' } });
    expect(b.code, b.stderr).toBe(4);
    // The error names the image (ferry's snapshot of the container) that could not be saved whole.
    expect(b.stderr).toContain(`ferry/${name}:`);
    expect(filesIn(out)).toEqual([]);
    expect(inspect('container', name, source).State.Running).toBe(true);
    // ferry's snapshot of the container is not left on the engine either.
    expect(sh(`docker -H ${source} images --format '{{.Repository}}' | grep -c 'ferry/${name}'`).stdout.trim()).toBe(
      '0',
    );
  });

  it('backs up whole from the content store, verifies, and restores on 20.10 (engine B)', async () => {
    const out = mkdtempSync(path.join(dir, 'bundle-'));
    const b = await ferry(['-H', source, 'backup', name, '-o', out, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const res = JSON.parse(b.stdout) as { bundle: string; dataPaths: { images: { path: string }[] } };
    expect(res.dataPaths.images[0]!.path).toBe('content-store');
    expect(inspect('container', name, source).State.Running).toBe(true);
    const v = await ferry(['verify', res.bundle]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const r = await ferry(['-H', ENGINE_B, 'restore', res.bundle, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expectRestored(ENGINE_B, 'on-multi');
  });

  it('migrates to 20.10 (engine B) whole', async () => {
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    removeSnapshots([name], [ENGINE_B]);
    expect(exists('container', name, ENGINE_B)).toBe(false);
    docker(['exec', name, 'sh', '-c', 'echo migrated > /top.txt'], { host: source });
    const r = await ferry(['-H', source, 'migrate', name, '--to', ENGINE_B, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Shipped;
    expect(res.ok).toBe(true);
    expect(res.dataPaths.images[0]!.path).toBe('content-store');
    expectRestored(ENGINE_B, 'migrated');
  });

  it("migrates to 20.10 with only the engine's save: exit 4, nothing created on the target", async () => {
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    removeSnapshots([name], [ENGINE_B]);
    docker(['start', name], { host: source });
    const r = await ferry(['-H', source, 'migrate', name, '--to', ENGINE_B, '--json'], {
      env: { FERRY_HOST_LAYERS: '0' },
    });
    expect(r.code, r.stderr).toBe(4);
    expect(exists('container', name, ENGINE_B)).toBe(false);
    expect(inspect('container', name, source).State.Running).toBe(true);
  });
});
