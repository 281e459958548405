/**
 * Containers that refer to each other, backed up together: a sidecar sharing the network namespace
 * of its app (`--network container:app`, as VPN sidecars do) and mounting its volumes
 * (`--volumes-from`), named first on the command line. Restore and migrate create and start the
 * app first, and under --on-conflict rename the sidecar follows the app's new name, not the
 * original.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ENGINE_B, exists, ferry, inspect, uid } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-deps-'));
const app = uid('depapp');
const side = uid('depside');
const vol = `${app}-data`;
let bundle = '';

/** The container a `container:<name or id>` mode points at, by name. */
function modeTarget(mode: string, host: string): string {
  expect(mode).toMatch(/^container:/);
  return inspect('container', mode.slice('container:'.length), host).Name.replace(/^\//, '');
}

beforeAll(async () => {
  docker(['run', '-d', '--name', app, '-v', `${vol}:/data`, BUSYBOX, 'httpd', '-f', '-p', '8081', '-h', '/data']);
  docker(['exec', app, 'sh', '-c', 'echo "shared page" > /data/index.html']);
  docker([
    'run',
    '-d',
    '--name',
    side,
    '--network',
    `container:${app}`,
    '--volumes-from',
    app,
    BUSYBOX,
    'sleep',
    '100000',
  ]);
  const r = await ferry(['backup', side, app, '-o', dir]); // the dependent first
  expect(r.code, r.stderr).toBe(0);
  bundle = path.join(
    dir,
    readdirSync(dir).find((f) => f.endsWith('.tar'))!,
  );
});

afterAll(() => {
  for (const host of [ENGINE_A, ENGINE_B])
    cleanup(host, {
      containers: [side, app, `${side}-restored`, `${app}-restored`],
      volumes: [vol, `${vol}-restored`],
    });
  rmSync(dir, { recursive: true, force: true });
});

describe('containers that refer to each other', () => {
  it('restore creates and starts the app before the sidecar that joins its network', async () => {
    const r = await ferry(['-H', ENGINE_B, 'restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.indexOf(`create container ${app}`)).toBeLessThan(r.stderr.indexOf(`create container ${side}`));
    const s = inspect('container', side, ENGINE_B);
    expect(s.State.Running).toBe(true);
    expect(modeTarget(s.HostConfig.NetworkMode, ENGINE_B)).toBe(app);
    // The sidecar sees the app's volume and reaches it on localhost: one network namespace.
    expect(docker(['exec', side, 'cat', '/data/index.html'], { host: ENGINE_B })).toBe('shared page');
    expect(docker(['exec', side, 'wget', '-q', '-O', '-', 'http://127.0.0.1:8081/'], { host: ENGINE_B })).toBe(
      'shared page',
    );
  });

  it('--on-conflict rename: the renamed sidecar joins the renamed app, not the original', async () => {
    const r = await ferry(['-H', ENGINE_B, 'restore', bundle, '--on-conflict', 'rename']);
    expect(r.code, r.stderr).toBe(0);
    const s = inspect('container', `${side}-restored`, ENGINE_B);
    expect(s.State.Running).toBe(true);
    expect(modeTarget(s.HostConfig.NetworkMode, ENGINE_B)).toBe(`${app}-restored`);
    expect(s.HostConfig.VolumesFrom).toEqual([`${app}-restored`]);
    expect(inspect('container', `${app}-restored`, ENGINE_B).Mounts[0].Name).toBe(`${vol}-restored`);
  });

  it('migrate does the same on the target', async () => {
    cleanup(ENGINE_B, {
      containers: [side, app, `${side}-restored`, `${app}-restored`],
      volumes: [vol, `${vol}-restored`],
    });
    const r = await ferry(['migrate', side, app, '--to', ENGINE_B]);
    expect(r.code, r.stderr).toBe(0);
    const s = inspect('container', side, ENGINE_B);
    expect(s.State.Running).toBe(true);
    expect(modeTarget(s.HostConfig.NetworkMode, ENGINE_B)).toBe(app);
    expect(docker(['exec', side, 'wget', '-q', '-O', '-', 'http://127.0.0.1:8081/'], { host: ENGINE_B })).toBe(
      'shared page',
    );
  });

  it('backup --all puts the sidecar and its app into one bundle (the one restores only where the other is)', async () => {
    // Engine B runs the two migrated above.
    const store = path.join(dir, 'all');
    const r = await ferry(['-H', ENGINE_B, '--json', 'backup', '--all', '-o', store, '--mkdir', '--compress', 'none']);
    expect(r.code, r.stderr).toBe(0);
    const results = JSON.parse(r.stdout).results as {
      container: string;
      ok: boolean;
      result: { bundle: string; containers: string[] };
    }[];
    const ours = results.filter((x) => x.container === app || x.container === side);
    expect(ours).toHaveLength(2);
    expect(ours[0]!.result.bundle).toBe(ours[1]!.result.bundle);
    expect([...ours[0]!.result.containers].sort()).toEqual([app, side].sort());
    expect(readdirSync(store).filter((f) => f.includes(app) || f.includes(side))).toHaveLength(1);
  });

  it('restore --only: one container of the bundle with its volume; then the sidecar, joining the app that is there', async () => {
    cleanup(ENGINE_B, { containers: [side, app], volumes: [vol] });
    const sideImage = (
      JSON.parse(execFileSync('tar', ['-xOf', bundle, 'manifest.json'], { encoding: 'utf8' })).containers as {
        spec: { name: string };
        image: { ref: string };
      }[]
    ).find((c) => c.spec.name === side)!.image.ref;
    docker(['rmi', sideImage], { host: ENGINE_B, allowFail: true }); // loaded by the restores above
    const r1 = await ferry(['-H', ENGINE_B, 'restore', bundle, '--only', app]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(inspect('container', app, ENGINE_B).State.Running).toBe(true);
    expect(exists('container', side, ENGINE_B)).toBe(false);
    expect(exists('image', sideImage, ENGINE_B)).toBe(false); // its image was not loaded
    const r2 = await ferry(['-H', ENGINE_B, 'restore', bundle, '--only', side]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).toMatch(new RegExp(`${side} refers to container ${app}, which --only leaves out`));
    expect(modeTarget(inspect('container', side, ENGINE_B).HostConfig.NetworkMode, ENGINE_B)).toBe(app);
    const bad = await ferry(['-H', ENGINE_B, 'restore', bundle, '--only', 'nobody']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(
      new RegExp(`--only: the bundle has no container nobody[\\s\\S]*it holds: ${side}, ${app}`),
    );
  });
});
