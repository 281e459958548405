/**
 * What a container takes from the target's host when it starts: restore and migrate say what is
 * missing before anything changes, instead of writing every volume, failing at the start and
 * rolling it all back.
 *
 * Host ports: a service on engine A (busybox httpd on 127.0.0.1:<port>, a named volume, a user
 * network) is backed up; engine B then finds the port taken by one of its own running containers,
 * by a process on the host (this test, listening), and, for migrate, by the source itself (both
 * engines share this machine's ports). Devices: a container maps a device node that is gone from
 * the host when it is restored; another asks for GPUs, which no driver here gives. Runtimes and
 * drivers: a bundle edited to name a runtime and log, volume and network drivers engine B lacks.
 * Host settings: a bundle edited to pin CPUs this machine lacks, or to set a kernel setting it
 * does not have; and a container with CPU, memory, pids, ulimit and sysctl settings it has.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ENGINE_B, exists, ferry, freePort, inspect, uid } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-ports-'));
const name = uid('ports');
const vol = `${name}-data`;
const net = `${name}-net`;
const blocker = `${name}-blocker`;
let port = 0;
let bundle = '';

/** Nothing of the bundle on engine B. */
function untouched() {
  expect(exists('container', name, ENGINE_B)).toBe(false);
  expect(exists('volume', vol, ENGINE_B)).toBe(false);
  expect(exists('network', net, ENGINE_B)).toBe(false);
}

function listen(p: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(p, '127.0.0.1', () => resolve(s));
  });
}

beforeAll(async () => {
  port = await freePort();
  docker(['network', 'create', net]);
  docker([
    'run',
    '-d',
    '--name',
    name,
    // busybox httpd as PID 1 ignores SIGTERM: migrate --stop-source kills it after 1 s, not 10
    '--stop-timeout',
    '1',
    '--network',
    net,
    '-p',
    `127.0.0.1:${port}:80`,
    '-v',
    `${vol}:/www`,
    BUSYBOX,
    'httpd',
    '-f',
    '-p',
    '80',
    '-h',
    '/www',
  ]);
  docker(['exec', name, 'sh', '-c', 'echo "port page" > /www/index.html']);
  const r = await ferry(['--json', 'backup', name, '-o', dir]);
  expect(r.code, r.stderr).toBe(0);
  bundle = JSON.parse(r.stdout).bundle as string;
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol], networks: [net] });
  cleanup(ENGINE_B, { containers: [name, blocker], volumes: [vol], networks: [net] });
  for (const img of docker(['images', '-q', `ferry/${name}`], { host: ENGINE_B })
    .split('\n')
    .filter(Boolean))
    docker(['rmi', '-f', img], { host: ENGINE_B, allowFail: true });
  rmSync(dir, { recursive: true, force: true });
});

describe('restore onto a host whose port is taken', () => {
  it('by a running container there: refused with its name (exit 6), nothing changed; --on-conflict replace of that very container goes ahead', async () => {
    docker(['stop', '-t', '1', name]); // the port is engine B's to take now
    try {
      docker(['run', '-d', '--name', blocker, '-p', `127.0.0.1:${port}:80`, BUSYBOX, 'sleep', '3600'], {
        host: ENGINE_B,
      });
      const r = await ferry(['-H', ENGINE_B, 'restore', bundle]);
      expect(r.code, r.stderr).toBe(6);
      expect(r.stderr).toContain(
        `host ports already taken on ${ENGINE_B}: ${name}: 127.0.0.1:${port}/tcp (published by running container ${blocker})`,
      );
      expect(r.stderr).toMatch(/nothing was changed.*--map-port/);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      untouched();
      expect(inspect('container', blocker, ENGINE_B).State.Running).toBe(true);

      // The container that holds it is the one the restore replaces: then the port is free by the start.
      docker(['rm', '-f', blocker], { host: ENGINE_B });
      // (its sleep ignores SIGTERM: set aside after 1 s, not 10)
      const held = ['--stop-timeout', '1', '-p', `127.0.0.1:${port}:80`, BUSYBOX, 'sleep', '3600'];
      docker(['run', '-d', '--name', name, ...held], { host: ENGINE_B });
      const ok = await ferry(['-H', ENGINE_B, 'restore', bundle, '--on-conflict', 'replace']);
      expect(ok.code, ok.stderr).toBe(0);
      const c = inspect('container', name, ENGINE_B);
      expect(c.State.Running).toBe(true);
      expect(c.Config.Cmd).toEqual(['httpd', '-f', '-p', '80', '-h', '/www']);
      expect(c.NetworkSettings.Ports['80/tcp']).toEqual([{ HostIp: '127.0.0.1', HostPort: String(port) }]);
      expect(docker(['exec', name, 'wget', '-q', '-O', '-', 'http://127.0.0.1/'], { host: ENGINE_B })).toBe(
        'port page',
      );
    } finally {
      cleanup(ENGINE_B, { containers: [name, blocker], volumes: [vol], networks: [net] });
      docker(['start', name]);
    }
  });

  it('by a process outside any container, or on an address the host lacks: refused (exit 6), nothing changed; with --no-start created, with a warning', async () => {
    docker(['stop', '-t', '1', name]);
    const server = await listen(port);
    try {
      const r = await ferry(['-H', ENGINE_B, 'restore', bundle]);
      expect(r.code, r.stderr).toBe(6);
      expect(r.stderr).toContain(
        `${name}: 127.0.0.1:${port}/tcp (in use on the engine's host, outside any container of it)`,
      );
      untouched();
      // The helper that asked is gone too.
      expect(docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.role=holder'], { host: ENGINE_B })).toBe('');

      // An address this host does not have: not bindable either, and the engine's reason is given.
      const gone = await ferry([
        '-H',
        ENGINE_B,
        'restore',
        bundle,
        '--map-port',
        `127.0.0.1:${port}=192.0.2.1:${port}`,
      ]);
      expect(gone.code, gone.stderr).toBe(6);
      expect(gone.stderr).toContain(
        `${name}: 192.0.2.1:${port}/tcp (cannot be bound on the engine's host: listen tcp4 192.0.2.1:${port}: bind: cannot assign requested address)`,
      );
      untouched();

      const later = await ferry(['-H', ENGINE_B, 'restore', bundle, '--no-start']);
      expect(later.code, later.stderr).toBe(0);
      expect(later.stderr).toMatch(
        new RegExp(
          `warning: ${name}: host port taken .*127\\.0\\.0\\.1:${port}/tcp.*cannot start until the port is free`,
        ),
      );
      expect(inspect('container', name, ENGINE_B).State.Status).toBe('created');
    } finally {
      await new Promise((resolve) => server.close(resolve));
      cleanup(ENGINE_B, { containers: [name], volumes: [vol], networks: [net] });
      docker(['start', name]);
    }
  });
});

describe('restore of several containers, one port taken', () => {
  it('names just the container and port that cannot be had', async () => {
    const a = `${name}-a`;
    const b = `${name}-b`;
    const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
    try {
      docker(['run', '-d', '--name', a, '-p', `127.0.0.1:${pa}:80`, BUSYBOX, 'sleep', '3600']);
      docker([
        'run',
        '-d',
        '--name',
        b,
        '-p',
        `127.0.0.1:${pb}:80`,
        '-p',
        `127.0.0.1:${pc}:81`,
        BUSYBOX,
        'sleep',
        '3600',
      ]);
      const bk = await ferry(['--json', 'backup', a, b, '-o', dir]);
      expect(bk.code, bk.stderr).toBe(0);
      docker(['stop', '-t', '1', a, b]);
      const server = await listen(pb);
      try {
        const r = await ferry(['-H', ENGINE_B, 'restore', JSON.parse(bk.stdout).bundle as string]);
        expect(r.code, r.stderr).toBe(6);
        expect(r.stderr).toContain(
          `host ports already taken on ${ENGINE_B}: ${b}: 127.0.0.1:${pb}/tcp (in use on the engine's host, outside any container of it)\n`,
        );
        expect(exists('container', a, ENGINE_B)).toBe(false);
        expect(exists('container', b, ENGINE_B)).toBe(false);
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    } finally {
      cleanup(ENGINE_A, { containers: [a, b] });
      cleanup(ENGINE_B, { containers: [a, b] });
    }
  });
});

describe('migrate onto a host whose port is taken', () => {
  it('by the running source on the same machine: refused before the source is paused; with --stop-source a warning, and the service runs on the target', async () => {
    expect(inspect('container', name).State.Running).toBe(true);
    const r = await ferry(['migrate', name, '--to', ENGINE_B]);
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toContain(`${name}: 127.0.0.1:${port}/tcp (in use on the engine's host`);
    expect(r.stderr).not.toMatch(/pause|commit/);
    untouched();
    const src = inspect('container', name);
    expect(src.State.Running && !src.State.Paused).toBe(true);

    try {
      const cut = await ferry(['migrate', name, '--to', ENGINE_B, '--stop-source']);
      expect(cut.code, cut.stderr).toBe(0);
      expect(cut.stderr).toMatch(
        new RegExp(`host port 127\\.0\\.0\\.1:${port}/tcp is in use on the host of .*--stop-source frees it`),
      );
      expect(inspect('container', name).State.Running).toBe(false);
      expect(inspect('container', name, ENGINE_B).State.Running).toBe(true);
      expect(docker(['exec', name, 'wget', '-q', '-O', '-', 'http://127.0.0.1/'], { host: ENGINE_B })).toBe(
        'port page',
      );
    } finally {
      cleanup(ENGINE_B, { containers: [name], volumes: [vol], networks: [net] });
      docker(['start', name]);
    }
  });
});

describe('restore onto a host that lacks a device', () => {
  it('a device node that is gone: refused (exit 5) naming it, nothing changed; with --no-start a warning; once it is back, restored with it', async () => {
    const c = `${name}-dev`;
    const node = path.join(dir, 'fake-null');
    const mknod = () => expect(spawnSync('mknod', [node, 'c', '1', '3']).status).toBe(0);
    mknod();
    try {
      docker(['run', '-d', '--name', c, '--device', `${node}:/dev/mynull`, BUSYBOX, 'sleep', '3600']);
      const b = await ferry(['--json', 'backup', c, '-o', dir]);
      expect(b.code, b.stderr).toBe(0);
      const devBundle = JSON.parse(b.stdout).bundle as string;
      expect((await ferry(['inspect', devBundle])).stdout).toMatch(new RegExp(`devices +${node} -> /dev/mynull`));
      rmSync(node);

      // A device gives the container the host: an unsigned bundle restores it only with --allow devices.
      const refused = await ferry(['-H', ENGINE_B, 'restore', devBundle]);
      expect(refused.code, refused.stderr).toBe(12);
      expect(refused.stderr).toContain(`${c}: device ${node} -> /dev/mynull`);
      expect(exists('container', c, ENGINE_B)).toBe(false);

      const r = await ferry(['-H', ENGINE_B, 'restore', devBundle, '--allow', 'devices']);
      expect(r.code, r.stderr).toBe(5);
      expect(r.stderr).toContain(`devices missing on the host of ${ENGINE_B}: ${c}: ${node} (mapped to /dev/mynull)`);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      expect(exists('container', c, ENGINE_B)).toBe(false);
      expect(docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.role=holder'], { host: ENGINE_B })).toBe('');

      const later = await ferry(['-H', ENGINE_B, 'restore', devBundle, '--no-start', '--allow', 'devices']);
      expect(later.code, later.stderr).toBe(0);
      expect(later.stderr).toContain(
        `warning: ${c}: missing on the host of ${ENGINE_B}: ${node} (mapped to /dev/mynull); it cannot start until they are there`,
      );
      expect(inspect('container', c, ENGINE_B).State.Status).toBe('created');
      docker(['rm', '-f', c], { host: ENGINE_B });

      mknod();
      const ok = await ferry(['-H', ENGINE_B, 'restore', devBundle, '--allow', 'devices']);
      expect(ok.code, ok.stderr).toBe(0);
      expect(
        docker(['exec', c, 'sh', '-c', 'echo x > /dev/mynull && stat -c %t:%T /dev/mynull'], { host: ENGINE_B }),
      ).toBe('1:3');
    } finally {
      cleanup(ENGINE_A, { containers: [c] });
      cleanup(ENGINE_B, { containers: [c] });
      rmSync(node, { force: true });
    }
  });

  it('GPUs (--gpus) where no driver gives them: said up front for a container that is only created', async () => {
    const c = `${name}-gpu`;
    try {
      docker(['create', '--name', c, '--gpus', 'all', BUSYBOX, 'sleep', '3600']); // never started: no GPU here either
      const b = await ferry(['--json', 'backup', c, '-o', dir]);
      expect(b.code, b.stderr).toBe(0);
      const r = await ferry(['-H', ENGINE_B, 'restore', JSON.parse(b.stdout).bundle as string]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(
          `warning: ${c}: missing on the host of .*the devices it requests \\(--gpus\\): could not select device driver`,
        ),
      );
      expect(inspect('container', c, ENGINE_B).HostConfig.DeviceRequests).toEqual(
        inspect('container', c).HostConfig.DeviceRequests,
      );
    } finally {
      cleanup(ENGINE_A, { containers: [c] });
      cleanup(ENGINE_B, { containers: [c] });
    }
  });
});

describe('restore onto an engine without the runtime or drivers the bundle names', () => {
  it('is refused (exit 5) naming each, with what the engine has; nothing changed', async () => {
    // The bundle of the port service, its manifest edited as if made on a host with gVisor, a
    // Loki log plugin, a volume plugin and ipvlan-less Docker; plain tar puts it back together.
    const edited = editedBundle('drivers', (m) => {
      m.containers[0].spec.hostConfig.Runtime = 'ferry-test-runsc';
      m.containers[0].spec.hostConfig.LogConfig = { Type: 'ferry-test-loki', Config: {} };
      m.volumes[0].driver = 'ferry-test-volumes';
      m.networks[0].driver = 'ferry-test-net';
    });

    const r = await ferry(['-H', ENGINE_B, 'restore', edited]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toContain(`${ENGINE_B} lacks what this needs: ${name}: runtime ferry-test-runsc (here: `);
    expect(r.stderr).toMatch(/; [^;]*: log driver ferry-test-loki \(here: [^)]*json-file/);
    expect(r.stderr).toContain(`volume ${vol}: volume driver ferry-test-volumes (here: local)`);
    expect(r.stderr).toMatch(new RegExp(`network ${net}: network driver ferry-test-net \\(here: [^)]*bridge`));
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    untouched();
  });
});

/** The port service's bundle with its manifest edited by `edit`, put back together with plain tar. */
function editedBundle(label: string, edit: (m: any) => void): string {
  const x = path.join(dir, `edited-${label}`);
  mkdirSync(x);
  execFileSync('tar', ['-xf', bundle, '-C', x]);
  const m = JSON.parse(readFileSync(path.join(x, 'manifest.json'), 'utf8'));
  edit(m);
  writeFileSync(path.join(x, 'manifest.json'), JSON.stringify(m));
  const out = path.join(dir, `edited-${label}.tar`);
  execFileSync('tar', [
    '--format=ustar',
    '-cf',
    out,
    '-C',
    x,
    ...execFileSync('tar', ['-tf', bundle], { encoding: 'utf8' }).trim().split('\n'),
  ]);
  return out;
}

describe('restore onto a host that cannot give what the container is set up with', () => {
  const noHolders = () =>
    expect(docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.role=holder'], { host: ENGINE_B })).toBe('');

  it("CPUs it lacks: refused (exit 5) with the engine's words, before anything changes; also with --no-start", async () => {
    const free = String(await freePort()); // the service on engine A holds the bundle's port (one machine)
    const edited = editedBundle('cpus', (m) => {
      m.containers[0].spec.hostConfig.CpusetCpus = '63';
      m.containers[0].spec.hostConfig.PortBindings['80/tcp'][0].HostPort = free;
    });
    for (const extra of [[], ['--no-start']]) {
      const r = await ferry(['-H', ENGINE_B, 'restore', edited, ...extra]);
      expect(r.code, r.stderr).toBe(5);
      expect(r.stderr).toContain(
        `the host of ${ENGINE_B} cannot give what the containers are set up with: ${name}: cannot be created: `,
      );
      expect(r.stderr).toMatch(/Requested CPUs are not available - requested 63, available: 0-\d+/);
      expect(r.stderr).toMatch(/nothing was changed/);
      expect(r.stderr).not.toMatch(/create volume|rollback|at .*\.js:\d+/);
      untouched();
      noHolders();
    }
  });

  it('a kernel setting it does not have: refused (exit 5) when started; with --no-start created, with a warning', async () => {
    const free = String(await freePort());
    const edited = editedBundle('sysctl', (m) => {
      m.containers[0].spec.hostConfig.Sysctls = { 'net.ipv4.ferry_nonexistent': '1' };
      m.containers[0].spec.hostConfig.PortBindings['80/tcp'][0].HostPort = free;
    });
    const r = await ferry(['-H', ENGINE_B, 'restore', edited]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toContain(`${name}: cannot start: `);
    expect(r.stderr).toMatch(/ferry_nonexistent: no such file or directory/);
    expect(r.stderr).not.toMatch(/create volume|rollback/);
    untouched();
    noHolders();
    try {
      const created = await ferry(['-H', ENGINE_B, 'restore', edited, '--no-start']);
      expect(created.code, created.stderr).toBe(0);
      expect(created.stderr).toMatch(
        new RegExp(
          `warning: ${name} cannot start on ${ENGINE_B} as it is set up \\(.*ferry_nonexistent.*\\); it is created, not started`,
        ),
      );
      expect(inspect('container', name, ENGINE_B).State.Status).toBe('created');
      expect(inspect('container', name, ENGINE_B).HostConfig.Sysctls).toEqual({ 'net.ipv4.ferry_nonexistent': '1' });
    } finally {
      cleanup(ENGINE_B, { containers: [name], volumes: [vol], networks: [net] });
    }
  });

  it('settings the host has: migrated with every one of them, and it runs', async () => {
    const c = `${name}-res`;
    try {
      docker([
        'run',
        '-d',
        '--name',
        c,
        '--cpuset-cpus',
        '0',
        '--cpus',
        '0.5',
        '--memory',
        '64m',
        '--pids-limit',
        '50',
        '--ulimit',
        'nofile=1024:2048',
        '--sysctl',
        'net.ipv4.ip_unprivileged_port_start=80',
        '--oom-score-adj',
        '100',
        BUSYBOX,
        'sleep',
        '3600',
      ]);
      const r = await ferry(['migrate', c, '--to', ENGINE_B]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toMatch(/warning/);
      const a = inspect('container', c).HostConfig;
      const b = inspect('container', c, ENGINE_B);
      expect(b.State.Running).toBe(true);
      for (const k of ['CpusetCpus', 'NanoCpus', 'Memory', 'PidsLimit', 'Ulimits', 'Sysctls', 'OomScoreAdj'])
        expect(b.HostConfig[k], k).toEqual(a[k]);
      expect(
        docker(['exec', c, 'sh', '-c', 'ulimit -n; cat /proc/sys/net/ipv4/ip_unprivileged_port_start'], {
          host: ENGINE_B,
        }),
      ).toBe('1024\n80');
      noHolders();
    } finally {
      cleanup(ENGINE_A, { containers: [c] });
      cleanup(ENGINE_B, { containers: [c] });
      for (const img of docker(['images', '-q', `ferry/${c}`], { host: ENGINE_B })
        .split('\n')
        .filter(Boolean))
        docker(['rmi', '-f', img], { host: ENGINE_B, allowFail: true });
    }
  });
});
