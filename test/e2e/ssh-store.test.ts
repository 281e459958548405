/** Bundles in a directory on another host over SFTP: back up there, restore from there. */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AWKWARD_DATA, BUSYBOX, cleanup, docker, ENGINE_A, ferry, inspect, sshHome, uid, volumeListing } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-sftp-'));
// The lab's sshd runs on this machine, so the "remote" directory is visible here too.
const store = path.join(dir, 'remote-store');
const name = uid('sftp');
const vol = `${name}-data`;

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
  rmSync(dir, { recursive: true, force: true });
});

describe('ssh store', () => {
  it('backs up to ssh://host/dir and restores from ssh://host/dir/bundle.tar', async () => {
    const { home } = sshHome(dir);
    docker(['run', '-d', '--name', name, '-e', 'X=1', '-v', `${vol}:/data`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', name, 'sh', '-c', AWKWARD_DATA]);
    const listing = volumeListing(vol);
    const r = await ferry(['backup', name, '-o', `ssh://newhost${store}`, '--json'], { env: { HOME: home } });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.bundle).toMatch(new RegExp(`^ssh://newhost${store}/ferry-${name}-\\d{8}T\\d{6}Z\\.tar$`));
    const files = readdirSync(store);
    expect(files).toHaveLength(1); // no temporary left behind
    expect(statSync(path.join(store, files[0]!)).mode & 0o777).toBe(0o600);

    const ls = await ferry(['ls', `ssh://newhost${store}`, '--json'], { env: { HOME: home } });
    expect(ls.code, ls.stderr).toBe(0);
    const listed = JSON.parse(ls.stdout);
    expect(listed).toHaveLength(1);
    expect(listed[0].bundle).toBe(res.bundle);
    expect(listed[0].containers).toEqual([name]);

    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const rr = await ferry(['restore', `ssh://newhost${store}/${files[0]}`], { env: { HOME: home } });
    expect(rr.code, rr.stderr).toBe(0);
    expect(inspect('container', name).Config.Env).toContain('X=1');
    expect(volumeListing(vol)).toBe(listing);
  });

  it('an encrypted bundle there is listed from its clear header without the passphrase, and restores with it', async () => {
    const { home } = sshHome(path.join(dir, 'enc'));
    const encStore = path.join(dir, 'enc-store');
    const enc = `${name}-enc`;
    try {
      docker(['run', '-d', '--name', enc, BUSYBOX, 'sleep', '100000']);
      const b = await ferry(['backup', enc, '-o', `ssh://newhost${encStore}`, '--encrypt', '--json'], { env: { HOME: home, FERRY_PASSPHRASE: 'sftp-secret' } });
      expect(b.code, b.stderr).toBe(0);
      const ls = await ferry(['ls', `ssh://newhost${encStore}`, '--json'], { env: { HOME: home, FERRY_PASSPHRASE: undefined } });
      expect(ls.code, ls.stderr).toBe(0);
      const listed = JSON.parse(ls.stdout);
      expect(listed).toHaveLength(1);
      expect(listed[0]).toMatchObject({ containers: [enc], encrypted: true });
      expect(listed[0].created).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(listed[0].error).toBeUndefined();
      cleanup(ENGINE_A, { containers: [enc] });
      const rr = await ferry(['restore', JSON.parse(b.stdout).bundle], { env: { HOME: home, FERRY_PASSPHRASE: 'sftp-secret' } });
      expect(rr.code, rr.stderr).toBe(0);
      expect(inspect('container', enc).State.Running).toBe(true);
    } finally {
      cleanup(ENGINE_A, { containers: [enc] });
    }
  });

  it('a missing remote bundle is "not found", not a crash', async () => {
    const { home } = sshHome(path.join(dir, 'h2'));
    const r = await ferry(['restore', `ssh://newhost${store}/nope.tar`], { env: { HOME: home } });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/no bundle at ssh:\/\/newhost/);
  });
});
