/**
 * The scripts in examples/ are what operators copy into cron and runbooks: they run here, as
 * written, against the real engines (FERRY points them at this checkout's bin/ferry.js).
 */
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  exists,
  ferry,
  inspect,
  ROOT,
  sh,
  sshHome,
  uid,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-examples-'));
const example = (name: string) => path.join(ROOT, 'examples', name);
// A container that stops at once on SIGTERM (a bare `sleep` as PID 1 would hold `docker stop` for 10 s).
const SERVICE = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'];

afterAll(() => {
  cleanup(ENGINE_A, { containers: ['docs-demo-web'], volumes: ['docs-demo-data'] });
  rmSync(dir, { recursive: true, force: true });
});

/** A PATH whose `logger` fails, so that the cron script logs to stderr (where the test reads it). */
function pathWithoutSyslog(): string {
  const bin = path.join(dir, 'nolog-bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(path.join(bin, 'logger'), '#!/bin/sh\nexit 1\n');
  chmodSync(path.join(bin, 'logger'), 0o755);
  return `${bin}:${process.env.PATH}`;
}

const bundlesOf = (store: string, name: string) =>
  readdirSync(store)
    .filter((f) => f.startsWith(`ferry-${name}-`) && f.endsWith('.tar'))
    .sort();

describe('examples/backup-and-restore.sh', () => {
  it('backs the demo container up, removes it, restores it and finds its data identical; leaves nothing behind', () => {
    expect(exists('container', 'docs-demo-web')).toBe(false);
    const r = sh(`sh '${example('backup-and-restore.sh')}'`, { TMPDIR: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/OK: docs-demo-web was backed up, removed and restored; its volume data is identical/);
    expect(r.stderr).toMatch(/ferry: fill volume docs-demo-data/);
    expect(exists('container', 'docs-demo-web')).toBe(false);
    expect(exists('volume', 'docs-demo-data')).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('ferry-example.'))).toEqual([]);
  });
});

describe('examples/ferry.toml', () => {
  const store = path.join(dir, 'toml-store');
  const name = uid('extoml');
  const other = `${name}-unlabelled`;
  afterAll(() => cleanup(ENGINE_B, { containers: [name, other], volumes: [name] }));

  it('the cron lines with the config file: backup --all of the labelled containers, verified, then prune', async () => {
    mkdirSync(store, { mode: 0o700 });
    docker(['run', '-d', '--name', name, '--label', 'backup=nightly', '-v', `${name}:/data`, BUSYBOX, ...SERVICE], {
      host: ENGINE_B,
    });
    docker(['exec', name, 'sh', '-c', 'echo nightly > /data/f'], { host: ENGINE_B });
    docker(['run', '-d', '--name', other, BUSYBOX, ...SERVICE], { host: ENGINE_B });
    // As installed, with the store the file names replaced by the environment (FERRY_OUTPUT).
    const env = { DOCKER_HOST: ENGINE_B, FERRY_CONFIG: example('ferry.toml'), FERRY_OUTPUT: store };
    const cfg = await ferry(['--json', 'config'], { env });
    expect(cfg.code, cfg.stderr).toBe(0);
    expect(JSON.parse(cfg.stdout).settings).toEqual(
      expect.arrayContaining([
        { command: 'backup', option: 'filter', value: ['label=backup=nightly'], source: 'file' },
        { command: 'backup', option: 'output', value: store, source: 'env' },
      ]),
    );
    for (let night = 0; night < 2; night++) {
      const b = await ferry(['backup', '--all'], { env });
      expect(b.code, b.stderr).toBe(0);
      expect(b.stdout).toBe(''); // quiet = true
    }
    expect(bundlesOf(store, name)).toHaveLength(2);
    expect(bundlesOf(store, other)).toEqual([]); // not labelled: left out by the file's filter
    const p = await ferry(['prune', store], { env });
    expect(p.code, p.stderr).toBe(0);
    // keep-daily 7: of the two bundles made the same day, the newer one is kept.
    const [kept] = bundlesOf(store, name);
    expect(bundlesOf(store, name)).toHaveLength(1);
    const v = await ferry(['verify', path.join(store, kept!)], { env });
    expect(v.code, v.stderr).toBe(0);
  });
});

describe('examples/cron-backup.sh', () => {
  const store = path.join(dir, 'cron-store');
  const name = uid('excron');
  const bad = `${name}-badhook`;
  afterAll(() => cleanup(ENGINE_B, { containers: [name, bad], volumes: [name] }));

  it('backs up every running container with --verify, then rotates: a second run the same day keeps only the newer bundle', async () => {
    mkdirSync(store, { mode: 0o700 });
    docker(['run', '-d', '--name', name, '-v', `${name}:/data`, BUSYBOX, ...SERVICE], { host: ENGINE_B });
    docker(['exec', name, 'sh', '-c', 'echo "night one" > /data/journal'], { host: ENGINE_B });
    const env = { DOCKER_HOST: ENGINE_B, BACKUP_DIR: store, PATH: pathWithoutSyslog() };
    const first = sh(`sh '${example('cron-backup.sh')}'`, env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/done: every running container backed up and verified/);
    const [one] = bundlesOf(store, name);
    expect(one).toBeDefined();
    const v = await ferry(['verify', path.join(store, one!)]);
    expect(v.code, v.stderr).toBe(0);

    const second = sh(`sh '${example('cron-backup.sh')}'`, env);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/prune: /);
    const left = bundlesOf(store, name);
    expect(left).toHaveLength(1);
    expect(left[0]).not.toBe(one); // the newer one stays, the first is pruned
  });

  it('into a store on a backup host (BACKUP_DIR=ssh://...): verified over SFTP, and rotated there', async () => {
    const remote = path.join(dir, 'cron-remote');
    const { home } = sshHome(path.join(dir, 'cron-ssh'));
    const env = { DOCKER_HOST: ENGINE_B, BACKUP_DIR: `ssh://newhost${remote}`, HOME: home, PATH: pathWithoutSyslog() };
    const first = sh(`sh '${example('cron-backup.sh')}'`, env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/done: every running container backed up and verified/);
    expect(first.stderr).not.toMatch(/cannot be verified/);
    const [one] = bundlesOf(remote, name);
    expect(one).toBeDefined();
    const second = sh(`sh '${example('cron-backup.sh')}'`, env);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/prune: \d+ bundles? removed/);
    const left = bundlesOf(remote, name);
    expect(left).toHaveLength(1);
    expect(left[0]).not.toBe(one);
    expect(readdirSync(remote).filter((f) => f.startsWith('.'))).toEqual([]); // no lock, no temporary left
  });

  it('a container whose pre-exec hook fails: exit 3 (partial), the others still backed up, and still pruned', () => {
    docker(['run', '-d', '--name', bad, '--label', 'ferry.pre-exec=exit 9', BUSYBOX, ...SERVICE], { host: ENGINE_B });
    const before = bundlesOf(store, name);
    const r = sh(`sh '${example('cron-backup.sh')}'`, {
      DOCKER_HOST: ENGINE_B,
      BACKUP_DIR: store,
      PATH: pathWithoutSyslog(),
    });
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/PARTIAL: some containers were not backed up/);
    expect(r.stderr).toMatch(new RegExp(`${bad}.*pre-exec hook failed \\(exit 9\\)`));
    expect(bundlesOf(store, bad)).toEqual([]);
    const after = bundlesOf(store, name);
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(before[0]);
    expect(inspect('container', bad, ENGINE_B).State.Running).toBe(true);
  });
});

describe('examples/migrate-host.sh', () => {
  const name = uid('exmig');
  afterAll(() => {
    cleanup(ENGINE_A, { containers: [name], volumes: [name] });
    cleanup(ENGINE_B, { containers: [name], volumes: [name, `${name}-moved`] });
  });

  it('takes a verified safety bundle, then moves the service to the new host with --stop-source (and MIGRATE_ARGS)', async () => {
    docker(['run', '-d', '--name', name, '-v', `${name}:/data`, '-e', 'GREETING=moved', BUSYBOX, ...SERVICE]);
    docker(['exec', name, 'sh', '-c', 'echo "order 1" > /data/orders && echo layer > /etc/layer']);
    const safety = path.join(dir, 'safety');
    const { home } = sshHome(path.join(dir, 'mig'));
    const r = sh(`sh '${example('migrate-host.sh')}' newhost ${name}`, {
      HOME: home,
      SAFETY_DIR: safety,
      MIGRATE_ARGS: `--map-volume ${name}=${name}-moved --stop-timeout 5`,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`done: ${name} run on newhost`));
    expect(r.stderr).toMatch(new RegExp(`remove them once satisfied:\n.*docker rm ${name}\\)`));

    const moved = inspect('container', name, ENGINE_B);
    expect(moved.State.Running).toBe(true);
    expect(moved.Config.Env).toContain('GREETING=moved');
    expect(moved.Mounts.find((m: { Destination: string }) => m.Destination === '/data').Name).toBe(`${name}-moved`);
    expect(docker(['exec', name, 'cat', '/data/orders', '/etc/layer'], { host: ENGINE_B })).toBe('order 1\nlayer');
    expect(inspect('container', name).State.Running).toBe(false); // --stop-source: stopped, not removed

    const [bundle] = bundlesOf(safety, name);
    expect(bundle).toBeDefined();
    const v = await ferry(['verify', path.join(safety, bundle!)]);
    expect(v.code, v.stderr).toBe(0);
  });
});
