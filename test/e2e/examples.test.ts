/**
 * The scripts in examples/ are what operators copy into cron and runbooks: they run here, as
 * written, against the real engines (FERRY points them at this checkout's bin/ferry.js).
 */
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  DOCKER_20,
  DOCKER_26_CONTAINERD,
  ENGINE_A,
  ENGINE_B,
  exists,
  ferry,
  inspect,
  PODMAN,
  removeSnapshots,
  ROOT,
  S3,
  s3Env,
  s3Url,
  sh,
  shAsync,
  sshHome,
  uid,
} from '../helpers/lab.js';
import { s3Clean } from '../helpers/s3.js';

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

/** A local dead-man's switch: the URL to give, and the pings it got (path and body). */
async function pingRecorder(): Promise<{ url: string; pings: { path: string; body: string }[]; close: () => void }> {
  const pings: { path: string; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      pings.push({ path: req.url ?? '', body });
      res.end('OK');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ping/cron`;
  return { url, pings, close: () => server.close() };
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

  it('a container whose pre-exec hook fails: exit 3 (partial), the others still backed up, and still pruned', async () => {
    docker(['run', '-d', '--name', bad, '--label', 'ferry.pre-exec=exit 9', BUSYBOX, ...SERVICE], { host: ENGINE_B });
    const before = bundlesOf(store, name);
    const hc = await pingRecorder();
    const r = await shAsync(`sh '${example('cron-backup.sh')}'`, {
      DOCKER_HOST: ENGINE_B,
      BACKUP_DIR: store,
      PATH: pathWithoutSyslog(),
      FERRY_NOTIFY_URL: hc.url,
    }).finally(() => hc.close());
    expect(r.code, r.stderr).toBe(3);
    // The backup's /fail is the last word: the prune after it does not ping (its success would hide it).
    expect(hc.pings.map((p) => p.path)).toEqual(['/ping/cron/start', '/ping/cron/fail']);
    expect(hc.pings[1]!.body).toMatch(new RegExp(`failed: .*${bad}`));
    expect(r.stderr).toMatch(/PARTIAL: some containers were not backed up/);
    expect(r.stderr).toMatch(new RegExp(`${bad}.*pre-exec hook failed \\(exit 9\\)`));
    expect(bundlesOf(store, bad)).toEqual([]);
    const after = bundlesOf(store, name);
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(before[0]);
    expect(inspect('container', bad, ENGINE_B).State.Running).toBe(true);
  });
});

describe('examples/cron-backup.sh with the config file (examples/ferry.toml): store, label filter, compression, rotation', () => {
  const store = path.join(dir, 'cron-config-store');
  const name = uid('excfg');
  const other = uid('excfgno'); // not labelled
  const label = `ferry-e2e-${name}`;
  afterAll(() => cleanup(ENGINE_B, { containers: [name, other], volumes: [name] }));

  it('backs up only the labelled container, gzip, into the store the file names, and keeps the last 2 as the file says', async () => {
    mkdirSync(store, { mode: 0o700 });
    docker(['run', '-d', '--name', name, '--label', `${label}=nightly`, '-v', `${name}:/data`, BUSYBOX, ...SERVICE], {
      host: ENGINE_B,
    });
    docker(['exec', name, 'sh', '-c', 'echo nightly > /data/f'], { host: ENGINE_B });
    docker(['run', '-d', '--name', other, BUSYBOX, ...SERVICE], { host: ENGINE_B });
    // The example file as installed, with this test's store, label and a rotation that differs
    // from the script's own default (keep-daily 7 would leave one bundle of a day, not two).
    const shipped = readFileSync(example('ferry.toml'), 'utf8');
    const toml = shipped
      .replace('output = "/backups"', `output = "${store}"`)
      .replace('label=backup=nightly', `label=${label}=nightly`)
      .replace(/keep-daily = 7\nkeep-weekly = 4\nkeep-monthly = 6/, 'keep-last = 2');
    for (const s of [
      `output = "${store}"`,
      `filter = ["label=${label}=nightly"]`,
      'compress = "gzip"',
      'keep-last = 2',
    ])
      expect(toml, s).toContain(s);
    const config = path.join(dir, 'cron-ferry.toml');
    writeFileSync(config, toml);
    // No BACKUP_DIR, no KEEP_*: all from the file.
    const env = { DOCKER_HOST: ENGINE_B, FERRY_CONFIG: config, PATH: pathWithoutSyslog() };
    const made: string[] = [];
    for (let night = 0; night < 3; night++) {
      const hc = night === 2 ? await pingRecorder() : undefined;
      const r = await shAsync(`sh '${example('cron-backup.sh')}'`, {
        ...env,
        ...(hc ? { FERRY_NOTIFY_URL: hc.url } : {}),
      }).finally(() => hc?.close());
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`starting: ferry backup --all -o ${store} --verify (filter label=${label}=nightly)`);
      expect(r.stderr).toContain(
        `done: every running container backed up and verified (filter label=${label}=nightly); retention from ${config}`,
      );
      made.push(...bundlesOf(store, name).filter((b) => !made.includes(b)));
      if (hc) {
        // After a full backup the prune pings too: backup start, success, prune start, success.
        expect(hc.pings.map((p) => p.path)).toEqual([
          '/ping/cron/start',
          '/ping/cron',
          '/ping/cron/start',
          '/ping/cron',
        ]);
        expect(hc.pings[1]!.body).toMatch(/^backed up 1 of 1 containers/);
        expect(hc.pings[3]!.body).toMatch(new RegExp(`^pruned ${store}: 1 bundle removed`));
      }
    }
    expect(made).toHaveLength(3);
    // keep-last 2 from the file: the two newest stay.
    expect(bundlesOf(store, name)).toEqual(made.slice(1));
    // The label filter: the unlabelled container (and every other one on the engine) is left out.
    expect(bundlesOf(store, other)).toEqual([]);
    expect(readdirSync(store).filter((f) => f.endsWith('.tar') && !f.startsWith(`ferry-${name}-`))).toEqual([]);
    // compress = "gzip" from the file (ferry's default is zstd).
    const newest = path.join(store, made[2]!);
    const members = execFileSync('tar', ['-tf', newest], { encoding: 'utf8' }).split('\n');
    expect(members).toContain(`volumes/${name}.tar.gz`);
    const v = await ferry(['verify', newest]);
    expect(v.code, v.stderr).toBe(0);
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

describe('two hosts sign into one shared store (cron-backup.sh), a DR host restores with examples/dr-restore-trusted.sh', () => {
  const id = uid('exsig');
  const [a, b] = [`${id}-a`, `${id}-b`];
  const store = path.join(dir, 'shared-store');
  const keys = path.join(dir, 'sign-keys');
  const keyOf = (h: string) => path.join(keys, h);
  const signers = path.join(keys, 'allowed_signers');
  const pubLine = (k: string) => readFileSync(`${k}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
  afterAll(() => {
    for (const host of [ENGINE_A, ENGINE_B]) cleanup(host, { containers: [a, b], volumes: [a, b] });
    removeSnapshots([a, b]);
  });

  it('each host signs its nightly bundles with its own key into the store', () => {
    mkdirSync(store, { mode: 0o700 });
    mkdirSync(keys);
    for (const h of ['host-a', 'host-b'])
      execFileSync('ssh-keygen', ['-t', 'ed25519', '-q', '-N', '', '-C', h, '-f', keyOf(h)]);
    writeFileSync(signers, `host-a ${pubLine(keyOf('host-a'))}\nhost-b ${pubLine(keyOf('host-b'))}\n`);
    for (const [c, host] of [
      [a, ENGINE_A],
      [b, ENGINE_B],
    ] as const) {
      docker(['run', '-d', '--name', c, '--label', `ferry-ex=${id}`, '-v', `${c}:/data`, BUSYBOX, ...SERVICE], {
        host,
      });
      docker(['exec', c, 'sh', '-c', `echo "genuine ${c}" > /data/state`], { host });
    }
    for (const [h, host] of [
      ['host-a', ENGINE_A],
      ['host-b', ENGINE_B],
    ] as const) {
      const r = sh(`sh '${example('cron-backup.sh')}'`, {
        DOCKER_HOST: host,
        BACKUP_DIR: store,
        FERRY_SIGN_KEY: keyOf(h),
        FERRY_BACKUP_ARGS: `--filter label=ferry-ex=${id}`,
        PATH: pathWithoutSyslog(),
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/--verify \(signed\)/);
      expect(r.stderr).toMatch(/done: every running container backed up and verified/);
    }
    for (const [c, h] of [
      [a, 'host-a'],
      [b, 'host-b'],
    ]) {
      const [bundle] = bundlesOf(store, c!);
      expect(bundle).toBeDefined();
      // OpenSSH alone accepts each host's signature (principal as allowed_signers names it).
      const x = path.join(dir, `x-${c}`);
      mkdirSync(x);
      execFileSync('tar', ['-xf', path.join(store, bundle!), '-C', x]);
      execFileSync(
        'ssh-keygen',
        ['-Y', 'verify', '-f', signers, '-I', h!, '-n', 'ferry-bundle@ferry', '-s', path.join(x, 'SHA256SUMS.sig')],
        {
          input: readFileSync(path.join(x, 'SHA256SUMS')),
        },
      );
    }
  });

  it('restores each service from its newest trusted bundle, skipping a planted one and refusing a forged one', async () => {
    const [genuine] = bundlesOf(store, a);
    // Whoever else can write to the store plants a newer, unsigned bundle of a with other data...
    docker(['exec', a, 'sh', '-c', 'echo planted > /data/state']);
    const p = await ferry(['backup', a, '-o', store]);
    expect(p.code, p.stderr).toBe(0);
    // ...and a copy of host-a's genuine bundle, dated a year later in its manifest: it still
    // declares host-a's key, but its signature no longer holds.
    const bytes = Buffer.from(readFileSync(path.join(store, genuine!)));
    const at = bytes.indexOf(Buffer.from('"createdAt": "20'));
    expect(at).toBeGreaterThan(0);
    bytes[at + 16]! += 1; // 2026 -> 2036: the newest bundle of a
    writeFileSync(path.join(store, `ferry-${a}-29990101T000000Z.tar`), bytes);
    expect(bundlesOf(store, a)).toHaveLength(3);

    // The hosts are gone.
    for (const host of [ENGINE_A, ENGINE_B]) cleanup(host, { containers: [a, b], volumes: [a, b] });

    const r = sh(`sh '${example('dr-restore-trusted.sh')}' '${store}' ${a} ${b}`, {
      DOCKER_HOST: ENGINE_A,
      TRUST: signers,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`WARNING: ${a}: skipped \\S+ \\(not signed\\)`));
    expect(r.stderr).toMatch(
      new RegExp(`WARNING: ${a}: REFUSED \\S+29990101T000000Z.tar: its signature does not hold`),
    );
    expect(r.stderr).toMatch(new RegExp(`${a}: restoring \\S+${genuine} \\(signed by host-a\\)`));
    expect(r.stderr).toMatch(new RegExp(`${b}: restoring \\S+ \\(signed by host-b\\)`));
    expect(r.stderr).toMatch(/done: .* restored from trusted bundles/);
    for (const c of [a, b]) {
      expect(inspect('container', c).State.Running).toBe(true);
      expect(docker(['exec', c, 'cat', '/data/state'])).toBe(`genuine ${c}`);
    }
  });

  it('a container whose bundles no trusted key signed is not restored (exit 11)', () => {
    cleanup(ENGINE_A, { containers: [b], volumes: [b] });
    const onlyA = path.join(keys, 'only-host-a');
    writeFileSync(onlyA, `host-a ${pubLine(keyOf('host-a'))}\n`);
    const r = sh(`sh '${example('dr-restore-trusted.sh')}' '${store}' ${b}`, { DOCKER_HOST: ENGINE_A, TRUST: onlyA });
    expect(r.code, r.stderr).toBe(11);
    expect(r.stderr).toMatch(
      new RegExp(`${b}: skipped \\S+ \\(signed by SHA256:\\S+, not in the allowed_signers file\\)`),
    );
    expect(exists('container', b)).toBe(false);
    expect(exists('volume', b)).toBe(false);
  });
});

describe('a fleet backs up nightly into one restic repository (cron-backup.sh), and a fourth engine restores any of them', () => {
  const id = uid('exfleet');
  const hosts = [
    [`${id}-a`, DOCKER_20],
    [`${id}-b`, ENGINE_B],
    [`${id}-c`, DOCKER_26_CONTAINERD],
  ] as const;
  const names = hosts.map(([c]) => c);
  const repo = path.join(dir, 'fleet-repo');
  const resticEnv = { RESTIC_PASSWORD: 'fleet-secret', RESTIC_CACHE_DIR: path.join(dir, 'fleet-cache') };
  const snapshotsOf = (container: string) =>
    (
      JSON.parse(
        execFileSync('restic', ['-r', repo, 'snapshots', '--json', '--tag', `ferry-set=${container}`], {
          env: { ...process.env, ...resticEnv },
          encoding: 'utf8',
        }),
      ) ?? []
    ).map((s: { short_id: string }) => s.short_id) as string[];
  const night = (container: string, host: string) =>
    sh(`sh '${example('cron-backup.sh')}'`, {
      ...resticEnv,
      DOCKER_HOST: host,
      BACKUP_DIR: `restic:${repo}`,
      FERRY_BACKUP_ARGS: `--filter label=ferry-fleet=${container}`,
      PATH: pathWithoutSyslog(),
    });
  afterAll(() => {
    for (const [c, host] of hosts) cleanup(host, { containers: [c], volumes: [c] });
    cleanup(PODMAN, { containers: names, volumes: names });
    removeSnapshots(names, [DOCKER_20, ENGINE_B, DOCKER_26_CONTAINERD]);
  });

  it('three engines back up into the repository each night, verified and rotated', () => {
    execFileSync('restic', ['-r', repo, 'init'], { env: { ...process.env, ...resticEnv }, stdio: 'ignore' });
    for (const [c, host] of hosts) {
      docker(['run', '-d', '--name', c, '--label', `ferry-fleet=${c}`, '-v', `${c}:/data`, BUSYBOX, ...SERVICE], {
        host,
      });
      docker(['exec', c, 'sh', '-c', `echo "night one on ${c}" > /data/journal`], { host });
    }
    for (const [c, host] of hosts) {
      const r = night(c, host);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/verified: restic check and the newest snapshots/);
      expect(r.stderr).toMatch(/done: every running container backed up and verified/);
      expect(snapshotsOf(c)).toHaveLength(1);
    }
    // The second night of the first host: one more snapshot, and the rotation keeps the newer.
    const [c, host] = hosts[0];
    const [first] = snapshotsOf(c);
    docker(['exec', c, 'sh', '-c', 'echo "night two" >> /data/journal'], { host });
    const r = night(c, host);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/prune: 1 snapshot removed/);
    const left = snapshotsOf(c);
    expect(left).toHaveLength(1);
    expect(left[0]).not.toBe(first);
    // The other hosts' snapshots are untouched by it.
    for (const [other] of hosts.slice(1)) expect(snapshotsOf(other)).toHaveLength(1);
  });

  it('restores any of them onto a fourth engine (Podman), with its data', async () => {
    for (const [c] of hosts.slice(0, 2)) {
      const r = await ferry(['-H', PODMAN, 'restore', `restic:${repo}#${c}`], { env: resticEnv });
      expect(r.code, `${c}: ${r.stderr}`).toBe(0);
      expect(inspect('container', c, PODMAN).State.Running).toBe(true);
    }
    expect(docker(['exec', names[0]!, 'cat', '/data/journal'], { host: PODMAN })).toBe(
      `night one on ${names[0]}\nnight two`,
    );
    expect(docker(['exec', names[1]!, 'cat', '/data/journal'], { host: PODMAN })).toBe(`night one on ${names[1]}`);
  });

  it("the same nightly job into a restic repository on the lab's S3 server: verified, rotated, restorable", async () => {
    const prefix = uid('e2e-restic-s3');
    const s3Repo = `s3:${S3.endpoint}/${S3.bucket}/${prefix}`;
    const env = { ...resticEnv, ...s3Env(), RESTIC_CACHE_DIR: path.join(dir, 's3-cache') };
    try {
      execFileSync('restic', ['-r', s3Repo, 'init'], { env: { ...process.env, ...env }, stdio: 'ignore' });
      const [c, host] = hosts[1];
      const run = () =>
        sh(`sh '${example('cron-backup.sh')}'`, {
          ...env,
          DOCKER_HOST: host,
          BACKUP_DIR: `restic:${s3Repo}`,
          FERRY_BACKUP_ARGS: `--filter label=ferry-fleet=${c}`,
          PATH: pathWithoutSyslog(),
        });
      const first = run();
      expect(first.code, first.stderr).toBe(0);
      expect(first.stderr).toMatch(/verified: restic check and the newest snapshots/);
      docker(['exec', c, 'sh', '-c', 'echo "night two" >> /data/journal'], { host });
      const second = run();
      expect(second.code, second.stderr).toBe(0);
      expect(second.stderr).toMatch(/prune: 1 snapshot removed/);
      const ls = await ferry(['--json', 'ls', `restic:${s3Repo}`], { env });
      expect(ls.code, ls.stderr).toBe(0);
      // One snapshot of the set is left after the rotation (docs/json.md, restic repositories).
      expect(JSON.parse(ls.stdout).bundles.map((b: { set: string }) => b.set)).toEqual([c]);
      cleanup(PODMAN, { containers: [c], volumes: [c] });
      const r = await ferry(['-H', PODMAN, 'restore', `restic:${s3Repo}#${c}`], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(docker(['exec', c, 'cat', '/data/journal'], { host: PODMAN })).toBe(`night one on ${c}\nnight two`);
    } finally {
      await s3Clean(prefix);
    }
  });
});

describe('the nightly job into S3 (cron-backup.sh, BACKUP_DIR=s3://...), a drill there, a DR restore on another engine', () => {
  const c = uid('exs3');
  const prefix = uid('e2e-ex-s3');
  const store = s3Url(prefix);
  const keys = path.join(dir, 's3-keys');
  const signers = path.join(keys, 'allowed_signers');
  afterAll(async () => {
    for (const host of [ENGINE_A, ENGINE_B]) cleanup(host, { containers: [c], volumes: [c] });
    removeSnapshots([c]);
    await s3Clean(prefix);
  });
  /** The bundles of `c` in the bucket, oldest first, as `ferry ls` lists them. */
  const inBucket = async (): Promise<string[]> => {
    const r = await ferry(['--json', 'ls', store], { env: s3Env() });
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout).bundles as { bundle: string; containers?: string[] }[])
      .filter((b) => b.containers?.includes(c))
      .map((b) => b.bundle);
  };

  it('backs up into the bucket each night, signed and verified, and rotates there', async () => {
    mkdirSync(keys);
    execFileSync('ssh-keygen', ['-t', 'ed25519', '-q', '-N', '', '-C', 'host-a', '-f', path.join(keys, 'host-a')]);
    const pub = readFileSync(path.join(keys, 'host-a.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
    writeFileSync(signers, `host-a ${pub}\n`);
    docker(['run', '-d', '--name', c, '--label', `ferry-ex=${c}`, '-v', `${c}:/data`, BUSYBOX, ...SERVICE]);
    docker(['exec', c, 'sh', '-c', 'echo "off-site night" > /data/state']);
    const env = {
      ...s3Env(),
      DOCKER_HOST: ENGINE_A,
      BACKUP_DIR: store,
      FERRY_SIGN_KEY: path.join(keys, 'host-a'),
      FERRY_BACKUP_ARGS: `--filter label=ferry-ex=${c}`,
      PATH: pathWithoutSyslog(),
    };
    const first = sh(`sh '${example('cron-backup.sh')}'`, env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/done: every running container backed up and verified/);
    const [one, ...more] = await inBucket();
    expect(one).toBeDefined();
    expect(more).toEqual([]);
    const second = sh(`sh '${example('cron-backup.sh')}'`, env);
    expect(second.code, second.stderr).toBe(0);
    const left = await inBucket();
    expect(left).toHaveLength(1); // keep-daily: of two the same day, the newer
    expect(left[0]).not.toBe(one);
  });

  it('drills the newest bundle there on another engine: it runs, and nothing is left', async () => {
    const [newest] = await inBucket();
    const r = await ferry(['-H', ENGINE_B, '--json', 'drill', newest!, '--timeout', '60'], { env: s3Env() });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, bundle: newest, leftovers: [] });
    expect(exists('container', c, ENGINE_B)).toBe(false);
  });

  it('the host is gone: dr-restore-trusted.sh brings the service up on another engine from the bucket', () => {
    cleanup(ENGINE_A, { containers: [c], volumes: [c] });
    const r = sh(`sh '${example('dr-restore-trusted.sh')}' '${store}' ${c}`, {
      ...s3Env(),
      DOCKER_HOST: ENGINE_B,
      TRUST: signers,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`${c}: restoring \\S+ \\(signed by host-a\\)`));
    expect(inspect('container', c, ENGINE_B).State.Running).toBe(true);
    expect(docker(['exec', c, 'cat', '/data/state'], { host: ENGINE_B })).toBe('off-site night');
  });
});
