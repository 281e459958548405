/**
 * What an engine's host offers the data fast paths (src/hostaccess/access.ts): decided once per
 * engine from its facts, what its host answers and the switches the CLI passes in.
 */
import { describe, expect, it } from 'vitest';
import {
  decideHostAccess,
  engineRefusals,
  hostAccess,
  hostAccessFor,
  hostEnv,
  type HostOffers,
} from '../../src/hostaccess/access.js';
import { switchedOff } from '../../src/hostaccess/refusals.js';
import type { HostShell } from '../../src/hostaccess/shell.js';
import { quirksFor } from '../../src/engine/quirks.js';

const shell = (where = 'this host'): HostShell => ({
  where,
  run: () => Promise.reject(new Error('not run in this test')),
});
const docker = {
  endpoint: 'unix:///var/run/docker.sock',
  podman: false,
  remapped: false,
  containerdStore: false,
  storageDriver: 'overlay2',
  rootDir: '/var/lib/docker',
};
const dockerQuirks = quirksFor({ podman: false, containerdStore: false });
/** Facts and quirks together, as engineRefusals reads them. */
const facts = (f: Partial<typeof docker> = {}) => ({
  ...docker,
  ...f,
  ...quirksFor({ podman: false, containerdStore: false, ...f }),
});
const root: HostOffers = { root: true, gnuTar: true };

describe('hostEnv and switchedOff: the switches, read at the CLI edge', () => {
  it('takes only the host switches, as given', () => {
    expect(hostEnv({ FERRY_HOST_VOLUMES: '0', FERRY_HOST_LAYERS: 'yes', PATH: '/bin', FERRY_DEBUG: '1' })).toEqual({
      FERRY_HOST_VOLUMES: '0',
      FERRY_HOST_LAYERS: 'yes',
    });
    expect(hostEnv({})).toEqual({});
  });
  it('0, off, no and false (any case) turn a path off; anything else does not', () => {
    for (const v of ['0', 'off', 'NO', 'False']) expect(switchedOff(v), v).toBe(true);
    for (const v of [undefined, '', '1', 'on', 'yes', '00']) expect(switchedOff(v), String(v)).toBe(false);
  });
});

describe('engineRefusals: what the engine alone rules out, before its host is asked', () => {
  it('nothing for Docker with overlay2 on a reachable host', () => {
    expect(engineRefusals(facts(), shell(), {})).toEqual({
      volumes: undefined,
      layers: undefined,
      contentStore: 'not the containerd image store',
    });
  });
  it('each switch turns its own path off, saying so', () => {
    expect(engineRefusals(facts(), shell(), { FERRY_HOST_VOLUMES: '0' })).toEqual({
      volumes: 'FERRY_HOST_VOLUMES=0',
      layers: undefined,
      contentStore: 'not the containerd image store',
    });
    expect(engineRefusals(facts(), shell(), { FERRY_HOST_LAYERS: 'off' })).toEqual({
      volumes: undefined,
      layers: 'FERRY_HOST_LAYERS=off',
      contentStore: 'not the containerd image store',
    });
  });
  it('the containerd store: its content store is read, unless FERRY_HOST_LAYERS is off or there is no way onto the host', () => {
    const c = facts({ containerdStore: true, storageDriver: 'overlayfs' });
    expect(engineRefusals(c, shell(), {}).contentStore).toBeUndefined();
    expect(engineRefusals(c, shell(), { FERRY_HOST_LAYERS: '0' }).contentStore).toBe('FERRY_HOST_LAYERS=0');
    expect(engineRefusals(c, undefined, {}).contentStore).toMatch(/TCP engine/);
    expect(engineRefusals({ ...c, remapped: true }, shell(), {}).contentStore).toMatch(/user ids remapped/);
    expect(decideHostAccess(engineRefusals(c, shell(), {}), root, 'this host').contentStore).toEqual({
      use: true,
      reason: "root on this host, containerd's content store",
    });
    expect(decideHostAccess({}, { root: false, gnuTar: true }, 'ssh://h').contentStore).toEqual({
      use: false,
      reason: 'not root on ssh://h',
    });
  });
  it('a TCP engine (no shell), Podman, remapped ids, the containerd store, another driver', () => {
    const tcp = engineRefusals(facts(), undefined, {});
    expect(tcp.volumes).toMatch(/TCP engine/);
    expect(tcp.layers).toMatch(/TCP engine/);
    const podman = engineRefusals(facts({ podman: true, storageDriver: 'overlay' }), shell(), {});
    expect(podman.volumes).toBe('Podman');
    expect(podman.layers).toMatch(/not Docker's own overlay2 layer store \(storage driver overlay\)/);
    const remapped = engineRefusals(facts({ remapped: true }), shell(), {});
    expect(remapped.volumes).toMatch(/remaps user ids/);
    expect(remapped.layers).toMatch(/user ids remapped/);
    const containerd = engineRefusals(facts({ containerdStore: true }), shell(), {});
    expect(containerd.volumes).toBeUndefined();
    expect(containerd.layers).toMatch(/containerd image store/);
    expect(engineRefusals(facts({ rootDir: undefined }), shell(), {}).layers).toMatch(/overlay2/);
  });
});

describe('decideHostAccess: the decision, with its reason', () => {
  it('root with GNU tar 1.28+: both fast paths', () => {
    const d = decideHostAccess({}, root, 'ssh://h');
    expect(d.volumes).toEqual({ use: true, reason: 'root on ssh://h, with GNU tar 1.28+' });
    expect(d.layers.use).toBe(true);
    expect(d.layers.reason).toMatch(/root on ssh:\/\/h/);
  });
  it('root without GNU tar 1.28+: layers only', () => {
    const d = decideHostAccess({}, { root: true, gnuTar: false }, 'ssh://h');
    expect(d.volumes).toEqual({ use: false, reason: 'no GNU tar 1.28 or newer on ssh://h' });
    expect(d.layers.use).toBe(true);
  });
  it('not root (or the host not asked): neither', () => {
    for (const offers of [{ root: false, gnuTar: true }, undefined]) {
      const d = decideHostAccess({}, offers, 'ssh://h');
      expect(d.volumes).toEqual({ use: false, reason: 'not root on ssh://h' });
      expect(d.layers).toEqual({ use: false, reason: 'not root on ssh://h' });
    }
  });
  it("the engine's refusal comes first, whatever the host offers", () => {
    const d = decideHostAccess({ volumes: 'FERRY_HOST_VOLUMES=0', layers: 'Podman' }, root, 'this host');
    expect(d.volumes).toEqual({ use: false, reason: 'FERRY_HOST_VOLUMES=0' });
    expect(d.layers).toEqual({ use: false, reason: 'Podman' });
  });
});

describe('hostAccess and hostAccessFor: asked once per engine and host', () => {
  it('does not ask the host when the engine rules out both paths', async () => {
    let asked = 0;
    const ask = async () => (asked++, root);
    const a = await hostAccess(
      { facts: docker, quirks: dockerQuirks, host: shell() },
      { FERRY_HOST_VOLUMES: '0', FERRY_HOST_LAYERS: '0' },
      ask,
    );
    expect(asked).toBe(0);
    expect(a.volumes.use || a.layers.use).toBe(false);
    const b = await hostAccess(
      { facts: docker, quirks: dockerQuirks, host: shell() },
      { FERRY_HOST_VOLUMES: '0' },
      ask,
    );
    expect(asked).toBe(1);
    expect(b.layers.use).toBe(true);
    expect(b.shell?.where).toBe('this host');
  });

  it('a TCP engine: no shell, and the reason names its endpoint`s lack of a way in', async () => {
    const a = await hostAccess(
      { facts: { ...docker, endpoint: 'tcp://h:2375' }, quirks: dockerQuirks },
      {},
      async () => root,
    );
    expect(a.shell).toBeUndefined();
    expect(a.volumes).toEqual({ use: false, reason: 'no way onto the engine host (a TCP engine)' });
  });

  it('the switches come from what the CLI passed, never from process.env', async () => {
    const before = process.env.FERRY_HOST_VOLUMES;
    process.env.FERRY_HOST_VOLUMES = '0';
    try {
      const a = await hostAccess({ facts: docker, quirks: dockerQuirks, host: shell() }, {}, async () => root);
      expect(a.volumes.use).toBe(true);
      const b = await hostAccess(
        { facts: docker, quirks: dockerQuirks, host: shell() },
        { FERRY_HOST_VOLUMES: 'no' },
        async () => root,
      );
      expect(b.volumes).toEqual({ use: false, reason: 'FERRY_HOST_VOLUMES=no' });
    } finally {
      if (before === undefined) delete process.env.FERRY_HOST_VOLUMES;
      else process.env.FERRY_HOST_VOLUMES = before;
    }
  });

  it('hostAccessFor: one decision per engine, one question per shell, one debug line per engine', async () => {
    const lines: string[] = [];
    const runs: string[][] = [];
    const local: HostShell = {
      where: 'this host',
      run: async (argv) => {
        runs.push(argv);
        const { localShell } = await import('../../src/hostaccess/shell.js');
        return localShell.run(['sh', '-c', 'echo 0; echo "tar (GNU tar) 1.34"']);
      },
    };
    const access = hostAccessFor({}, (m) => lines.push(m));
    const a = { facts: docker, quirks: dockerQuirks, host: local };
    const b = { facts: { ...docker, endpoint: 'unix:///var/run/docker-b.sock' }, quirks: dockerQuirks, host: local };
    const [x, y, z] = await Promise.all([access(a), access(a), access(b)]);
    expect(x).toBe(y);
    expect(z).not.toBe(x);
    expect(runs).toHaveLength(1); // both engines on this host: asked once
    expect(x.volumes.use && x.layers.use && z.volumes.use).toBe(true);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      /^host access for unix:\/\/\/var\/run\/docker\.sock: volumes by host-tar yes \(root on this host, with GNU tar 1\.28\+\); images from the layer-store yes/,
    );
  });
});
