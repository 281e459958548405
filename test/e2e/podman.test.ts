/**
 * Podman through its Docker-compatible API (the lab's rootful `podman system service`): a Docker
 * bundle restores onto Podman with its config and data, and a Podman container backs up with its
 * owners intact (its archive endpoint reports 0:0 for every file, so ferry reads volumes with tar
 * in a helper there) and restores onto Docker.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AWKWARD_DATA,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ferry,
  inspect,
  PODMAN,
  uid,
  volumeListing,
  ENGINE_KIND,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-podman-'));
const name = uid('pod');
const vol = `${name}-data`;
const snapshots = (host: string) =>
  docker(['images', '--format', '{{.Repository}}:{{.Tag}}'], { host })
    .split('\n')
    .filter((r) => r.includes(`ferry/${name}`));

afterAll(() => {
  for (const host of [ENGINE_A, PODMAN]) {
    cleanup(host, { containers: [name], volumes: [vol] });
    for (const r of snapshots(host)) docker(['rmi', '-f', r], { host, allowFail: true });
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('Podman', () => {
  let listing = '';
  let before: any;

  it('restores a bundle from Docker onto Podman: config, data and owners arrive, and it runs', async () => {
    docker([
      'run',
      '-d',
      '--name',
      name,
      '-e',
      'MODE=production',
      '--label',
      'team=ops',
      '-v',
      `${vol}:/data`,
      BUSYBOX,
      'sh',
      '-c',
      'mkdir -p /data/www && exec httpd -f -p 8080 -h /data/www',
    ]);
    docker(['exec', name, 'sh', '-c', AWKWARD_DATA]);
    listing = volumeListing(vol);
    before = inspect('container', name);
    const bundle = path.join(dir, 'from-docker.tar');
    expect((await ferry(['backup', name, '-o', bundle])).code).toBe(0);

    const r = await ferry(['-H', PODMAN, 'restore', bundle, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/is Podman \(Docker-compatible API\)/);
    // Never on Podman's host disk: through its archive endpoint, and said so.
    expect(JSON.parse(r.stdout).dataPaths).toEqual({
      volumes: [{ name: vol, path: 'engine-archive', fallback: { from: 'host-tar', reason: expect.any(String) } }],
      images: [{ container: name, ref: expect.any(String), path: 'engine-load' }],
    });
    const after = inspect('container', name, PODMAN);
    expect(after.State.Running).toBe(true);
    expect(after.Config.Env).toContain('MODE=production');
    expect(after.Config.Labels).toMatchObject({ team: 'ops' });
    expect(after.Config.Cmd).toEqual(before.Config.Cmd);
    expect(volumeListing(vol, PODMAN)).toBe(listing);
    // The image is there under the name the bundle gives it (Podman adds localhost/ on load).
    expect(snapshots(PODMAN).length).toBeGreaterThan(0);
  });

  it('backs up from Podman with every owner intact, and the bundle restores onto Docker', async () => {
    const bundle = path.join(dir, 'from-podman.tar');
    const b = await ferry(['-H', PODMAN, 'backup', name, '-o', bundle, '--json']);
    expect(b.code, b.stderr).toBe(0);
    // The volume by the image's own tar in a helper (Podman's archive endpoint loses owners), the
    // image by Podman's save (no Docker layer store there).
    expect(JSON.parse(b.stdout).dataPaths).toEqual({
      volumes: [
        {
          name: vol,
          path: 'helper-tar',
          fallback: { from: 'host-tar', reason: expect.any(String) },
          xattrsUnread: ['user.*', 'trusted.*'],
        },
      ],
      images: [
        {
          container: name,
          ref: expect.any(String),
          path: 'engine-save',
          fallback: { from: 'layer-store', reason: expect.any(String) },
        },
      ],
    });
    // No helper is left on Podman.
    expect(docker(['ps', '-a', '--filter', 'label=io.ferry.role=holder', '-q'], { host: PODMAN })).toBe('');

    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(volumeListing(vol)).toBe(listing); // owners, modes, links, mtimes, contents
    const back = inspect('container', name);
    expect(back.State.Running).toBe(true);
    expect(back.Config.Env).toContain('MODE=production');
    expect(back.Config.Labels).toMatchObject({ team: 'ops' });
    // Podman's spellings of its defaults do not travel: runtime "oci", network "podman", bind options.
    expect(back.HostConfig.Runtime).toBe('runc');
    expect(back.HostConfig.NetworkMode).toBe('bridge');
    expect(back.HostConfig.Binds).toEqual([`${vol}:/data`]);
    expect(docker(['exec', name, 'wget', '-q', '-O', '-', 'http://127.0.0.1:8080/index.html'])).toContain('ferry');
  });

  it('migrates a running service from Docker to Podman, data and owners included', async () => {
    const m = `${name}-mig`;
    const mvol = `${m}-data`;
    try {
      docker(['run', '-d', '--name', m, '-e', 'MODE=migrated', '-v', `${mvol}:/data`, BUSYBOX, 'sleep', '100000']);
      docker(['exec', m, 'sh', '-c', AWKWARD_DATA]);
      const r = await ferry(['migrate', m, '--to', PODMAN, '--json']);
      expect(r.code, r.stderr).toBe(0);
      // Read on Docker's host disk, written through Podman's archive endpoint; the image from Docker's
      // layer store, loaded whole by Podman (no content store to leave blobs out for).
      expect(JSON.parse(r.stdout).dataPaths).toEqual({
        volumes: [
          {
            name: mvol,
            path: 'host-tar',
            target: { path: 'engine-archive', fallback: { from: 'host-tar', reason: expect.any(String) } },
            // No pre-copy: Podman's volume directory is not written by ferry (docs/precopy.md).
            precopy: { refused: expect.stringMatching(/Podman/) },
          },
        ],
        images: [
          ENGINE_KIND === 'containerd'
            ? {
                container: m,
                ref: expect.any(String),
                path: 'content-store',
                target: { path: 'engine-load' },
              }
            : { container: m, ref: expect.any(String), path: 'layer-store', target: { path: 'engine-load' } },
        ],
      });
      expect(inspect('container', m, PODMAN).State.Running).toBe(true);
      expect(inspect('container', m, PODMAN).Config.Env).toContain('MODE=migrated');
      expect(volumeListing(mvol, PODMAN)).toBe(volumeListing(mvol));
      expect(inspect('container', m).State.Running).toBe(true); // the source is left as it was
    } finally {
      for (const host of [ENGINE_A, PODMAN]) {
        cleanup(host, { containers: [m], volumes: [mvol] });
        for (const r of docker(['images', '--format', '{{.Repository}}:{{.Tag}}'], { host })
          .split('\n')
          .filter((x) => x.includes(`ferry/${m}`)))
          docker(['rmi', '-f', r], { host, allowFail: true });
      }
    }
  });
});
