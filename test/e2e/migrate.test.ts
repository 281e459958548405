/**
 * ferry migrate from engine A to "newhost": an sshd on 127.0.0.1:2222 whose sessions reach
 * engine B, known through ~/.ssh/config and known_hosts. Config and awkward data arrive; a second
 * migration sends little more than the new top layer; a wrong host key is refused and nothing
 * reaches the target.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
  exists,
  ferry,
  freePort,
  inspect,
  sshHome,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-migrate-'));
const name = uid('mig');
const vol = `${name}-data`;
const net = `${name}-net`;
const fat = `ferry-test/fat-${name}:1`;
let home = '';
let port = 0;

beforeAll(async () => {
  home = sshHome(dir).home;
  port = await freePort();
  // An image engine B does not have: busybox plus a 24 MiB layer.
  docker([
    'run',
    '--name',
    `${name}-build`,
    BUSYBOX,
    'sh',
    '-c',
    'dd if=/dev/urandom of=/fat.bin bs=1M count=24 2>/dev/null',
  ]);
  docker(['commit', `${name}-build`, fat]);
  docker(['rm', `${name}-build`]);
  docker(['network', 'create', net]);
  docker([
    'run',
    '-d',
    '--name',
    name,
    '--network',
    net,
    '--network-alias',
    'svc',
    '-p',
    `127.0.0.1:${port}:8080`,
    '-e',
    'MODE=production',
    '--label',
    'team=ops',
    '--restart',
    'always',
    '--stop-timeout',
    '1',
    '-v',
    `${vol}:/data`,
    fat,
    'sh',
    '-c',
    'mkdir -p /data/www && exec httpd -f -p 8080 -h /data/www',
  ]);
  docker(['exec', name, 'sh', '-c', AWKWARD_DATA + '\necho changed > /etc/layer-change']);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol], networks: [net], images: [fat] });
  cleanup(ENGINE_B, { containers: [name], volumes: [vol], networks: [net] });
  for (const img of docker(['images', '-q', `ferry/${name}`], { host: ENGINE_B })
    .split('\n')
    .filter(Boolean))
    docker(['rmi', '-f', img], { host: ENGINE_B, allowFail: true });
  docker(['rmi', '-f', fat], { host: ENGINE_B, allowFail: true });
  rmSync(dir, { recursive: true, force: true });
});

describe('migrate over ssh', () => {
  it('refuses a wrong host key, and nothing reaches the target', async () => {
    const bad = sshHome(
      path.join(dir, 'bad'),
      '[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm1Qm9jZXJ0aWZpZWRrZXlub3R0aGVyZWFsb25lMTI\n',
    ).home;
    const r = await ferry(['migrate', name, '--to', 'ssh://newhost'], { env: { HOME: bad } });
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/host key of \[127\.0\.0\.1\]:2222 has CHANGED/);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(exists('container', name, ENGINE_B)).toBe(false);
    expect(exists('volume', vol, ENGINE_B)).toBe(false);
    expect(exists('network', net, ENGINE_B)).toBe(false);
    expect(inspect('container', name).State.Running).toBe(true); // the source is untouched
    expect(inspect('container', name).State.Paused).toBe(false);
  });

  it('an engine that cannot be reached, source or target: exit 4 naming it, nothing changed on either side', async () => {
    const t0 = Date.now();
    const src = await ferry(['-H', 'unix:///nonexistent/docker.sock', 'migrate', name, '--to', 'ssh://newhost'], {
      env: { HOME: home },
    });
    expect(src.code, src.stderr).toBe(4);
    expect(src.stderr).toMatch(/nonexistent\/docker\.sock/);
    expect(src.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const dst = await ferry(['migrate', name, '--to', 'unix:///nonexistent/docker.sock'], { env: { HOME: home } });
    expect(dst.code, dst.stderr).toBe(4);
    expect(dst.stderr).toMatch(/nonexistent\/docker\.sock/);
    expect(dst.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(exists('container', name, ENGINE_B)).toBe(false);
    expect(inspect('container', name).State.Running).toBe(true);
    expect(inspect('container', name).State.Paused).toBe(false);
  });

  it('refuses an unknown host key unless --ssh-accept-new, which records it', async () => {
    const { home: h, knownHostsFile } = sshHome(path.join(dir, 'new'), '');
    const r = await ferry(['-H', 'ssh://newhost', 'restore', '/nonexistent.tar'], { env: { HOME: h } });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/not in known_hosts/);
    const r2 = await ferry(['--ssh-accept-new', '-H', 'ssh://newhost', 'restore', '/nonexistent.tar'], {
      env: { HOME: h },
    });
    expect(r2.code).toBe(5); // connected; the bundle is what is missing
    const labLine = readFileSync('/var/lib/ferry-lab/ssh/known_hosts', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('[127.0.0.1]:2222 '));
    expect(readFileSync(knownHostsFile, 'utf8')).toBe(`${labLine}\n`);
  });

  it('moves the running service with its config and data, and stops the source for the cutover', async () => {
    const before = inspect('container', name);
    const listing = volumeListing(vol);
    const r = await ferry(['migrate', name, '--to', 'ssh://newhost', '--stop-source', '--json'], {
      env: { HOME: home },
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.imageBytes).toBeGreaterThan(24 << 20); // the fat layer had to travel
    const after = inspect('container', name, ENGINE_B);
    expect(after.State.Running).toBe(true);
    expect(inspect('container', name).State.Running).toBe(false); // --stop-source
    for (const k of ['Env', 'Labels', 'Cmd'] as const) expect(after.Config[k]).toEqual(before.Config[k]);
    for (const k of ['PortBindings', 'RestartPolicy', 'Binds', 'NetworkMode'] as const)
      expect(after.HostConfig[k]).toEqual(before.HostConfig[k]);
    expect(after.NetworkSettings.Networks[net].Aliases).toContain('svc');
    expect(volumeListing(vol, ENGINE_B)).toBe(listing);
    expect(docker(['exec', name, 'cat', '/etc/layer-change'], { host: ENGINE_B })).toBe('changed');
    // the service answers on the target (from inside: both engines share this machine's ports)
    expect(docker(['exec', name, 'wget', '-q', '-O', '-', 'http://127.0.0.1:8080/'], { host: ENGINE_B })).toContain(
      'ferry',
    );
  });

  it('a second migration sends little more than the new top layer', async () => {
    docker(['stop', '-t', '1', name], { host: ENGINE_B }); // frees the host port both engines share here
    docker(['start', name]);
    docker(['exec', name, 'sh', '-c', 'echo second > /data/second']);
    const r = await ferry(
      ['migrate', name, '--to', 'ssh://newhost', '--stop-source', '--on-conflict', 'replace', '--json'],
      { env: { HOME: home } },
    );
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.skippedLayers).toBeGreaterThanOrEqual(2);
    expect(res.imageBytes).toBeLessThan(2 << 20);
    expect(docker(['exec', name, 'cat', '/data/second'], { host: ENGINE_B })).toBe('second');
    expect(volumeListing(vol, ENGINE_B)).toBe(volumeListing(vol));
  });
});

describe('where the SSH server refuses socket forwarding', () => {
  // The lab's sshd on port 2223 is the same host with AllowStreamLocalForwarding no.
  it('falls back to `docker system dial-stdio` and migrates over it, data and all', async () => {
    const other = `${name}-ds`;
    const otherVol = `${other}-data`;
    try {
      docker([
        'run',
        '--rm',
        '-v',
        `${otherVol}:/data`,
        BUSYBOX,
        'sh',
        '-c',
        'dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null',
      ]);
      docker(['run', '-d', '--name', other, '-v', `${otherVol}:/data`, BUSYBOX, 'sleep', '3600']);
      const listing = volumeListing(otherVol);
      const r = await ferry(['migrate', other, '--to', 'ssh://nofwd', '--json'], { env: { HOME: home } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/socket forwarding refused .*using `docker system dial-stdio`/);
      expect(inspect('container', other, ENGINE_B).State.Running).toBe(true);
      expect(volumeListing(otherVol, ENGINE_B)).toBe(listing);
      expect(docker(['run', '--rm', '-v', `${otherVol}:/d`, BUSYBOX, 'sha256sum', '/d/blob'], { host: ENGINE_B })).toBe(
        docker(['run', '--rm', '-v', `${otherVol}:/d`, BUSYBOX, 'sha256sum', '/d/blob']),
      );
      // ...and the one connection carried every request: ls of the target's containers works the same way.
      const ls = await ferry(['-H', 'ssh://nofwd', 'restore', '/nonexistent.tar'], { env: { HOME: home } });
      expect(ls.code, ls.stderr).toBe(5);
    } finally {
      cleanup(ENGINE_A, { containers: [other], volumes: [otherVol] });
      cleanup(ENGINE_B, { containers: [other], volumes: [otherVol] });
      for (const img of docker(['images', '-q', `ferry/${other}`], { host: ENGINE_B })
        .split('\n')
        .filter(Boolean))
        docker(['rmi', '-f', img], { host: ENGINE_B, allowFail: true });
    }
  });
});

describe('the cutover (--stop-source)', () => {
  it('loses nothing: the source stops before its snapshot and stays stopped, so every write it took is on the target', async () => {
    const c = `${name}-cut`;
    try {
      // A writer that never stops appending (one line every 20 ms), and enough data that the
      // transfer takes a while: a source resumed after its snapshot would write on meanwhile.
      docker([
        'run',
        '-d',
        '--name',
        c,
        '--stop-timeout',
        '1',
        '-v',
        `${c}:/v`,
        BUSYBOX,
        'sh',
        '-c',
        'dd if=/dev/urandom of=/v/blob bs=1M count=64 2>/dev/null; i=0; while :; do i=$((i+1)); echo $i >> /v/log; sleep 0.02; done',
      ]);
      await waitFor(
        'the writer',
        () => docker(['exec', c, 'sh', '-c', 'wc -l < /v/log 2>/dev/null || echo 0']).trim() !== '0',
      );
      const r = await ferry(['migrate', c, '--to', ENGINE_B, '--stop-source', '--no-start', '--stop-timeout', '1']);
      expect(r.code, r.stderr).toBe(0);
      expect(inspect('container', c).State.Running).toBe(false);
      const last = (host: string) =>
        docker(['run', '--rm', '-v', `${c}:/v`, BUSYBOX, 'tail', '-n', '1', '/v/log'], { host });
      expect(Number(last(ENGINE_A))).toBeGreaterThan(0);
      expect(last(ENGINE_B)).toBe(last(ENGINE_A));
      // Stopped on purpose: a later run does not take it for one a killed ferry left stopped.
      const b = await ferry(['backup', c, '-o', path.join(dir, 'cut'), '--mkdir', '--compress', 'none']);
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr).not.toMatch(/left stopped|killed at/);
      expect(inspect('container', c).State.Running).toBe(false);
    } finally {
      cleanup(ENGINE_A, { containers: [c], volumes: [c] });
      cleanup(ENGINE_B, { containers: [c], volumes: [c] });
    }
  });
});
