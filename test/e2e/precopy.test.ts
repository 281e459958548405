/**
 * The pre-copy (docs/precopy.md): `migrate --stop-source` copies the volumes while the source
 * runs and, once it is stopped, only what changed. Under a continuous write load:
 *  - PostgreSQL, engine A to engine B: no row acknowledged before the stop is lost, the volume on
 *    the target is the source's at the freeze (listing and hashes), and the downtime is reported;
 *  - plain files, to ssh://newhost (engine B through sshd): files rewritten with the same size and
 *    mtime (only ctime tells), chmod-ed, deleted, added, directories made and removed and a
 *    symlink re-pointed between the passes all arrive as they were at the freeze.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  ferry,
  inspect,
  POSTGRES,
  removeSnapshots,
  sshHome,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

interface VolumePrecopy {
  passes: number;
  runningBytes: number;
  frozenBytes: number;
  frozenEntries: number;
  frozenRemoved: number;
}

function precopyOf(res: { dataPaths: { volumes: { name: string; precopy?: VolumePrecopy }[] } }, vol: string) {
  const v = res.dataPaths.volumes.find((x) => x.name === vol);
  expect(v?.precopy, JSON.stringify(res.dataPaths)).toMatchObject({ passes: expect.any(Number) });
  return v!.precopy!;
}

describe('migrate --stop-source with a pre-copy: PostgreSQL under a write load, A to B', () => {
  const name = uid('pcpg');
  const vol = `${name}-data`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-precopy-pg-'));

  function psql(sql: string, host = ENGINE_A): string {
    return docker(['exec', name, 'psql', '-U', 'postgres', '-tAc', sql], { host });
  }

  beforeAll(async () => {
    docker(['run', '-d', '--name', name, '-v', `${vol}:/var/lib/postgresql/data`, POSTGRES]);
    await waitFor('postgres to accept connections', () => (psql('select 1'), true), 120_000);
    psql('create table t (n bigint primary key, pad text not null)');
    // Ballast, so that the first pass takes a while and the writer changes things meanwhile.
    psql("create table ballast as select g, md5(g::text) || repeat('x', 200) as v from generate_series(1, 300000) g");
  }, 180_000);

  afterAll(() => {
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    removeSnapshots([name]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('loses no acknowledged row, and the target volume is the source at the freeze', async () => {
    // Sequenced rows; the number of the last one acknowledged is written into the container's
    // own file system (not the volume), which the stopped source still shows.
    docker([
      'exec',
      '-d',
      name,
      'sh',
      '-c',
      // Row i is inserted until it is acknowledged, then i+1: rows 1..acked were all committed.
      'i=1; while :; do psql -U postgres -qc "insert into t values ($i, repeat(\'r\', 500))" >/dev/null 2>&1 && echo $i > /tmp/acked && i=$((i+1)); done',
    ]);
    await waitFor('the writer to start', () => Number(psql('select count(*) from t')) > 50);
    const r = await ferry(['migrate', name, '--to', ENGINE_B, '--stop-source', '--no-start', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(inspect('container', name).State.Running).toBe(false);
    const pre = precopyOf(res, vol);
    expect(pre.passes).toBeGreaterThanOrEqual(1);
    // What went while it was stopped is less than what went while it ran.
    expect(pre.frozenBytes).toBeLessThan(pre.runningBytes);
    expect(res.downtimeMs).toBeGreaterThan(0);
    expect(res.downtimeMs).toBeLessThan(res.durationMs);
    expect(res.pausedMs).toBe(res.downtimeMs);
    // The volume on the target is the stopped source's, entry for entry and byte for byte.
    expect(volumeListing(vol, ENGINE_B)).toBe(volumeListing(vol));

    docker(['cp', `${name}:/tmp/acked`, path.join(dir, 'acked')]);
    const acked = Number(readFileSync(path.join(dir, 'acked'), 'utf8').trim());
    expect(acked).toBeGreaterThan(50);
    docker(['start', name], { host: ENGINE_B });
    await waitFor('postgres on the target', () => (psql('select 1', ENGINE_B), true), 120_000);
    // Every acknowledged row is there (rows after it may be too: committed, the answer lost in the stop).
    expect(Number(psql(`select count(*) from t where n <= ${acked}`, ENGINE_B))).toBe(acked);
    expect(Number(psql('select max(n) from t', ENGINE_B))).toBeGreaterThanOrEqual(acked);
    expect(Number(psql('select count(*) from ballast', ENGINE_B))).toBe(300000);
  }, 300_000);
});

describe('migrate --stop-source with a pre-copy: files changed between passes, to ssh://newhost', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-precopy-'));
  const name = uid('pcf');
  const vol = `${name}-data`;
  let home = '';

  beforeAll(() => {
    home = sshHome(dir).home;
    // The service only sleeps (and stops at once); the writer runs beside it, by exec, so that
    // nothing writes on the target once it is started there.
    docker([
      'run',
      '-d',
      '--name',
      name,
      '-v',
      `${vol}:/data`,
      BUSYBOX,
      'sh',
      '-c',
      // (the data is made once: the same command runs on the target, which must not touch it)
      'trap "exit 0" TERM; [ -e /data/ready ] || { mkdir -p /data/d /data/dirs; dd if=/dev/urandom of=/data/ballast bs=1M count=64 2>/dev/null; ' +
        'for j in $(seq 0 39); do dd if=/dev/urandom of=/data/d/f$j bs=4k count=16 2>/dev/null; done; ' +
        'touch -d "2020-01-01 00:00:00" /data/d/*; touch /data/ready; }; while :; do sleep 0.2; done',
    ]);
  });

  afterAll(() => {
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    removeSnapshots([name]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends what changed, deletions and metadata included, and reports the downtime', async () => {
    await waitFor('the data', () => docker(['exec', name, 'ls', '/data']).includes('ready'));
    // Rewrites files in place with the same size and puts their mtime back (only ctime tells),
    // changes modes, adds and deletes files, makes and removes directories, re-points a symlink.
    docker([
      'exec',
      '-d',
      name,
      'sh',
      '-c',
      'cd /data; i=0; while :; do i=$((i+1)); j=$((i % 40)); ' +
        'dd if=/dev/urandom of=d/f$j bs=4k count=16 conv=notrunc 2>/dev/null; touch -d "2020-01-01 00:00:00" d/f$j; ' +
        'if [ $((i % 3)) = 0 ]; then chmod 600 d/f$j; else chmod 644 d/f$j; fi; ' +
        'echo $i > n$i; rm -f n$((i-5)); mkdir -p dirs/x$i/y; echo $i > dirs/x$i/y/z; rm -rf dirs/x$((i-2)); ' +
        'ln -sfn n$i latest; sleep 0.01; done',
    ]);
    await waitFor('the writer', () => docker(['exec', name, 'ls', '/data']).includes('n20'));
    const r = await ferry(['migrate', name, '--to', 'ssh://newhost', '--stop-source', '--json'], {
      env: { HOME: home },
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    const pre = precopyOf(res, vol);
    // Things changed and went away between the first pass and the freeze, and were sent then.
    expect(pre.frozenEntries).toBeGreaterThan(0);
    expect(pre.frozenRemoved).toBeGreaterThan(0);
    expect(pre.frozenBytes).toBeLessThan(pre.runningBytes);
    expect(res.dataPaths.volumes[0].path).toBe('host-tar');
    expect(res.downtimeMs).toBeGreaterThan(0);
    expect(res.downtimeMs).toBeLessThan(res.durationMs);
    expect(inspect('container', name).State.Running).toBe(false);
    expect(inspect('container', name, ENGINE_B).State.Running).toBe(true);
    expect(volumeListing(vol, ENGINE_B)).toBe(volumeListing(vol));
  }, 180_000);
});

describe('a pre-copy of many volumes over one SSH connection', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-precopy-many-'));
  const name = uid('pcm');
  // More volumes than sshd lets one connection hold sessions at once (MaxSessions 10): the
  // frozen pass's shells on the target are opened ahead for a few of them only.
  const vols = Array.from({ length: 7 }, (_, i) => `${name}-v${i}`);
  let home = '';

  beforeAll(() => {
    home = sshHome(dir).home;
    const mounts = vols.flatMap((v, i) => ['-v', `${v}:/d${i}`]);
    const fill = vols.map((_, i) => `echo ${i} > /d${i}/f; head -c 100000 /dev/urandom > /d${i}/r`).join('; ');
    docker(['run', '-d', '--name', name, ...mounts, BUSYBOX, 'sh', '-c', `${fill}; exec sleep 100000`]);
  });

  afterAll(() => {
    cleanup(ENGINE_A, { containers: [name], volumes: vols });
    cleanup(ENGINE_B, { containers: [name], volumes: vols });
    removeSnapshots([name]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('migrates a container with 7 volumes to ssh://newhost, each pre-copied, each whole', async () => {
    await waitFor('the data', () => docker(['exec', name, 'ls', '/d6']).includes('r'));
    const r = await ferry(['migrate', name, '--to', 'ssh://newhost', '--no-start', '--json'], { env: { HOME: home } });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    for (const v of vols) {
      expect(precopyOf(res, v).passes).toBeGreaterThanOrEqual(1);
      expect(volumeListing(v, ENGINE_B)).toBe(volumeListing(v));
    }
    expect(inspect('container', name).State.Running).toBe(true); // a copy: the source runs on
  }, 180_000);
});
