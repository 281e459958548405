import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/engine.js';
import { createRunIdentity } from '../../src/engine/run.js';
import { quirksFor } from '../../src/engine/quirks.js';
import { ConflictError, EngineError, NotFoundError } from '../../src/errors.js';
import {
  fillVolume,
  holderCreateBody,
  namedVolumes,
  sweepHolders,
  tarHelperCreateBody,
} from '../../src/data/volumes.js';

const run = createRunIdentity();

describe('holderCreateBody', () => {
  const reader = holderCreateBody(run, 'sha256:abc', {
    Type: 'volume',
    Source: 'data',
    Target: '/.ferry-data',
    ReadOnly: true,
    VolumeOptions: { NoCopy: true },
  });
  const writer = holderCreateBody(run, 'ferry-holder:empty', {
    Type: 'volume',
    Source: 'data',
    Target: '/.ferry-data/v',
    VolumeOptions: { NoCopy: true },
  });
  const hc = (b: Record<string, unknown>) => b.HostConfig as Record<string, unknown>;

  it('has no network, no capabilities, no privilege gain, and never restarts', () => {
    for (const b of [reader, writer]) {
      expect(b.NetworkDisabled).toBe(true);
      expect(hc(b).NetworkMode).toBe('none');
      expect(hc(b).CapDrop).toEqual(['ALL']);
      expect(hc(b).SecurityOpt).toEqual(['no-new-privileges']);
      expect(hc(b).RestartPolicy).toEqual({ Name: 'no' });
      expect(b.Entrypoint).toEqual(['/nonexistent-ferry-holder']);
      expect((b.Labels as Record<string, string>)['io.ferry.role']).toBe('holder');
      expect((b.Labels as Record<string, string>)['io.ferry.run']).toMatch(/^\d+-/);
    }
  });

  it('mounts the volume without copy-up, read-only with a read-only root when it only reads', () => {
    expect(hc(reader).ReadonlyRootfs).toBe(true);
    expect(hc(reader).Mounts).toEqual([
      { Type: 'volume', Source: 'data', Target: '/.ferry-data', ReadOnly: true, VolumeOptions: { NoCopy: true } },
    ]);
    expect(hc(writer).ReadonlyRootfs).toBe(false);
  });

  it('uses a Binds entry for host paths so a missing path is created', () => {
    const b = holderCreateBody(run, 'img', { bind: '/srv/conf:/.ferry-data' });
    expect(hc(b).Binds).toEqual(['/srv/conf:/.ferry-data']);
    expect(hc(b).Mounts).toBeUndefined();
  });
});

describe('tarHelperCreateBody (reading volumes on Podman)', () => {
  const b = tarHelperCreateBody(run, 'sha256:abc', {
    Type: 'volume',
    Source: 'data',
    Target: '/.ferry-data',
    ReadOnly: true,
    VolumeOptions: { NoCopy: true },
  });
  const h = b.HostConfig as Record<string, unknown>;
  it("runs the image's tar on the mount to stdout, as root, able only to read past permissions", () => {
    expect(b.Entrypoint).toEqual(['tar', '-c', '-f', '-', '-C', '/.ferry-data', '.']);
    expect(b.User).toBe('0:0');
    expect(b.Tty).toBe(false);
    expect(h.CapDrop).toEqual(['ALL']);
    expect(h.CapAdd).toEqual(['DAC_READ_SEARCH']);
    expect(h.ReadonlyRootfs).toBe(true);
    expect(h.NetworkMode).toBe('none');
    expect(h.SecurityOpt).toEqual(['no-new-privileges']);
    expect((b.Labels as Record<string, string>)['io.ferry.role']).toBe('holder');
  });
});

describe('namedVolumes (the volumes a removed helper or restored container never takes with it)', () => {
  it('lists volumes mounted by name through Mounts and Binds, not host paths or other mount types', () => {
    const body = {
      HostConfig: {
        Mounts: [
          { Type: 'volume', Source: 'data', Target: '/data' },
          { Type: 'bind', Source: '/etc/app', Target: '/etc/app' },
          { Type: 'tmpfs', Target: '/run' },
          { Type: 'volume', Target: '/anon' },
        ],
        Binds: ['cache:/cache:ro', '/srv/www:/www'],
      },
    };
    expect([...namedVolumes(body)].sort()).toEqual(['cache', 'data']);
    expect(namedVolumes({}).size).toBe(0);
  });
});

describe('a helper whose create lost its answer with the connection (the rollback`s sweep settles it)', () => {
  /**
   * A fake engine: the helper's create fails with `first`; the connection is down until the
   * sweep; then the engine refuses the helper's name (ConflictError) while its create is under way
   * (`busy` more tries), after which the helper exists.
   */
  function fake(first: Error, busy: number | 'never-created') {
    const calls: string[] = [];
    let down = true;
    let helper: string | undefined;
    let refusals = 0;
    const engine = {
      facts: { podman: false, endpoint: 'ssh://h' },
      quirks: quirksFor({ podman: false }),
      run,
      host: undefined,
      createContainer: async (name: string) => {
        if (!helper) {
          helper = name;
          throw first;
        }
        if (down) throw new EngineError('lost the connection');
        calls.push(`create ${name}`);
        if (busy !== 'never-created' && refusals++ < busy) throw new ConflictError(`the name ${name} is in use`);
        if (busy !== 'never-created') throw new ConflictError(`the name ${name} is in use`); // the helper itself, now there
        return 'placeholder-id';
      },
      containerExists: async (name: string) => {
        calls.push(`exists ${name}`);
        return busy !== 'never-created' && refusals > busy;
      },
      inspectContainer: async (id: string) => {
        if (down) throw new EngineError('lost the connection');
        return {
          Id: id,
          Mounts: [{ Type: 'volume', Name: 'data' }],
          HostConfig: { Mounts: [{ Type: 'volume', Source: 'data' }] },
        };
      },
      removeContainer: async (id: string) => {
        if (down) throw new EngineError('lost the connection');
        calls.push(`remove ${id}`);
      },
      removeVolume: async (v: string) => calls.push(`remove volume ${v}`),
      listLabelledContainers: async () => [],
    };
    return { engine: engine as unknown as Engine, calls, up: () => (down = false), helper: () => helper! };
  }
  const lostAnswer = () =>
    new EngineError('create container: lost the connection to the engine at ssh://h (ECONNRESET)', {
      cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
    });

  it('under way: waits until the engine has made it, then removes it (never the volume it mounts by name)', async () => {
    const f = fake(lostAnswer(), 2);
    await expect(fillVolume(f.engine, 'ferry-holder:empty', 'data', Readable.from([]))).rejects.toThrow(
      /cannot create a helper container/,
    );
    f.up();
    await sweepHolders(f.engine);
    const h = f.helper();
    expect(f.calls).toEqual([
      `create ${h}`,
      `exists ${h}`,
      `create ${h}`,
      `exists ${h}`,
      `create ${h}`,
      `exists ${h}`,
      `remove ${h}`,
    ]);
    // settled once: a second sweep has nothing left to wait for
    f.calls.length = 0;
    await sweepHolders(f.engine);
    expect(f.calls).toEqual([]);
  });

  it('never reached the engine: the placeholder takes the name and goes again', async () => {
    const f = fake(lostAnswer(), 'never-created');
    await expect(fillVolume(f.engine, 'ferry-holder:empty', 'data', Readable.from([]))).rejects.toThrow(
      /cannot create a helper container/,
    );
    f.up();
    await sweepHolders(f.engine);
    expect(f.calls).toEqual([`create ${f.helper()}`, 'remove placeholder-id']);
  });

  it('the engine answered (a missing image, a name in use): nothing to settle', async () => {
    for (const answer of [
      new NotFoundError('image not there'),
      new ConflictError('name in use'),
      new EngineError('the engine answered 500', { cause: Object.assign(new Error('x'), { statusCode: 500 }) }),
    ]) {
      const f = fake(answer, 0);
      await expect(fillVolume(f.engine, 'ferry-holder:empty', 'data', Readable.from([]))).rejects.toThrow(
        /cannot create a helper container/,
      );
      f.up();
      await sweepHolders(f.engine);
      expect(f.calls).toEqual([]);
    }
  });
});
