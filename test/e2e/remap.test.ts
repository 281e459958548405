/**
 * Restoring onto a host laid out differently (--map-volume, --map-bind, --map-port,
 * --map-network): a service on engine A (busybox httpd serving a page from a named volume, a
 * config file from a bind mount, a port published on 127.0.0.1, a user network) is backed up with
 * its bind data and restored on engine B under the new names, paths and port. The result is
 * checked with docker inspect, the data, and a request to the new port.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  exists,
  ferry,
  freePort,
  inspect,
  uid,
  waitFor,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-remap-'));
const name = uid('remap');
const vol = `${name}-data`;
const net = `${name}-net`;
const oldConf = path.join(dir, 'old', 'conf');
const oldLogs = path.join(dir, 'old', 'logs');
const newRoot = path.join(dir, 'new');
let oldPort = 0;
let bundle = '';

beforeAll(async () => {
  mkdirSync(oldConf, { recursive: true });
  mkdirSync(oldLogs, { recursive: true });
  writeFileSync(path.join(oldConf, 'site.conf'), 'greeting=from the old host\n');
  oldPort = await freePort();
  docker(['network', 'create', net]);
  docker([
    'run',
    '-d',
    '--name',
    name,
    '--network',
    net,
    '--network-alias',
    'web',
    '-p',
    `127.0.0.1:${oldPort}:80`,
    '-v',
    `${vol}:/www`,
    '-v',
    `${oldConf}:/conf:ro`,
    '--mount',
    `type=bind,src=${oldLogs},dst=/logs`,
    BUSYBOX,
    'httpd',
    '-f',
    '-p',
    '80',
    '-h',
    '/www',
  ]);
  docker(['exec', name, 'sh', '-c', 'echo "remapped page" > /www/index.html']);
  const r = await ferry(['--json', 'backup', name, '-o', dir, '--include-binds']);
  expect(r.code, r.stderr).toBe(0);
  bundle = JSON.parse(r.stdout).bundle as string;
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol], networks: [net] });
  cleanup(ENGINE_B, {
    containers: [name],
    volumes: [`${name}-moved`, `${name}-moved2`, vol],
    networks: [`${name}-prod`, `${name}-prod2`, net],
  });
  rmSync(dir, { recursive: true, force: true });
});

describe('restore with --map-*', () => {
  it('refuses a mapping that matches nothing, naming what the bundle has, and changes nothing', async () => {
    const r = await ferry(['-H', ENGINE_B, 'restore', bundle, '--map-volume', `${name}_data=x`, '--map-port', '9=10']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`there is no named volume ${name}_data \\(there are: ${vol}\\)`));
    expect(r.stderr).toMatch(
      new RegExp(`no container publishes host port 9 \\(published: 127\\.0\\.0\\.1:${oldPort}\\)`),
    );
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(exists('container', name, ENGINE_B)).toBe(false);
    expect(exists('volume', 'x', ENGINE_B)).toBe(false);
  });

  it('refuses a malformed mapping before reading the bundle', async () => {
    const r = await ferry(['-H', ENGINE_B, 'restore', path.join(dir, 'no-such.tar'), '--map-bind', 'relative=/x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--map-bind relative=\/x: relative is not an absolute path/);
  });

  it('restores on the new host under the new volume name, host path, port and network', async () => {
    const newPort = await freePort();
    const maps = [
      '--map-volume',
      `${vol}=${name}-moved`,
      '--map-bind',
      `${path.join(dir, 'old')}=${newRoot}`,
      '--map-port',
      `127.0.0.1:${oldPort}=127.0.0.1:${newPort}`,
      '--map-network',
      `${net}=${name}-prod`,
    ];
    const dry = await ferry(['-H', ENGINE_B, 'restore', bundle, '--dry-run', '--restore-binds', ...maps]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`create network ${name}-prod`));
    expect(dry.stdout).toMatch(new RegExp(`create volume ${name}-moved \\(from ${vol}\\)`));
    expect(dry.stdout).toMatch(new RegExp(`publishing 127\\.0\\.0\\.1:${newPort} -> 80/tcp`));
    expect(dry.stdout).toMatch(new RegExp(`write bind data for ${path.join(newRoot, 'conf')}`));
    expect(exists('volume', `${name}-moved`, ENGINE_B)).toBe(false);

    const r = await ferry(['-H', ENGINE_B, 'restore', bundle, '--restore-binds', ...maps]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`map volume ${vol} -> ${name}-moved`));

    const c = inspect('container', name, ENGINE_B);
    expect(c.State.Running).toBe(true);
    const mounts = Object.fromEntries(
      (c.Mounts as { Destination: string; Name?: string; Source: string; Type: string }[]).map((m) => [
        m.Destination,
        m,
      ]),
    );
    expect(mounts['/www']).toMatchObject({ Type: 'volume', Name: `${name}-moved` });
    expect(mounts['/conf']).toMatchObject({ Type: 'bind', Source: path.join(newRoot, 'conf') });
    expect(mounts['/logs']).toMatchObject({ Type: 'bind', Source: path.join(newRoot, 'logs') });
    expect(c.HostConfig.PortBindings).toEqual({ '80/tcp': [{ HostIp: '127.0.0.1', HostPort: String(newPort) }] });
    expect(Object.keys(c.NetworkSettings.Networks)).toEqual([`${name}-prod`]);
    expect(c.NetworkSettings.Networks[`${name}-prod`].Aliases).toContain('web');

    // The data: the volume under its new name, the bind data at its new path, nothing at the old names.
    expect(readFileSync(path.join(newRoot, 'conf', 'site.conf'), 'utf8')).toBe('greeting=from the old host\n');
    expect(docker(['exec', name, 'cat', '/conf/site.conf'], { host: ENGINE_B })).toBe('greeting=from the old host');
    expect(exists('volume', vol, ENGINE_B)).toBe(false);
    expect(exists('network', net, ENGINE_B)).toBe(false);
    expect(existsSync(path.join(dir, 'old', 'conf', 'site.conf'))).toBe(true); // the source's own path, untouched

    // And the service answers on the new port.
    let page = '';
    await waitFor(`the restored service on 127.0.0.1:${newPort}`, async () => {
      page = await fetch(`http://127.0.0.1:${newPort}/`).then((res) => res.text());
      return true;
    });
    expect(page).toBe('remapped page\n');
  });
});

describe('bind mount sources missing on the target', () => {
  it('warns for a -v bind (the engine would create it empty) and refuses a --mount bind, before anything changes', async () => {
    const nowhere = path.join(dir, 'nowhere');
    const r = await ferry([
      '-H',
      ENGINE_B,
      'restore',
      bundle,
      '--name',
      `${name}-nowhere`,
      '--on-conflict',
      'rename',
      '--map-bind',
      `${path.join(dir, 'old')}=${nowhere}`,
      '--map-volume',
      `${vol}=${name}-nowhere`,
    ]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(
      new RegExp(
        `bind mount source ${path.join(nowhere, 'conf')} \\(at /conf\\) does not exist on ${ENGINE_B}; the engine will create it as an empty directory.*--restore-binds`,
      ),
    );
    expect(r.stderr).toMatch(
      new RegExp(
        `bind mount sources missing on ${ENGINE_B}: ${name}: ${path.join(nowhere, 'logs')} \\(mounted at /logs\\)`,
      ),
    );
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(exists('container', `${name}-nowhere`, ENGINE_B)).toBe(false);
    expect(exists('volume', `${name}-nowhere`, ENGINE_B)).toBe(false);
    expect(existsSync(nowhere)).toBe(false);
  });

  it('--restore-binds writes them, so nothing is missing', async () => {
    const elsewhere = path.join(dir, 'elsewhere');
    // (another port: the original on engine A holds its own on this machine that both engines share)
    const r = await ferry([
      '-H',
      ENGINE_B,
      'restore',
      bundle,
      '--dry-run',
      '--restore-binds',
      '--on-conflict',
      'rename',
      '--map-bind',
      `${path.join(dir, 'old')}=${elsewhere}`,
      '--map-port',
      `${oldPort}=${await freePort()}`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/does not exist|missing/);
    expect(r.stdout).toMatch(new RegExp(`write bind data for ${path.join(elsewhere, 'logs')}`));
  });
});

describe('migrate with --map-*', () => {
  it('creates the service on the target under the new names, path, port and network, with its data', async () => {
    cleanup(ENGINE_B, { containers: [name], volumes: [`${name}-moved`], networks: [`${name}-prod`] }); // what the restore above made
    const newConf = path.join(dir, 'migrated', 'conf');
    mkdirSync(newConf, { recursive: true });
    writeFileSync(path.join(newConf, 'site.conf'), 'greeting=prepared on the new host\n');
    const newPort = await freePort();
    const r = await ferry([
      'migrate',
      name,
      '--to',
      ENGINE_B,
      '--map-volume',
      `${vol}=${name}-moved2`,
      '--map-bind',
      `${oldConf}=${newConf}`,
      '--map-port',
      `${oldPort}=${newPort}`,
      '--map-network',
      `${net}=${name}-prod2`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const c = inspect('container', name, ENGINE_B);
    expect(c.State.Running).toBe(true);
    const mounts = Object.fromEntries(
      (c.Mounts as { Destination: string; Name?: string; Source: string; Type: string }[]).map((m) => [
        m.Destination,
        m,
      ]),
    );
    expect(mounts['/www']).toMatchObject({ Type: 'volume', Name: `${name}-moved2` });
    expect(mounts['/conf']).toMatchObject({ Type: 'bind', Source: newConf });
    expect(c.HostConfig.PortBindings).toEqual({ '80/tcp': [{ HostIp: '127.0.0.1', HostPort: String(newPort) }] });
    expect(Object.keys(c.NetworkSettings.Networks)).toEqual([`${name}-prod2`]);
    expect(docker(['exec', name, 'cat', '/conf/site.conf'], { host: ENGINE_B })).toBe(
      'greeting=prepared on the new host',
    );
    expect(exists('volume', vol, ENGINE_B)).toBe(false);
    expect(exists('network', net, ENGINE_B)).toBe(false);
    let page = '';
    await waitFor(`the migrated service on 127.0.0.1:${newPort}`, async () => {
      page = await fetch(`http://127.0.0.1:${newPort}/`).then((res) => res.text());
      return true;
    });
    expect(page).toBe('remapped page\n');
    expect(inspect('container', name).State.Running).toBe(true); // a copy: the source runs on
  });

  it('refuses a mapping that matches nothing before touching either engine', async () => {
    const r = await ferry(['migrate', name, '--to', ENGINE_B, '--on-conflict', 'rename', '--map-network', 'nonet=x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`there is no user-defined network nonet \\(there are: ${net}\\)`));
    expect(inspect('container', name).State.Paused).toBe(false);
    expect(exists('network', 'x', ENGINE_B)).toBe(false);
  });
});

describe('a drill where the bind paths are gone (a spare host)', () => {
  it('restores bind data that is in the bundle into volumes, and neither warns nor refuses for it', async () => {
    docker(['rm', '-f', name]); // the original's paths go away, as on another host
    rmSync(path.join(dir, 'old'), { recursive: true, force: true });
    const r = await ferry([
      '-H',
      ENGINE_B,
      'drill',
      bundle,
      '--timeout',
      '60',
      '--probe',
      'grep -q "from the old host" /conf/site.conf',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/does not exist|missing/);
    expect(existsSync(path.join(dir, 'old'))).toBe(false); // a drill never writes host paths
  });
});

describe('a restored service that does not come back', () => {
  it('is reported with its exit code and last log lines, not as running', async () => {
    const svc = uid('needsconf');
    const conf = path.join(dir, 'svc-conf');
    mkdirSync(conf, { recursive: true });
    writeFileSync(path.join(conf, 'app.conf'), 'ok\n');
    docker([
      'run',
      '-d',
      '--name',
      svc,
      '-v',
      `${conf}:/conf`,
      BUSYBOX,
      'sh',
      '-c',
      'test -f /conf/app.conf || { echo "no /conf/app.conf, giving up" >&2; exit 3; }; sleep 100000',
    ]);
    try {
      const store = path.join(dir, 'svc');
      const b = await ferry(['--json', 'backup', svc, '-o', store, '--mkdir']);
      expect(b.code, b.stderr).toBe(0);
      // On the new host the config directory is elsewhere and was not put in place.
      const r = await ferry([
        '-H',
        ENGINE_B,
        'restore',
        JSON.parse(b.stdout).bundle,
        '--map-bind',
        `${conf}=${path.join(dir, 'svc-conf-missing')}`,
      ]);
      expect(r.code, r.stderr).toBe(0); // the data and settings are restored
      expect(r.stderr).toMatch(/does not exist on .*; the engine will create it as an empty directory/);
      expect(r.stderr).toMatch(
        new RegExp(
          `warning: ${svc} stopped right after its start \\(exit code 3\\)[\\s\\S]*no /conf/app.conf, giving up`,
        ),
      );
      expect(r.stdout).toMatch(new RegExp(`restored ${svc} \\([0-9a-f]{12}\\), started but exited \\(code 3\\)`));
    } finally {
      cleanup(ENGINE_A, { containers: [svc] });
      cleanup(ENGINE_B, { containers: [svc] });
    }
  });
});

describe('a static address that does not fit a network already on the target', () => {
  it('is refused before anything changes (exit 6), naming the address, the network and its subnet here', async () => {
    const svc = uid('static');
    const snet = `${svc}-net`;
    docker(['network', 'create', '--subnet', '172.31.250.0/24', snet]);
    docker(['network', 'create', '--subnet', '172.31.251.0/24', snet], { host: ENGINE_B });
    docker(['run', '-d', '--name', svc, '--network', snet, '--ip', '172.31.250.10', BUSYBOX, 'sleep', '100000']);
    try {
      const store = path.join(dir, 'static');
      const b = await ferry(['--json', 'backup', svc, '-o', store, '--mkdir']);
      expect(b.code, b.stderr).toBe(0);
      const r = await ferry(['-H', ENGINE_B, 'restore', JSON.parse(b.stdout).bundle]);
      expect(r.code, r.stderr).toBe(6);
      expect(r.stderr).toMatch(
        new RegExp(`${svc}: 172\\.31\\.250\\.10 on ${snet} \\(its subnet here: 172\\.31\\.251\\.0/24\\)`),
      );
      expect(r.stderr).toMatch(/nothing was changed; restore onto another network with --map-network/);
      expect(exists('container', svc, ENGINE_B)).toBe(false);
      expect(docker(['images', '-q', `ferry/${svc}`], { host: ENGINE_B })).toBe('');
    } finally {
      cleanup(ENGINE_A, { containers: [svc], networks: [snet] });
      cleanup(ENGINE_B, { containers: [svc], networks: [snet] });
    }
  });
});

describe('a network whose subnet is taken on the target (a copy beside the original under --map-network)', () => {
  it('is created with a subnet the engine picks when no container has a fixed address on it; with one, refused up front (exit 6)', async () => {
    const svc = uid('subnet');
    const snet = `${svc}-net`;
    const SUBNET = '172.31.252.0/24';
    docker(['network', 'create', '--subnet', SUBNET, snet]);
    docker(['run', '-d', '--name', svc, '--network', snet, BUSYBOX, 'sleep', '100000']);
    docker([
      'run',
      '-d',
      '--name',
      `${svc}-fixed`,
      '--network',
      snet,
      '--ip',
      '172.31.252.10',
      BUSYBOX,
      'sleep',
      '100000',
    ]);
    const copies = [`${svc}-restored`, `${svc}-fixed-restored`];
    try {
      const store = path.join(dir, 'subnet');
      const plain = await ferry(['--json', 'backup', svc, '-o', store, '--mkdir']);
      expect(plain.code, plain.stderr).toBe(0);
      const r = await ferry([
        'restore',
        JSON.parse(plain.stdout).bundle,
        '--on-conflict',
        'rename',
        '--map-network',
        `${snet}=${snet}-copy`,
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(
          `network ${snet}-copy: its subnet 172\\.31\\.252\\.0/24 is taken here \\(${snet} \\(172\\.31\\.252\\.0/24\\)\\); created with a subnet the engine picks`,
        ),
      );
      const subnet = inspect('network', `${snet}-copy`).IPAM.Config[0].Subnet as string;
      expect(subnet).toBeTruthy();
      expect(subnet).not.toBe(SUBNET);
      expect(inspect('container', `${svc}-restored`).State.Running).toBe(true);
      expect(Object.keys(inspect('container', `${svc}-restored`).NetworkSettings.Networks)).toEqual([`${snet}-copy`]);

      const fixed = await ferry(['--json', 'backup', `${svc}-fixed`, '-o', store, '--mkdir']);
      expect(fixed.code, fixed.stderr).toBe(0);
      const f = await ferry([
        'restore',
        JSON.parse(fixed.stdout).bundle,
        '--on-conflict',
        'rename',
        '--map-network',
        `${snet}=${snet}-copy2`,
      ]);
      expect(f.code, f.stderr).toBe(6);
      expect(f.stderr).toMatch(
        new RegExp(
          `${svc}-fixed: 172\\.31\\.252\\.10 on ${snet}-copy2, whose subnet 172\\.31\\.252\\.0/24 is taken here by ${snet} \\(172\\.31\\.252\\.0/24\\)`,
        ),
      );
      expect(exists('network', `${snet}-copy2`)).toBe(false);
      expect(exists('container', `${svc}-fixed-restored`)).toBe(false);
    } finally {
      cleanup(ENGINE_A, {
        containers: [svc, `${svc}-fixed`, ...copies],
        networks: [snet, `${snet}-copy`, `${snet}-copy2`],
      });
    }
  });
});
