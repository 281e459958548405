/**
 * The round trip of issue 2, against the real engine: a service with awkward volume data, env,
 * labels, a published port, a restart policy, a user network with alias and static IP, an
 * anonymous volume and a changed file in its layer. Back up, remove container + volumes +
 * network, restore, and compare `docker inspect` and a full listing of the volumes.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AWKWARD_DATA,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  exists,
  ferry,
  freePort,
  inspect,
  uid,
  volumeListing,
  waitFor,
} from '../helpers/lab.js';

// The shared awkward data, plus a dangling link, a third hard link, an empty file, another old
// mtime, an anonymous volume's content and a change in the container's own layer.
const AWKWARD = [
  AWKWARD_DATA,
  'ln -s does-not-exist dangling',
  'ln hard1 dir/hard3',
  ': > emptyfile',
  'touch -d "1999-12-31 23:59:59" dir/sub/random.bin',
  'echo anon-data > /anon/file && chmod 0750 /anon',
  'echo changed-in-layer > /etc/ferry-layer',
].join('\n');

describe('backup and restore on one engine', () => {
  const name = uid('rt');
  const vol = `${name}-data`;
  const net = `${name}-net`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-e2e-'));
  let port = 0;
  let before: any;
  let listingBefore = '';
  let anonBefore = '';
  let anonName = '';
  let bundle = '';

  beforeAll(async () => {
    port = await freePort();
    docker(['network', 'create', '--subnet', '172.30.77.0/24', '--label', 'ferry.test=1', net]);
    docker(['volume', 'create', '--label', 'ferry.test=vol', vol]);
    docker([
      'run',
      '-d',
      '--name',
      name,
      '--hostname',
      'myhost',
      '--network',
      net,
      '--network-alias',
      'alias1',
      '--ip',
      '172.30.77.10',
      '-p',
      `127.0.0.1:${port}:8080`,
      '-e',
      'PLAIN=1',
      '-e',
      'SPACED=a b c',
      '--label',
      'app=web',
      '--label',
      'tier=front',
      '--restart',
      'unless-stopped',
      '--cap-add',
      'NET_ADMIN',
      '--cap-drop',
      'MKNOD',
      '--ulimit',
      'nofile=1024:2048',
      '--tmpfs',
      '/run/t:size=1m',
      '--add-host',
      'foo.example:10.1.2.3',
      '--log-opt',
      'max-size=1m',
      '--memory',
      '64m',
      '--init',
      '--workdir',
      '/data',
      '--shm-size',
      '32m',
      '--stop-timeout',
      '7',
      '--health-cmd',
      'wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1',
      '--health-interval',
      '2s',
      '-v',
      `${vol}:/data`,
      '-v',
      '/anon',
      BUSYBOX,
      'sh',
      '-c',
      'mkdir -p /data/www && exec httpd -f -p 8080 -h /data/www',
    ]);
    docker(['exec', name, 'sh', '-c', AWKWARD]);
    await waitFor('the service to answer', async () => (await fetch(`http://127.0.0.1:${port}/`)).ok);
    before = inspect('container', name);
    anonName = before.Mounts.find((m: any) => m.Destination === '/anon').Name;
    listingBefore = volumeListing(vol);
    anonBefore = volumeListing(anonName);
  });

  afterAll(() => {
    cleanup(ENGINE_A, { containers: [name, `${name}-copy`], volumes: [vol, anonName], networks: [net] });
    rmSync(dir, { recursive: true, force: true });
  });

  it('backs up into a directory with a generated name, leaving the container running', async () => {
    const r = await ferry(['backup', name, '-o', dir, '--json']);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.ok).toBe(true);
    bundle = res.bundle;
    expect(path.dirname(bundle)).toBe(dir);
    expect(path.basename(bundle)).toMatch(new RegExp(`^ferry-${name}-\\d{8}T\\d{6}Z\\.tar$`));
    expect(readdirSync(dir)).toEqual([path.basename(bundle)]); // no temp file left
    const st = inspect('container', name).State;
    expect(st.Running).toBe(true);
    expect(st.Paused).toBe(false);
    // the committed snapshot is not left behind on the engine
    expect(docker(['images', '--format', '{{.Repository}}', `ferry/${name}`])).toBe('');
  });

  it('restores the same service after container, volumes and network are gone', async () => {
    cleanup(ENGINE_A, { containers: [name], volumes: [vol, anonName], networks: [net] });
    expect(exists('volume', vol)).toBe(false);
    expect(exists('network', net)).toBe(false);

    const r = await ferry(['restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    const after = inspect('container', name);
    expect(after.State.Running).toBe(true);

    // configuration
    const cfg = (c: any) => ({
      Env: c.Config.Env,
      Labels: c.Config.Labels,
      Hostname: c.Config.Hostname,
      WorkingDir: c.Config.WorkingDir,
      Cmd: c.Config.Cmd,
      Healthcheck: c.Config.Healthcheck,
      StopTimeout: c.Config.StopTimeout,
      ExposedPorts: c.Config.ExposedPorts,
      PortBindings: c.HostConfig.PortBindings,
      RestartPolicy: c.HostConfig.RestartPolicy,
      CapAdd: c.HostConfig.CapAdd,
      CapDrop: c.HostConfig.CapDrop,
      Ulimits: c.HostConfig.Ulimits,
      Tmpfs: c.HostConfig.Tmpfs,
      ExtraHosts: c.HostConfig.ExtraHosts,
      LogConfig: c.HostConfig.LogConfig,
      Memory: c.HostConfig.Memory,
      Init: c.HostConfig.Init,
      ShmSize: c.HostConfig.ShmSize,
      NetworkMode: c.HostConfig.NetworkMode,
      Binds: c.HostConfig.Binds,
      Ip: c.NetworkSettings.Networks[net]?.IPAMConfig?.IPv4Address,
      Aliases: (c.NetworkSettings.Networks[net]?.Aliases ?? []).filter((a: string) => a !== c.Id.slice(0, 12)),
    });
    expect(cfg(after)).toEqual(cfg(before));
    expect(after.Config.Env).toContain('SPACED=a b c');
    expect(after.NetworkSettings.Networks[net].IPAddress).toBe('172.30.77.10');

    // the network, with its subnet and labels
    const n = inspect('network', net);
    expect(n.IPAM.Config[0].Subnet).toBe('172.30.77.0/24');
    expect(n.Labels).toEqual({ 'ferry.test': '1' });
    expect(inspect('volume', vol).Labels).toEqual({ 'ferry.test': 'vol' });

    // the writable layer
    expect(docker(['exec', name, 'cat', '/etc/ferry-layer'])).toBe('changed-in-layer');

    // volume data, byte for byte, with owners, modes, links and mtimes
    expect(volumeListing(vol)).toBe(listingBefore);
    const newAnon = after.Mounts.find((m: any) => m.Destination === '/anon');
    expect(newAnon.Type).toBe('volume');
    expect(volumeListing(newAnon.Name)).toBe(anonBefore);
    anonName = newAnon.Name;

    // and the service answers again
    await waitFor('the restored service to answer', async () => (await fetch(`http://127.0.0.1:${port}/`)).ok);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toContain('ferry');
  });

  it('refuses to restore over an existing container or volume and changes nothing', async () => {
    const id = inspect('container', name).Id;
    const r = await ferry(['restore', bundle]);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/already on the engine: container .*, volume/);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(inspect('container', name).Id).toBe(id);
  });

  it('dry run: refuses the address the original holds, like the restore would; with --no-start prints the plan; touches nothing', async () => {
    const taken = await ferry(['restore', bundle, '--dry-run', '--name', `${name}-copy`, '--on-conflict', 'rename']);
    expect(taken.code, taken.stderr).toBe(6);
    expect(taken.stderr).toContain(
      `static addresses that cannot be had on ${ENGINE_A}: ${name}: 172.30.77.10 on ${net}, which container ${name} holds`,
    );
    const r = await ferry([
      'restore',
      bundle,
      '--dry-run',
      '--name',
      `${name}-copy`,
      '--on-conflict',
      'rename',
      '--no-start',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: .*host port taken/);
    expect(r.stdout).toMatch(/dry run/);
    expect(r.stdout).toContain(`create container ${name}-copy`);
    expect(r.stdout).toContain(`create volume ${vol}-restored`);
    expect(exists('container', `${name}-copy`)).toBe(false);
    expect(exists('volume', `${vol}-restored`)).toBe(false);
  });

  it('a restore refused up front (the address the original holds) creates nothing', async () => {
    const volsBefore = docker(['volume', 'ls', '-q']).split('\n').sort();
    const r = await ferry(['restore', bundle, '--name', `${name}-copy`, '--on-conflict', 'rename']);
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toContain(`${name}: 172.30.77.10 on ${net}, which container ${name} holds`);
    expect(r.stderr).toMatch(/nothing was changed/);
    expect(r.stderr).not.toMatch(/create volume|rollback/);
    expect(exists('container', `${name}-copy`)).toBe(false);
    expect(docker(['volume', 'ls', '-q']).split('\n').sort()).toEqual(volsBefore);
  });

  it('a failed restore removes everything it created (the container cannot start)', async () => {
    // A bundle edited to run as a user its image lacks (no preflight can know what an image
    // holds): the start fails after the volumes were made and filled, the image loaded and the
    // container created; the copy goes beside the original (--name, rename) on another address
    // and port. Everything the restore made must be gone again.
    const x = path.join(dir, 'edited');
    mkdirSync(x);
    execFileSync('tar', ['-xf', bundle, '-C', x]);
    const m = JSON.parse(readFileSync(path.join(x, 'manifest.json'), 'utf8'));
    const spec = m.containers[0].spec;
    spec.config.User = 'ferry-nobody-x';
    spec.endpoints[0].ipv4Address = '172.30.77.11';
    spec.hostConfig.PortBindings['8080/tcp'][0].HostPort = String(await freePort());
    writeFileSync(path.join(x, 'manifest.json'), JSON.stringify(m));
    const edited = path.join(dir, 'edited.tar');
    execFileSync('tar', [
      '--format=ustar',
      '-cf',
      edited,
      '-C',
      x,
      ...execFileSync('tar', ['-tf', bundle], { encoding: 'utf8' }).trim().split('\n'),
    ]);

    const volsBefore = docker(['volume', 'ls', '-q']).split('\n').sort();
    const imagesBefore = docker(['images', '-q']).split('\n').sort();
    const r = await ferry(['restore', edited, '--name', `${name}-copy`, '--on-conflict', 'rename']);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/unable to find user ferry-nobody-x/);
    expect(r.stderr).toMatch(/fill volume/);
    expect(r.stderr).toMatch(/create container /);
    expect(r.stderr).toMatch(/rollback: remove container/);
    expect(r.stderr).toMatch(/rollback: remove volume/);
    expect(exists('container', `${name}-copy`)).toBe(false);
    expect(docker(['volume', 'ls', '-q']).split('\n').sort()).toEqual(volsBefore);
    expect(docker(['images', '-q']).split('\n').sort()).toEqual(imagesBefore);
    expect(inspect('container', name).State.Running).toBe(true);
  });
});
