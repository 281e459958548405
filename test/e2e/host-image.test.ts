/**
 * The image of a migration built from the source host's layer store (src/data/host-image.ts):
 * only the layers the target lacks, no `docker save` of the whole image, and the same image and
 * filesystem on the target as through the engine's save. A backup's image member too, into a
 * local file: every layer, from the layer store, an archive plain `docker load` takes; written
 * again with the engine's save when the layer store fails half-way.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  ferry,
  inspect,
  removeSnapshots,
  sh,
  sshHome,
  uid,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-hostimg-'));
const name = uid('hi');
const all = ['', '-e', '-s', '-b', '-f'].map((x) => `${name}${x}`);

afterAll(() => {
  cleanup(ENGINE_A, { containers: all });
  cleanup(ENGINE_B, { containers: all });
  removeSnapshots(all);
  rmSync(dir, { recursive: true, force: true });
});

// A writable layer with everything a layer tar can hold: a changed file, files deleted from the
// image (whiteouts), a directory replaced whole (opaque), a hard link, a setuid file, a symlink,
// a fifo, a sparse file and a name with spaces and newlines.
const CHANGES = [
  'set -e',
  'echo changed > /etc/issue',
  'rm /etc/group',
  'rm -r /www && mkdir /www && echo new > /www/index.html',
  'mkdir -p /opt/app && echo payload > /opt/app/a && ln /opt/app/a /opt/app/b',
  'printf "#!/bin/sh\\necho hi\\n" > /opt/app/suid && chmod 4755 /opt/app/suid',
  'ln -s ../etc/issue /opt/app/link',
  'mkfifo /opt/app/fifo',
  'dd if=/dev/urandom of=/opt/app/blob bs=1k count=300 2>/dev/null',
  'dd if=/dev/zero of=/opt/app/sparse bs=1 count=1 seek=200000 2>/dev/null',
  'printf x > "/opt/app/sp ace\nnl"',
].join('; ');

/** The container's files outside the kernel's: name, owner, mode, links, type, size and sha256. */
function rootListing(container: string, host: string): string {
  const script =
    'for d in /bin /etc /opt /root /tmp /www; do find "$d" -xdev; done | grep -v -e "^/etc/hostname$" -e "^/etc/hosts$" -e "^/etc/resolv.conf$" | LC_ALL=C sort | while IFS= read -r f; do ' +
    'st=$(stat -c "%u:%g %a %h %F" "$f"); ' +
    'if [ -L "$f" ]; then x="-> $(readlink "$f")"; elif [ -f "$f" ]; then x="$(stat -c %s "$f") $(sha256sum < "$f" | cut -c1-16)"; else x=""; fi; ' +
    'echo "$f $st $x"; done';
  return docker(['exec', container, 'sh', '-c', script], { host });
}

/** Whether any image on `host` holds `layer` as its first layer (the chain ID of a base layer is its diff ID). */
function hasBase(host: string, layer: string): boolean {
  const ids = docker(['images', '-aq', '--no-trunc'], { host }).split('\n').filter(Boolean);
  return ids.some((id) => inspect('image', id, host).RootFS.Layers[0] === layer);
}

/** Which data path carried each image, as a --json result says it (src/data/paths.ts). */
function imagePaths(json: string): Record<string, unknown>[] {
  return (JSON.parse(json).dataPaths.images as Record<string, unknown>[]).map(({ path, fallback }) => ({
    path,
    ...(fallback ? { fallback } : {}),
  }));
}

function serve(n: string, host = ENGINE_A) {
  // busybox's sleep as PID 1 ignores SIGTERM: a migration replacing it kills it after 1 s, not 10
  const idle = ['--stop-timeout', '1', BUSYBOX, 'sleep', '100000'];
  docker(['run', '-d', '--name', n, '--label', 'app=hostimg', '-e', 'MODE=test', ...idle], { host });
  docker(['exec', n, 'sh', '-c', CHANGES], { host });
  return rootListing(n, host);
}

describe('the image of a migration, from the layer store on the source host', () => {
  it('reads the missing layers from the layer store, the second time only the committed one: the target gets the source`s image and files', async () => {
    const n = name;
    const before = serve(n);
    expect(before).toContain('/opt/app/suid 0:0 4755');
    expect(before).not.toMatch(/^\/etc\/group /m);
    const base = inspect('image', BUSYBOX).RootFS.Layers[0];
    const lacking = hasBase(ENGINE_B, base) ? 1 : 2;
    const first = await ferry(['migrate', n, '--to', ENGINE_B, '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(imagePaths(first.stdout)).toEqual([{ path: 'layer-store' }]);
    expect(first.stderr).toMatch(
      new RegExp(
        `image ferry/${n}:\\S+: ${lacking} of 2 layers read from the layer store in /var/lib/docker on this host`,
      ),
    );
    expect(rootListing(n, ENGINE_B)).toBe(before);
    // The second migration: the target has the base layer now.
    docker(['exec', n, 'sh', '-c', 'echo again >> /etc/issue']);
    const again = rootListing(n);
    const r = await ferry(['migrate', n, '--to', ENGINE_B, '--on-conflict', 'replace', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      new RegExp(`image ferry/${n}:\\S+: 1 of 2 layers read from the layer store in /var/lib/docker on this host`),
    );
    const res = JSON.parse(r.stdout);
    expect(imagePaths(r.stdout)).toEqual([{ path: 'layer-store' }]);
    expect(res.skippedLayers).toBe(1);
    // the committed layer (a 300 KiB blob, 200 KB of zeros, headers); the base alone is 1.98 MB
    expect(res.imageBytes).toBeLessThan(1 << 20);
    expect(again).not.toBe(before);
    const on = inspect('container', n, ENGINE_B);
    expect(on.State.Running).toBe(true);
    expect(on.Config.Env).toContain('MODE=test');
    expect(rootListing(n, ENGINE_B)).toBe(again);
    // The image is the one the engine's save would have given: its ID is its config's sha256
    // (checked by the engine on load), its layers the source's.
    const img = inspect('image', on.Image, ENGINE_B);
    expect(img.RootFS.Layers[0]).toBe(inspect('image', BUSYBOX).RootFS.Layers[0]);
    expect(img.RootFS.Layers).toHaveLength(2);
  });

  it('FERRY_HOST_LAYERS=0: the engine`s save, with the same result', async () => {
    const n = `${name}-e`;
    const before = serve(n);
    const r = await ferry(['migrate', n, '--to', ENGINE_B, '--json'], { env: { FERRY_HOST_LAYERS: '0' } });
    expect(r.code, r.stderr).toBe(0);
    expect(imagePaths(r.stdout)).toEqual([
      { path: 'engine-save', fallback: { from: 'layer-store', reason: 'FERRY_HOST_LAYERS=0' } },
    ]);
    expect(JSON.parse(r.stdout).skippedLayers).toBe(1); // the base, brought by the test before
    expect(rootListing(n, ENGINE_B)).toBe(before);
  });

  it('from an ssh:// engine: the layer store is read on the SSH host', async () => {
    const n = `${name}-s`;
    const before = serve(n, ENGINE_B);
    const lacking = hasBase(ENGINE_A, inspect('image', BUSYBOX, ENGINE_B).RootFS.Layers[0]) ? 1 : 2;
    const { home } = sshHome(path.join(dir, 'ssh'));
    const r = await ferry(['-H', 'ssh://newhost', 'migrate', n, '--to', ENGINE_A, '--json'], { env: { HOME: home } });
    expect(r.code, r.stderr).toBe(0);
    expect(imagePaths(r.stdout)).toEqual([{ path: 'layer-store' }]);
    expect(r.stderr).toMatch(
      new RegExp(`${lacking} of 2 layers read from the layer store in /var/lib/docker-b on ssh://newhost`),
    );
    expect(rootListing(n, ENGINE_A)).toBe(before);
    expect(inspect('container', n).State.Running).toBe(true);
  });
});

describe('the image member of a backup into a local file, from the layer store', () => {
  /** The bundle's image member alone, loaded by plain `docker load` on engine B: the ref it gives. */
  function loadMember(bundle: string, n: string): string {
    const ref = JSON.parse(sh(`tar -xOf '${bundle}' manifest.json`).stdout).containers[0].image.ref as string;
    // The engine checks every layer's digest against the config, and the config's against the image ID.
    const loaded = sh(`tar -xOf '${bundle}' 'images/${n}.tar.gz' | docker -H ${ENGINE_B} load`);
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout).toContain(`Loaded image: ${ref}`);
    return ref;
  }

  it('every layer read from the layer store: plain docker load takes the member, restore gives the same files; FERRY_HOST_LAYERS=0 and a stream bundle: the engine`s save', async () => {
    const n = `${name}-b`;
    const before = serve(n);
    const bundle = path.join(dir, 'b.tar');
    const r = await ferry(['backup', n, '-o', bundle, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(imagePaths(r.stdout)).toEqual([{ path: 'layer-store' }]);
    expect(r.stderr).toMatch(
      new RegExp(`image ferry/${n}:\\S+: 2 of 2 layers read from the layer store in /var/lib/docker on this host`),
    );
    expect((await ferry(['verify', bundle])).code).toBe(0);
    const ref = loadMember(bundle, n);
    const img = inspect('image', ref, ENGINE_B);
    expect(img.RootFS.Layers).toHaveLength(2);
    expect(img.RootFS.Layers[0]).toBe(inspect('image', BUSYBOX).RootFS.Layers[0]);
    docker(['rmi', ref], { host: ENGINE_B });
    // The image committed on the source, exactly (its ID is its config's sha256).
    const facts = JSON.parse(sh(`tar -xOf '${bundle}' trailer.json`).stdout).images[0];
    expect(facts.id).toBe(img.Id);
    expect(facts.layers).toEqual(img.RootFS.Layers);
    // FERRY_HOST_LAYERS=0: the engine's save.
    const viaSave = path.join(dir, 'b-save.tar');
    const e = await ferry(['backup', n, '-o', viaSave, '--json'], { env: { FERRY_HOST_LAYERS: '0' } });
    expect(e.code, e.stderr).toBe(0);
    expect(imagePaths(e.stdout)).toEqual([
      { path: 'engine-save', fallback: { from: 'layer-store', reason: 'FERRY_HOST_LAYERS=0' } },
    ]);
    expect((await ferry(['verify', viaSave])).code).toBe(0);
    // A bundle on stdout cannot be written again half-way: the engine's save.
    const streamed = path.join(dir, 'b-stream.tar');
    const st = await ferry(['backup', n, '-o', '-', '--json'], { stdoutFile: streamed });
    expect(st.code, st.stderr).toBe(0);
    // With the bundle on stdout, the result goes to stderr: its last line.
    expect(imagePaths(st.stderr.trim().split('\n').at(-1)!)).toEqual([
      {
        path: 'engine-save',
        fallback: {
          from: 'layer-store',
          reason: 'the bundle is written to a stream, which cannot be rewound should the store fail',
        },
      },
    ]);
    expect((await ferry(['verify', streamed])).code).toBe(0);
    // And ferry's restore of the first bundle on engine B: the container's files as they were.
    const rr = await ferry(['-H', ENGINE_B, 'restore', bundle]);
    expect(rr.code, rr.stderr).toBe(0);
    expect(inspect('container', n, ENGINE_B).State.Running).toBe(true);
    expect(rootListing(n, ENGINE_B)).toBe(before);
  });

  it('a layer that comes out of the layer store short half-way: the member is written again with the engine`s save, and the bundle is whole', async () => {
    const n = `${name}-f`;
    const before = serve(n);
    // An xargs (used only to cat a layer's files) whose output stops after 100 KB: the busybox
    // layer (1.98 MB) ends early in the middle of the image member.
    const shim = path.join(dir, 'shim');
    mkdirSync(shim, { recursive: true });
    const xargs = sh('command -v xargs').stdout.trim();
    writeFileSync(path.join(shim, 'xargs'), `#!/bin/sh\n${xargs} "$@" | head -c 100000\n`);
    chmodSync(path.join(shim, 'xargs'), 0o755);
    const bundle = path.join(dir, 'f.tar');
    const r = await ferry(['backup', n, '-o', bundle, '--json'], { env: { PATH: `${shim}:${process.env.PATH}` } });
    expect(r.code, r.stderr).toBe(0);
    expect(imagePaths(r.stdout)).toEqual([
      {
        path: 'engine-save',
        fallback: { from: 'layer-store', reason: expect.stringMatching(/ended \d+ bytes early/) },
      },
    ]);
    expect(r.stderr).toMatch(/layers read from the layer store/);
    expect(r.stderr).toMatch(
      new RegExp(
        `image ferry/${n}:\\S+ on this host: .*ended \\d+ bytes early.*; writing it again with the engine's save`,
      ),
    );
    expect((await ferry(['verify', bundle])).code).toBe(0);
    const ref = loadMember(bundle, n);
    expect(inspect('image', ref, ENGINE_B).Id).toBe(
      JSON.parse(sh(`tar -xOf '${bundle}' trailer.json`).stdout).images[0].id,
    );
    docker(['rmi', ref], { host: ENGINE_B });
    const rr = await ferry(['-H', ENGINE_B, 'restore', bundle]);
    expect(rr.code, rr.stderr).toBe(0);
    expect(rootListing(n, ENGINE_B)).toBe(before);
  });
});
