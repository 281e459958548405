/**
 * Bundles in a directory on another host over SFTP: back up there, restore from there; the
 * store's lock and bundle names there, as in a local store.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SshPool } from '../../src/ssh/client.js';
import { SftpTransport } from '../../src/store/sftp.js';
import {
  AWKWARD_DATA,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ferry,
  inspect,
  sshHome,
  uid,
  volumeListing,
} from '../helpers/lab.js';

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
  it('backs up to ssh://host/dir (verified there), and restores from ssh://host/dir/bundle.tar', async () => {
    const { home } = sshHome(dir);
    docker(['run', '-d', '--name', name, '-e', 'X=1', '-v', `${vol}:/data`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', name, 'sh', '-c', AWKWARD_DATA]);
    const listing = volumeListing(vol);
    const r = await ferry(['backup', name, '-o', `ssh://newhost${store}`, '--verify', '--json'], {
      env: { HOME: home },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/warning/);
    const res = JSON.parse(r.stdout);
    expect(res.verified).toBe(true); // read back over SFTP and checked
    expect(res.bundle).toMatch(new RegExp(`^ssh://newhost${store}/ferry-${name}-\\d{8}T\\d{6}Z\\.tar$`));
    const files = readdirSync(store);
    expect(files).toHaveLength(1); // no temporary left behind
    expect(statSync(path.join(store, files[0]!)).mode & 0o777).toBe(0o600);

    const ls = await ferry(['ls', `ssh://newhost${store}`, '--json'], { env: { HOME: home } });
    expect(ls.code, ls.stderr).toBe(0);
    const listed = JSON.parse(ls.stdout).bundles;
    expect(listed).toHaveLength(1);
    expect(listed[0].bundle).toBe(res.bundle);
    expect(listed[0].containers).toEqual([name]);

    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const rr = await ferry(['restore', `ssh://newhost${store}/${files[0]}`], { env: { HOME: home } });
    expect(rr.code, rr.stderr).toBe(0);
    expect(inspect('container', name).Config.Env).toContain('X=1');
    expect(volumeListing(vol)).toBe(listing);
  });

  // Encrypted to an age recipient: the bundle's clear header (its `ferry.bundle/meta` stanza) is
  // what the cron host can list without the key. (A bundle encrypted to a passphrase can carry
  // nothing beside its scrypt stanza: encryption.test.ts.)
  it('an encrypted bundle there is listed from its clear header without the key, and restores with it', async () => {
    const { home } = sshHome(path.join(dir, 'enc'));
    const encStore = path.join(dir, 'enc-store');
    const enc = `${name}-enc`;
    const key = path.join(dir, 'enc-age-key.txt');
    execFileSync('age-keygen', ['-o', key], { stdio: 'ignore' });
    const recipient = execFileSync('age-keygen', ['-y', key], { encoding: 'utf8' }).trim();
    try {
      docker(['run', '-d', '--name', enc, BUSYBOX, 'sleep', '100000']);
      const b = await ferry(['backup', enc, '-o', `ssh://newhost${encStore}`, '--recipient', recipient, '--json'], {
        env: { HOME: home },
      });
      expect(b.code, b.stderr).toBe(0);
      const ls = await ferry(['ls', `ssh://newhost${encStore}`, '--json'], {
        env: { HOME: home, FERRY_PASSPHRASE: undefined, FERRY_AGE_IDENTITY: undefined },
      });
      expect(ls.code, ls.stderr).toBe(0);
      const listed = JSON.parse(ls.stdout).bundles;
      expect(listed).toHaveLength(1);
      expect(listed[0]).toMatchObject({ containers: [enc], encrypted: true });
      expect(listed[0].createdAt).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(listed[0].error).toBeUndefined();
      cleanup(ENGINE_A, { containers: [enc] });
      const rr = await ferry(['--identity', key, 'restore', JSON.parse(b.stdout).bundle], { env: { HOME: home } });
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

  it("names are chosen under the store's lock: a name taken or being written gets -2, -3; stale temporaries go", async () => {
    const { home } = sshHome(path.join(dir, 'names'));
    const d = path.join(dir, 'names-store');
    mkdirSync(d);
    // a temporary of a run that died a day ago, and one of a run (any host) still writing
    const stale = `.ferry-${spawnSync('true').pid}-old.tar.partial`;
    const live = `.ferry-${spawnSync('true').pid}-b.tar.partial`;
    writeFileSync(path.join(d, stale), 'x');
    const old = (Date.now() - 25 * 3600 * 1000) / 1000;
    utimesSync(path.join(d, stale), old, old);
    writeFileSync(path.join(d, live), 'x');
    const pool = new SshPool({ home, env: { ...process.env, HOME: home } });
    try {
      const t = new SftpTransport(`ssh://newhost${d}`, pool);
      const a1 = await t.createBundle('a.tar');
      const a2 = await t.createBundle('a.tar'); // the first is still being written
      expect(a1.location).toBe(`ssh://newhost${d}/a.tar`);
      expect(a2.location).toBe(`ssh://newhost${d}/a-2.tar`);
      await a1.write(Buffer.from('one'));
      await a1.commit();
      await a2.write(Buffer.from('two'));
      await a2.commit();
      const a3 = await t.createBundle('a.tar'); // both exist now
      expect(a3.location).toBe(`ssh://newhost${d}/a-3.tar`);
      await a3.abort();
      const b = await t.createBundle('b.tar'); // another run writes b.tar
      expect(b.location).toBe(`ssh://newhost${d}/b-2.tar`);
      await b.abort();
      expect(readdirSync(d).sort()).toEqual([live, 'a-2.tar', 'a.tar']);
    } finally {
      await pool.closeAll();
    }
  });

  it('a backup waits while the remote store is locked (prune there), then writes; it gives up after --lock-timeout', async () => {
    const { home } = sshHome(path.join(dir, 'locked'));
    const d = path.join(dir, 'locked-store');
    mkdirSync(d);
    const lock = path.join(d, '.ferry.lock');
    const held = JSON.stringify({
      pid: process.pid,
      hostname: os.hostname(),
      token: 'test',
      since: new Date().toISOString(),
      purpose: 'prune',
    });
    const c = `${name}-lk`;
    try {
      docker(['run', '-d', '--name', c, BUSYBOX, 'sleep', '100000']);
      writeFileSync(lock, held);
      const timeout = await ferry(['backup', c, '-o', `ssh://newhost${d}`, '--lock-timeout', '1'], {
        env: { HOME: home },
      });
      expect(timeout.code).toBe(6);
      expect(timeout.stderr).toMatch(
        new RegExp(
          `the store ssh://newhost${d.replace(/[.]/g, '\\.')} is locked by another ferry run: pid ${process.pid} on .*\\(prune\\)`,
        ),
      );
      expect(readdirSync(d)).toEqual(['.ferry.lock']);
      const run = ferry(['backup', c, '-o', `ssh://newhost${d}`, '--lock-timeout', '60', '--json'], {
        env: { HOME: home },
      });
      await new Promise((r) => setTimeout(r, 2500));
      expect(readdirSync(d)).toEqual(['.ferry.lock']); // still waiting: no temporary
      expect(inspect('container', c).State.Paused).toBe(false);
      rmSync(lock);
      const r = await run;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/waiting for the lock of ssh:\/\/newhost/);
      const files = readdirSync(d);
      expect(files).toEqual([path.basename(JSON.parse(r.stdout).bundle)]);
      expect(existsSync(lock)).toBe(false);
    } finally {
      cleanup(ENGINE_A, { containers: [c] });
    }
  });
});
