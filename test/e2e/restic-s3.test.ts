/**
 * A restic repository on the lab's S3 server (issue 24's third backend, beside a directory and
 * SFTP): `restic:s3:http://127.0.0.1:7480/<bucket>/<prefix>`, restic's own S3 backend with the
 * credentials in the environment (AWS_ACCESS_KEY_ID, ...), which ferry passes to restic untouched.
 * Two nights of the cron example into it (backup, verify, rotation), the packs checked in the
 * bucket with the SDK, then a DR restore of the newest snapshot onto another engine.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AWKWARD_DATA,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  ferry,
  inspect,
  removeSnapshots,
  ROOT,
  S3,
  s3Env,
  sh,
  uid,
  volumeListing,
  withoutLinkCounts,
} from '../helpers/lab.js';
import { s3Clean, s3Objects } from '../helpers/s3.js';

describe('nightly backups into a restic repository on S3 (cron-backup.sh), rotated, restored on another engine', () => {
  const c = uid('rs3');
  const prefix = `restic-e2e/${c}`;
  const repo = `s3:${S3.endpoint}/${S3.bucket}/${prefix}`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-restic-s3-'));
  const env = { ...s3Env(), RESTIC_PASSWORD: 's3-secret', RESTIC_CACHE_DIR: path.join(dir, 'cache') };
  const snapshots = (): string[] =>
    (
      JSON.parse(
        execFileSync('restic', ['-r', repo, 'snapshots', '--json', '--tag', `ferry-set=${c}`], {
          env: { ...process.env, ...env },
          encoding: 'utf8',
        }),
      ) ?? []
    ).map((s: { id: string }) => s.id) as string[];
  /** A PATH whose `logger` fails, so that the cron script logs to stderr (where the test reads it). */
  const noSyslog = () => {
    const bin = path.join(dir, 'nolog-bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(path.join(bin, 'logger'), '#!/bin/sh\nexit 1\n');
    chmodSync(path.join(bin, 'logger'), 0o755);
    return `${bin}:${process.env.PATH}`;
  };
  const night = () =>
    sh(`sh '${path.join(ROOT, 'examples', 'cron-backup.sh')}'`, {
      ...env,
      DOCKER_HOST: ENGINE_A,
      BACKUP_DIR: `restic:${repo}`,
      FERRY_BACKUP_ARGS: `--filter label=ferry-rs3=${c}`,
      PATH: noSyslog(),
    });
  let listing = '';

  beforeAll(() => {
    execFileSync('restic', ['-r', repo, 'init'], { env: { ...process.env, ...env }, stdio: 'ignore' });
    docker([
      'run',
      '-d',
      '--name',
      c,
      '--label',
      `ferry-rs3=${c}`,
      '-e',
      'MODE=s3 night',
      '-v',
      `${c}:/data`,
      BUSYBOX,
      'sh',
      '-c',
      'trap "exit 0" TERM; while :; do sleep 1; done',
    ]);
    docker(['exec', c, 'sh', '-c', AWKWARD_DATA]);
    docker(['exec', c, 'sh', '-c', 'echo "night one" > /data/journal']);
  });

  afterAll(async () => {
    for (const host of [ENGINE_A, ENGINE_B]) cleanup(host, { containers: [c], volumes: [c] });
    removeSnapshots([c]);
    rmSync(dir, { recursive: true, force: true });
    await s3Clean(prefix);
  });

  it('backs up each night into the bucket, verified and rotated', async () => {
    const first = night();
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/done: every running container backed up and verified/);
    const [one, ...more] = snapshots();
    expect(one).toBeTruthy();
    expect(more).toEqual([]);
    // restic wrote its repository into the bucket: config, keys, packs, the snapshot.
    const objects = await s3Objects(prefix);
    expect(objects).toContain('config');
    expect(objects.filter((k) => k.startsWith('data/')).length).toBeGreaterThan(0);
    expect(objects.filter((k) => k.startsWith('snapshots/'))).toHaveLength(1);
    docker(['exec', c, 'sh', '-c', 'echo "night two" >> /data/journal']);
    listing = volumeListing(c);
    const second = night();
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/prune: 1 snapshot removed/);
    const left = snapshots();
    expect(left).toHaveLength(1);
    expect(left[0]).not.toBe(one);
    expect((await s3Objects(prefix)).filter((k) => k.startsWith('snapshots/'))).toHaveLength(1);
  });

  it('lists the snapshot by host and container set', async () => {
    const ls = await ferry(['--json', 'ls', `restic:${repo}`], { env });
    expect(ls.code, ls.stderr).toBe(0);
    const bundles = JSON.parse(ls.stdout).bundles as { set: string; snapshot: string }[];
    expect(bundles.map((b) => b.set)).toEqual([c]);
    expect(bundles[0]!.snapshot).toBe(snapshots()[0]);
  });

  it('restores the newest snapshot onto another engine (DR), with its data', async () => {
    const r = await ferry(['-H', ENGINE_B, 'restore', `restic:${repo}#${c}`], { env });
    expect(r.code, r.stderr).toBe(0);
    const restored = inspect('container', c, ENGINE_B);
    expect(restored.State.Running).toBe(true);
    expect(restored.Config.Env).toContain('MODE=s3 night');
    expect(restored.Config.Labels['ferry-rs3']).toBe(c);
    expect(docker(['exec', c, 'cat', '/data/journal'], { host: ENGINE_B })).toBe('night one\nnight two');
    expect(withoutLinkCounts(volumeListing(c, ENGINE_B))).toBe(withoutLinkCounts(listing));
  });
});
