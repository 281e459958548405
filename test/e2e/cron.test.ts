/**
 * What a cron job needs: dead-man's switch pings, --all with one bundle per container and exit 3
 * when some fail, quiet plain output, and a warning when a volume lost most of its data since
 * the previous bundle in the store (local and ssh://).
 */
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ferry, freePort, inspect, sshHome, uid } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-cron-'));
const name = uid('cron');
let server: Server;
let base = '';
const pings: { path: string; body: string }[] = [];

beforeAll(async () => {
  docker(['run', '-d', '--name', name, '-v', `${name}:/v`, BUSYBOX, 'sleep', '100000']);
  const port = await freePort();
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      pings.push({ path: req.url ?? '', body });
      res.end('OK');
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  base = `http://127.0.0.1:${port}/ping/abc-123`;
});

afterAll(() => {
  server?.close();
  cleanup(ENGINE_A, { containers: [name], volumes: [name] });
  rmSync(dir, { recursive: true, force: true });
});

describe('--notify-url', () => {
  it('pings /start and then success with a summary', async () => {
    pings.length = 0;
    const r = await ferry(['backup', name, '-o', path.join(dir, 'ok'), '--mkdir', '--notify-url', base, '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(''); // --quiet: nothing when all is well
    expect(r.stderr).toBe('');
    expect(pings.map((p) => p.path)).toEqual(['/ping/abc-123/start', '/ping/abc-123']);
    expect(pings[1]!.body).toMatch(new RegExp(`backed up ${name} to .*ferry-${name}-`));
  });

  it('pings /fail with the error when the backup fails', async () => {
    pings.length = 0;
    const r = await ferry([
      'backup',
      'no-such-container-cron',
      '-o',
      path.join(dir, 'fail'),
      '--mkdir',
      '--notify-url',
      base,
    ]);
    expect(r.code).toBe(5);
    expect(pings.map((p) => p.path)).toEqual(['/ping/abc-123/start', '/ping/abc-123/fail']);
    expect(pings[1]!.body).toMatch(/no such container: no-such-container-cron/);
  });

  it('an unreachable notify URL never fails the backup', async () => {
    const dead = `http://127.0.0.1:${await freePort()}/ping/secret-uuid`;
    const r = await ferry(['backup', name, '-o', path.join(dir, 'dead'), '--mkdir', '--notify-url', dead]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/notify start: could not reach http:\/\/127\.0\.0\.1:\d+\/…/);
    expect(r.stderr).not.toMatch(/secret-uuid/); // the check's id is not printed
    expect(readdirSync(path.join(dir, 'dead'))).toHaveLength(1);
  });
});

describe('--notify-url on verify, drill and prune', () => {
  const paths = () => pings.map((p) => p.path);

  it('success for a whole bundle, a passing drill and a prune; fail for a damaged bundle', async () => {
    const store = path.join(dir, 'others');
    const b = await ferry(['--json', 'backup', name, '-o', store, '--mkdir']);
    expect(b.code, b.stderr).toBe(0);
    const bundle = JSON.parse(b.stdout).bundle as string;
    const buf = readFileSync(bundle);
    for (let i = 0; i < 64; i++) buf[Math.floor(buf.length / 2) + i]! ^= 0xff;
    const damaged = path.join(dir, 'damaged.tar');
    writeFileSync(damaged, buf);

    pings.length = 0;
    const v = await ferry(['verify', bundle, '--notify-url', base]);
    expect(v.code, v.stderr).toBe(0);
    expect(paths()).toEqual(['/ping/abc-123/start', '/ping/abc-123']);
    expect(pings[1]!.body).toMatch(/^verified .*: whole \(\d+ members checked\)$/);

    pings.length = 0;
    const bad = await ferry(['verify', damaged, '--notify-url', base]);
    expect(bad.code).toBe(7);
    expect(paths()).toEqual(['/ping/abc-123/start', '/ping/abc-123/fail']);
    expect(pings[1]!.body).toMatch(/^ferry verify failed on .*damaged\.tar is not whole/);

    pings.length = 0;
    const d = await ferry(['drill', bundle, '--timeout', '30', '--notify-url', base]);
    expect(d.code, d.stderr).toBe(0);
    expect(paths()).toEqual(['/ping/abc-123/start', '/ping/abc-123']);
    expect(pings[1]!.body).toMatch(/^drill of .* PASS in [\d.]+s$/);

    pings.length = 0;
    const dbad = await ferry(['drill', damaged, '--timeout', '30', '--notify-url', base]);
    expect(dbad.code).not.toBe(0);
    expect(paths()).toEqual(['/ping/abc-123/start', '/ping/abc-123/fail']);
    expect(pings[1]!.body).toMatch(/damaged\.tar.*FAIL: |failed on .*: /);

    expect((await ferry(['backup', name, '-o', store])).code).toBe(0);
    pings.length = 0;
    const p = await ferry(['prune', store, '--keep-last', '1', '--notify-url', base]);
    expect(p.code, p.stderr).toBe(0);
    expect(paths()).toEqual(['/ping/abc-123/start', '/ping/abc-123']);
    expect(pings[1]!.body).toMatch(/^pruned .*: 1 bundle removed \(.+\), 1 kept$/);
    expect(readdirSync(store).filter((f) => f.endsWith('.tar'))).toHaveLength(1);
  });
});

describe('--all needs a store', () => {
  it('refuses one file or stdout, since it writes one bundle per container', async () => {
    for (const o of [path.join(dir, 'one.tar'), '-']) {
      const r = await ferry(['backup', '--all', '-o', o]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/--all writes one bundle per container into a directory/);
    }
  });
});

describe('plain output for cron', () => {
  it('prints plain lines, no cursor movement, when stderr is not a terminal', async () => {
    const r = await ferry(['backup', name, '-o', path.join(dir, 'plain'), '--mkdir']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/\x1b\[/);
    expect(r.stdout.trim().split('\n')).toHaveLength(1); // one summary line
    expect(inspect('container', name).State.Running).toBe(true);
  });
});

describe('hooks', () => {
  it('runs --pre-exec before the snapshot (its output is in the bundle) and --post-exec after resume', async () => {
    const out = path.join(dir, 'hooks');
    const r = await ferry([
      'backup',
      name,
      '-o',
      out,
      '--mkdir',
      '--pre-exec',
      'date > /v/dump.txt; echo pre-ok',
      '--post-exec',
      'touch /tmp/post-ran',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/pre-exec hook in .*\n(.*\n)*.*pause .*\n(.*\n)*.*resume .*\n(.*\n)*.*post-exec hook in/);
    const listing = execFileSync(
      'sh',
      ['-c', `tar -xOf ${path.join(out, readdirSync(out)[0]!)} volumes/${name}.tar.zst | zstd -dc | tar -tf -`],
      { encoding: 'utf8' },
    );
    expect(listing).toMatch(/\.\/dump\.txt/);
    expect(docker(['exec', name, 'ls', '/tmp/post-ran'])).toBe('/tmp/post-ran');
  });

  it('a failing pre-exec hook aborts that container: exit 10, clear error, no bundle, container not paused', async () => {
    const out = path.join(dir, 'hookfail');
    const r = await ferry(['backup', name, '-o', out, '--mkdir', '--pre-exec', 'echo cannot dump >&2; exit 3']);
    expect(r.code).toBe(10);
    expect(r.stderr).toMatch(new RegExp(`${name}: the pre-exec hook failed \\(exit 3\\): cannot dump`));
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(readdirSync(out)).toEqual([]);
    const st = inspect('container', name).State;
    expect(st.Running).toBe(true);
    expect(st.Paused).toBe(false);
  });

  it('--all: a container whose ferry.pre-exec label fails is skipped, the others are backed up, exit 3', async () => {
    const bad = `${name}-badhook`;
    docker(['run', '-d', '--name', bad, '--label', 'ferry.pre-exec=exit 7', BUSYBOX, 'sleep', '100000']);
    try {
      const out = path.join(dir, 'all');
      const r = await ferry(['backup', '--all', '-o', out, '--mkdir', '--json', '--compress', 'none']);
      expect(r.code, r.stderr).toBe(3);
      const res = JSON.parse(r.stdout);
      expect(res.partial).toBe(true);
      const byName = Object.fromEntries(res.results.map((x: { container: string }) => [x.container, x]));
      expect(byName[bad].ok).toBe(false);
      expect(byName[bad].error.message).toMatch(/pre-exec hook failed \(exit 7\)/);
      expect(byName[name].ok).toBe(true);
      expect(readdirSync(out).some((f) => f.startsWith(`ferry-${name}-`))).toBe(true);
      expect(readdirSync(out).some((f) => f.startsWith(`ferry-${bad}-`))).toBe(false);
      expect(inspect('container', bad).State.Paused).toBe(false);
    } finally {
      cleanup(ENGINE_A, { containers: [bad] });
    }
  });
});

describe('ferry.exclude', () => {
  it('leaves a labelled container out of --all (said on stderr); named on the command line it is backed up', async () => {
    const skip = `${name}-excluded`;
    const side = `${name}-inside`;
    docker(['run', '-d', '--name', skip, '--label', 'ferry.exclude=true', BUSYBOX, 'sleep', '100000']);
    docker(['run', '-d', '--name', side, '--network', `container:${skip}`, BUSYBOX, 'sleep', '100000']);
    try {
      const out = path.join(dir, 'exclude');
      const r = await ferry(['backup', '--all', '-o', out, '--mkdir', '--json', '--compress', 'none']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`${skip}: not backed up (label ferry.exclude)`);
      expect(r.stderr).toContain(
        `warning: ${side} refers to ${skip} (network, volumes-from or link), which is left out (label ferry.exclude)`,
      );
      const res = JSON.parse(r.stdout);
      expect(res.results.map((x: { container: string }) => x.container)).not.toContain(skip);
      expect(res.results.map((x: { container: string }) => x.container)).toContain(name);
      expect(readdirSync(out).some((f) => f.startsWith(`ferry-${skip}-`))).toBe(false);
      const named = await ferry(['backup', skip, '-o', out, '--mkdir']);
      expect(named.code, named.stderr).toBe(0);
      expect(readdirSync(out).some((f) => f.startsWith(`ferry-${skip}-`))).toBe(true);
    } finally {
      cleanup(ENGINE_A, { containers: [side, skip] });
    }
  });
});

describe('a volume that lost its data since the previous bundle', () => {
  it('is a warning naming it and that bundle (also under --quiet and in --json); the backup still succeeds', async () => {
    const c = `${name}-shrink`;
    const { home } = sshHome(path.join(dir, 'shrink-ssh'));
    try {
      docker(['run', '-d', '--name', c, '-v', `${c}:/db`, BUSYBOX, 'sleep', '100000']);
      for (const store of [path.join(dir, 'shrink'), `ssh://newhost${path.join(dir, 'shrink-remote')}`]) {
        docker([
          'exec',
          c,
          'sh',
          '-c',
          'rm -rf /db/* && dd if=/dev/urandom of=/db/table bs=1M count=4 2>/dev/null && echo row > /db/small',
        ]);
        const full = await ferry(['--json', 'backup', c, '-o', store, '--mkdir'], { env: { HOME: home } });
        expect(full.code, full.stderr).toBe(0);
        expect(full.stderr).not.toMatch(/warning/);
        const first = JSON.parse(full.stdout).bundle as string;
        // a little less: nothing to say
        docker(['exec', c, 'sh', '-c', 'truncate -s 3M /db/table']);
        const less = await ferry(['--json', 'backup', c, '-o', store, '--mkdir'], { env: { HOME: home } });
        expect(less.code, less.stderr).toBe(0);
        expect(less.stderr).not.toMatch(/warning/);
        const second = JSON.parse(less.stdout).bundle as string;
        // the table is gone
        docker(['exec', c, 'sh', '-c', 'rm /db/table']);
        pings.length = 0;
        const r = await ferry(['--quiet', '--json', 'backup', c, '-o', store, '--mkdir', '--notify-url', base], {
          env: { HOME: home },
        });
        expect(r.code, r.stderr).toBe(0);
        expect(pings.map((p) => p.path)).toEqual(['/ping/abc-123/start', '/ping/abc-123']); // a success, with the warning in its message
        expect(pings[1]!.body).toMatch(
          new RegExp(`; warning: since the previous bundle, volume ${c} shrank from 3\\.0 MiB to [\\d.]+ KiB`),
        );
        expect(r.stderr).toMatch(
          new RegExp(
            `warning: volume ${c} of ${c} holds [\\d.]+ KiB, down from 3\\.0 MiB in ${path.basename(second)} \\(\\d{4}-`,
          ),
        );
        const res = JSON.parse(r.stdout);
        expect(res.shrunk).toHaveLength(1);
        expect(res.shrunk[0]).toMatchObject({
          volume: c,
          previousRawBytes: expect.any(Number),
          previousBundle: second,
        });
        expect(res.shrunk[0].previousRawBytes).toBeGreaterThan(3 * 1024 * 1024);
        expect(res.shrunk[0].rawBytes).toBeLessThan(64 * 1024);
        expect(first).not.toBe(second);
        // compared with the newest bundle before it, which already holds the small volume: quiet
        const again = await ferry(['--json', 'backup', c, '-o', store, '--mkdir'], { env: { HOME: home } });
        expect(again.code, again.stderr).toBe(0);
        expect(again.stderr).not.toMatch(/warning/);
        expect(JSON.parse(again.stdout).shrunk).toBeUndefined();
      }
    } finally {
      cleanup(ENGINE_A, { containers: [c], volumes: [c] });
    }
  });

  it('a named volume the container no longer mounts is a warning too', async () => {
    const c = `${name}-gone`;
    const store = path.join(dir, 'gone');
    try {
      docker(['run', '-d', '--name', c, '-v', `${c}:/db`, BUSYBOX, 'sleep', '100000']);
      docker(['exec', c, 'sh', '-c', 'echo data > /db/x']);
      expect((await ferry(['backup', c, '-o', store, '--mkdir'])).code).toBe(0);
      docker(['rm', '-f', c]);
      docker(['run', '-d', '--name', c, BUSYBOX, 'sleep', '100000']); // recreated without its volume
      const r = await ferry(['--json', 'backup', c, '-o', store, '--mkdir']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(
          `warning: volume ${c} \\([\\d.]+ KiB in ferry-${c}-\\d{8}T\\d{6}Z\\.tar, [^)]+\\) is not in this bundle of ${c}: they no longer mount it`,
        ),
      );
      expect(JSON.parse(r.stdout).shrunk).toMatchObject([{ volume: c, rawBytes: 0, gone: true }]);
    } finally {
      cleanup(ENGINE_A, { containers: [c], volumes: [c] });
    }
  });
});
