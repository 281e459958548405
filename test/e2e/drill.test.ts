/**
 * ferry drill against the real engine: a small service (busybox httpd serving a file from a named
 * volume, on a user network with a fixed subnet and a static IP, a port published on 127.0.0.1,
 * restart unless-stopped) is backed up while it runs, then drilled on the same engine next to it.
 * A drill that passes, one whose probe fails, one whose copy exits (its writable bind mount is
 * read-only in a drill), one interrupted by SIGTERM during a hanging probe, and healthcheck-defined
 * services (healthy, and unhealthy because the data their health depends on is not in the bundle). After each: the original is untouched and nothing of the drill is left.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BIN,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  exists,
  ferry,
  ferryEnv,
  freePort,
  inspect,
  sh,
  uid,
  waitFor,
} from '../helpers/lab.js';

const PROBE = 'wget -q -O - http://127.0.0.1:8080/ | grep expected-content';

/** Everything labelled io.ferry.drill on the engine, by kind. */
function drillObjects(): { containers: string; volumes: string; networks: string } {
  return {
    containers: docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.drill']),
    volumes: docker(['volume', 'ls', '-q', '--filter', 'label=io.ferry.drill']),
    networks: docker(['network', 'ls', '-q', '--filter', 'label=io.ferry.drill']),
  };
}
const NOTHING = { containers: '', volumes: '', networks: '' };

/** The id of the image a bundle holds (from its trailer). */
function bundleImageId(bundle: string): string {
  const r = sh(`tar -xOf '${bundle}' trailer.json`);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).images[0].id as string;
}

async function backup(name: string, dir: string): Promise<string> {
  const r = await ferry(['--json', 'backup', name, '-o', dir]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).bundle as string;
}

describe('ferry drill', () => {
  const name = uid('drill');
  const vol = `${name}-www`;
  const net = `${name}-net`;
  const octet = 100 + Math.floor(Math.random() * 100);
  const subnet = `172.30.${octet}.0/24`;
  const ip = `172.30.${octet}.10`;
  const hc = `${name}-hc`;
  const sick = `${name}-sick`;
  const binder = `${name}-bind`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-drill-'));
  let port = 0;
  let bundle = '';
  let imageId = '';
  let original: any;

  const untouched = async () => {
    const now = inspect('container', name);
    expect(now.Id).toBe(original.Id);
    expect(now.State.Running).toBe(true);
    expect(now.State.StartedAt).toBe(original.State.StartedAt);
    expect(now.RestartCount).toBe(original.RestartCount);
    expect(now.NetworkSettings.Networks[net].IPAddress).toBe(ip);
    expect(inspect('network', net).IPAM.Config[0].Subnet).toBe(subnet);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toContain('expected-content');
  };

  const nothingLeft = () => {
    expect(drillObjects()).toEqual(NOTHING);
    expect(exists('image', imageId)).toBe(false);
    expect(docker(['images', '-q', `ferry/${name}`])).toBe('');
  };

  beforeAll(async () => {
    port = await freePort();
    docker(['network', 'create', '--subnet', subnet, net]);
    docker(['volume', 'create', vol]);
    docker([
      'run',
      '-d',
      '--name',
      name,
      '--network',
      net,
      '--ip',
      ip,
      '-p',
      `127.0.0.1:${port}:8080`,
      '--restart',
      'unless-stopped',
      '-v',
      `${vol}:/www`,
      BUSYBOX,
      'httpd',
      '-f',
      '-p',
      '8080',
      '-h',
      '/www',
    ]);
    docker(['exec', name, 'sh', '-c', 'echo expected-content > /www/index.html']);
    await waitFor('the service to answer', async () => (await fetch(`http://127.0.0.1:${port}/`)).ok);
    bundle = await backup(name, dir);
    imageId = bundleImageId(bundle);
    original = inspect('container', name);
    expect(original.State.Running).toBe(true); // backed up while it kept running
  });

  afterAll(() => {
    cleanup(ENGINE_A, { containers: [name, hc, sick], volumes: [vol], networks: [net] });
    // a failed test must not leave drill copies behind for the next run
    const left = drillObjects();
    for (const c of left.containers.split('\n').filter(Boolean)) docker(['rm', '-f', '-v', c], { allowFail: true });
    for (const v of left.volumes.split('\n').filter(Boolean)) docker(['volume', 'rm', '-f', v], { allowFail: true });
    for (const n of left.networks.split('\n').filter(Boolean)) docker(['network', 'rm', n], { allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it('restores a copy next to the running original, probes it, and removes everything', async () => {
    expect(drillObjects()).toEqual(NOTHING);
    expect(exists('image', imageId)).toBe(false); // the backup left no snapshot: the drill loads it

    // The probe waits a little first, so that the copy can be looked at while it runs.
    const running = ferry(['--json', 'drill', bundle, '--probe', `sleep 4; ${PROBE}`, '--timeout', '60']);
    await waitFor(
      'the drill copy to run',
      () => docker(['ps', '-q', '--filter', 'label=io.ferry.drill']) !== '',
      30_000,
    );
    const copy = inspect('container', docker(['ps', '-q', '--filter', 'label=io.ferry.drill']));
    const id = copy.Config.Labels['io.ferry.drill'] as string;
    expect(id).toMatch(/^[0-9a-f]{6}$/);
    expect(copy.Name).toBe(`/ferry-drill-${id}-${name}`);
    expect(copy.Id).not.toBe(original.Id);
    expect(copy.HostConfig.RestartPolicy.Name).toBe('no');
    expect(copy.HostConfig.PortBindings).toEqual({ '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }] });
    const copyPort = copy.NetworkSettings.Ports['8080/tcp'][0].HostPort as string;
    expect(copyPort).not.toBe(String(port));
    expect(Object.keys(copy.NetworkSettings.Networks)).toEqual([`ferry-drill-${id}-${net}`]);
    expect(copy.NetworkSettings.Networks[`ferry-drill-${id}-${net}`].IPAddress).not.toBe(ip);
    const copyNet = inspect('network', `ferry-drill-${id}-${net}`);
    expect(copyNet.Labels).toEqual({ 'io.ferry.drill': id });
    expect(copyNet.IPAM.Config[0]?.Subnet).not.toBe(subnet);
    expect(inspect('volume', `ferry-drill-${id}-${vol}`).Labels).toEqual({ 'io.ferry.drill': id });
    expect(copy.Mounts.map((m: any) => m.Name)).toEqual([`ferry-drill-${id}-${vol}`]);
    expect(exists('image', imageId)).toBe(true);
    // the copy serves the backed-up data on its own port, next to the original
    expect(await (await fetch(`http://127.0.0.1:${copyPort}/`)).text()).toContain('expected-content');

    const r = await running;
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res).toMatchObject({ ok: true, id, engine: ENGINE_A, bundle, leftovers: [] });
    expect(res.containers).toEqual([name]);
    expect(res.results).toEqual([
      {
        container: name,
        drillName: `ferry-drill-${id}-${name}`,
        id: copy.Id,
        started: true,
        status: 'running',
        ports: [{ hostIp: '127.0.0.1', hostPort: String(copyPort), containerPort: '8080/tcp' }],
      },
    ]);
    expect(res.probe).toMatchObject({
      command: `sleep 4; ${PROBE}`,
      container: name,
      exitCode: 0,
      attempts: 1,
      truncated: false,
    });
    expect(res.probe.output).toContain('expected-content');
    for (const k of ['restoreMs', 'startMs', 'healthyMs', 'probeMs', 'cleanupMs', 'totalMs'])
      expect(res.timings[k]).toBeTypeOf('number');
    expect(res.timings.probeMs).toBeGreaterThanOrEqual(4000);
    expect(res.timings.totalMs).toBeGreaterThanOrEqual(res.timings.restoreMs + res.timings.probeMs);
    expect(res.notes).toContain(`${name}: static address ${ip} on ${net} dropped (it belongs to the original)`);

    await untouched();
    nothingLeft();
  });

  it('fails with exit 9 when the probe fails, and leaves nothing behind', async () => {
    const r = await ferry([
      'drill',
      bundle,
      '--probe',
      'wget -q -O - http://127.0.0.1:8080/ | grep unexpected-content',
      '--timeout',
      '3',
    ]);
    expect(r.code, r.stderr).toBe(9);
    expect(r.stdout).toMatch(
      /^drill [0-9a-f]{6} of .*: FAIL: the probe did not pass within 3s \(\d+ attempts?; the last attempt exited with 1\)/,
    );
    expect(r.stdout).toMatch(/probe in .*: exit 1/);
    expect(r.stdout).toContain('everything the drill made was removed');
    expect(r.stderr).toMatch(/ferry: error: the probe did not pass/);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    await untouched();
    nothingLeft();
  });

  it("never writes to the original's host path: a writable bind is read-only (the copy exits: 9), or a drill volume with its data", async () => {
    // The service appends to a bind-mounted host directory at start; the drill mounts that
    // directory read-only (the bundle has no copy of it), so the copy exits at once.
    const hostDir = mkdtempSync(path.join(tmpdir(), 'ferry-drill-bind-'));
    try {
      docker([
        'run',
        '-d',
        '--name',
        binder,
        '-v',
        `${hostDir}:/data`,
        BUSYBOX,
        'sh',
        '-c',
        'echo started >> /data/log && exec sleep 100000',
      ]);
      await waitFor('the service to write its log', () => existsSync(path.join(hostDir, 'log')));
      const b = await backup(binder, dir);
      const img = bundleImageId(b);
      const r = await ferry(['--json', 'drill', b, '--timeout', '20']);
      expect(r.code, r.stderr).toBe(9);
      const res = JSON.parse(r.stdout);
      expect(res.ok).toBe(false);
      expect(res.error).toMatchObject({ code: 'DRILL_FAILED', exitCode: 9 });
      expect(res.error.message).toMatch(new RegExp(`^${binder} exited with code [1-9]`));
      expect(res.results[0]).toMatchObject({ container: binder, status: 'exited' });
      expect(res.results[0].logs).toMatch(/Read-only file system/);
      expect(res.notes).toContain(`${binder}: bind ${hostDir} -> /data is the original's host path: mounted read-only`);
      expect(readFileSync(path.join(hostDir, 'log'), 'utf8')).toBe('started\n');
      expect(drillObjects()).toEqual(NOTHING);
      expect(exists('image', img)).toBe(false);
      expect(inspect('container', binder).State.Running).toBe(true);

      // With the bind's data in the bundle, the copy gets it in a drill volume it may write to.
      const r2 = await ferry(['--json', 'backup', binder, '-o', dir, '--include-binds']);
      expect(r2.code, r2.stderr).toBe(0);
      const d = await ferry([
        '--json',
        'drill',
        JSON.parse(r2.stdout).bundle,
        '--probe',
        'grep -c started /data/log | grep -x 2',
        '--timeout',
        '20',
      ]);
      expect(d.code, d.stderr).toBe(0);
      const res2 = JSON.parse(d.stdout);
      expect(res2.notes).toContain(
        `${binder}: bind ${hostDir} -> /data is restored from the bundle into volume ferry-drill-${res2.id}-${binder}-bind_data`,
      );
      expect(readFileSync(path.join(hostDir, 'log'), 'utf8')).toBe('started\n');
      expect(drillObjects()).toEqual(NOTHING);
    } finally {
      cleanup(ENGINE_A, { containers: [binder] });
      rmSync(hostDir, { recursive: true, force: true });
    }
  });

  it('SIGTERM during a hanging probe removes everything and exits 143', async () => {
    const env = ferryEnv();
    const child = spawn(BIN, ['drill', bundle, '--probe', 'sleep 300', '--timeout', '120'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const code = await new Promise<number | null>((resolve) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        if (/probe .*sleep 300/.test(stderr) && !child.killed) setTimeout(() => child.kill('SIGTERM'), 500);
      });
      child.on('close', resolve);
    });
    expect(code, stderr).toBe(143);
    expect(stderr).toMatch(/SIGTERM received/);
    expect(stdout).toMatch(/FAIL: interrupted by SIGTERM/);
    await untouched();
    nothingLeft();
  });

  it('passes on a healthcheck-defined service once it is healthy', async () => {
    docker([
      'run',
      '-d',
      '--name',
      hc,
      '--restart',
      'unless-stopped',
      '--health-cmd',
      'wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1',
      '--health-interval',
      '1s',
      '--health-retries',
      '3',
      BUSYBOX,
      'sh',
      '-c',
      'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www',
    ]);
    await waitFor('the service to be healthy', () => inspect('container', hc).State.Health?.Status === 'healthy');
    const b = await backup(hc, dir);
    const img = bundleImageId(b);
    const r = await ferry(['--json', 'drill', b, '--timeout', '60']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.ok).toBe(true);
    expect(res.results[0].status).toBe('healthy'); // waited for the healthcheck, not just "running"
    expect(res.probe).toBeNull();
    expect(r.stderr).toMatch(/wait for the healthchecks/);
    expect(drillObjects()).toEqual(NOTHING);
    expect(exists('image', img)).toBe(false);
    expect(inspect('container', hc).State.Running).toBe(true);
  });

  it('fails on a service that comes back unhealthy (its health depends on data the bundle lacks)', async () => {
    // The health file lives on a tmpfs: the original is healthy, the bundle cannot bring it back.
    docker([
      'run',
      '-d',
      '--name',
      sick,
      '--tmpfs',
      '/run/state',
      '--health-cmd',
      'test -e /run/state/ready',
      '--health-interval',
      '1s',
      '--health-retries',
      '2',
      BUSYBOX,
      'sleep',
      '100000',
    ]);
    docker(['exec', sick, 'touch', '/run/state/ready']);
    await waitFor('the service to be healthy', () => inspect('container', sick).State.Health?.Status === 'healthy');
    const b = await backup(sick, dir);
    const img = bundleImageId(b);
    const r = await ferry(['drill', b, '--timeout', '60']);
    expect(r.code, r.stderr).toBe(9);
    expect(r.stdout).toMatch(new RegExp(`FAIL: ${sick} is unhealthy: its healthcheck exited with 1`));
    expect(drillObjects()).toEqual(NOTHING);
    expect(exists('image', img)).toBe(false);
    expect(inspect('container', sick).State.Health.Status).toBe('healthy');
  });
});
