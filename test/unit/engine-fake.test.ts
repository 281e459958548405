/**
 * The engine fake itself (test/helpers/engine-fake.ts): the engine behaviours the op tests rely
 * on, so that a change to the fake cannot quietly make them pass for the wrong reason.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { quirksFor } from '../../src/engine/quirks.js';
import { ConflictError, EngineError, NotFoundError } from '../../src/errors.js';
import { FakeEngine, tarOf } from '../helpers/engine-fake.js';
import { untar } from '../helpers/ops-fixtures.js';
import { collect, packTar } from '../helpers/tar.js';

async function engineWithApp() {
  const e = new FakeEngine();
  await e.addImage('shop/app:1', [{ 'a.txt': 'a' }]);
  e.addVolume('data', { 'x/y.txt': 'why', 'z.txt': 'zed' });
  const c = e.addContainer('app', { image: 'shop/app:1', volumes: { data: '/data' } });
  return { e, c };
}

describe('FakeEngine', () => {
  it('looks like a Docker 20.10 engine over TCP, with no way onto its host', () => {
    const e = new FakeEngine();
    expect(e.host).toBeUndefined();
    expect(e.facts).toMatchObject({ serverVersion: '20.10.24', apiVersion: '1.41', podman: false, remapped: false });
    expect(e.apiAtLeast('1.41')).toBe(true);
    expect(e.apiAtLeast('1.44')).toBe(false);
    expect(e.quirks).toEqual(quirksFor({ podman: false }));
    expect(e.facts.containerdStore).toBe(false);
  });

  it('lists running containers, or every one carrying all the labels asked for; and its images', async () => {
    const { e, c } = await engineWithApp();
    const helper = await e.createContainer('helper', {
      Image: 'shop/app:1',
      Labels: { 'io.ferry.role': 'holder', 'io.ferry.run': e.run.id },
    });
    expect((await e.listContainers()).map((x) => x.Id)).toEqual([c.id]);
    expect((await e.listContainers(true)).map((x) => x.Id)).toEqual([c.id, helper]);
    expect((await e.listLabelledContainers([`io.ferry.run=${e.run.id}`])).map((x) => x.Id)).toEqual([helper]);
    expect((await e.listLabelledContainers(['io.ferry.role', 'io.ferry.run=other'])).map((x) => x.Id)).toEqual([]);
    expect((await e.listContainers()).at(0)).toMatchObject({
      Names: ['/app'],
      Mounts: [{ Type: 'volume', Name: 'data', Destination: '/data' }],
    });
    expect(await e.listImages()).toEqual(
      [...e.images.values()].map((i) => ({ Id: i.id, RepoTags: i.repoTags, Created: expect.any(Number) })),
    );
    expect((await e.listContainers()).at(0)).toMatchObject({ ImageID: c.image, Image: 'shop/app:1' });
  });

  it('pauses only a running container and resumes only a paused one (409 otherwise)', async () => {
    const { e, c } = await engineWithApp();
    await e.pause(c.id);
    await expect(e.pause(c.id)).rejects.toBeInstanceOf(ConflictError);
    await e.unpause(c.id);
    await expect(e.unpause(c.id)).rejects.toBeInstanceOf(ConflictError);
    await e.stop(c.id);
    await expect(e.pause(c.id)).rejects.toBeInstanceOf(ConflictError);
  });

  it('refuses to remove a volume that a container mounts, started or not (409)', async () => {
    const { e, c } = await engineWithApp();
    await expect(e.removeVolume('data')).rejects.toBeInstanceOf(ConflictError);
    await e.stop(c.id);
    await expect(e.removeVolume('data')).rejects.toBeInstanceOf(ConflictError);
    await e.removeContainer(c.id);
    await e.removeVolume('data');
    expect(e.volumes.has('data')).toBe(false);
  });

  it('refuses to remove an image a container uses (409)', async () => {
    const { e, c } = await engineWithApp();
    await expect(e.removeImage('shop/app:1')).rejects.toBeInstanceOf(ConflictError);
    await e.removeContainer(c.id);
    await e.removeImage('shop/app:1');
    expect(e.images.size).toBe(0);
  });

  it('answers a create that names a taken name with a conflict, and a missing image with not found', async () => {
    const { e } = await engineWithApp();
    await expect(e.createContainer('app', { Image: 'shop/app:1' })).rejects.toBeInstanceOf(ConflictError);
    await expect(e.createContainer('new', { Image: 'nope:1' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it("archive GET of a mount gives `./` with the volume root's attributes, then its entries in walk order", async () => {
    const { e, c } = await engineWithApp();
    e.volumes.get('data')!.root = { mode: 0o700, uid: 70, gid: 70, mtime: new Date('2024-01-01T00:00:00Z') };
    const t = await untar(await collect(await e.getArchive(c.id, '/data/.')));
    expect([...t.keys()]).toEqual(['./', './x/', './x/y.txt', './z.txt']);
    expect(t.get('./')!.header).toMatchObject({ mode: 0o700, uid: 70, gid: 70 });
    await expect(e.getArchive(c.id, '/etc/.')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('archive PUT does not apply `./` to the target directory, and refuses a read-only mount', async () => {
    const { e, c } = await engineWithApp();
    const root = e.volumes.get('data')!.root;
    const archive = await tarOf({ './new.txt': 'new' });
    await e.putArchive(c.id, '/data', Readable.from([archive]));
    expect(e.volumeFiles('data')).toMatchObject({ 'new.txt': 'new', 'z.txt': 'zed' });
    expect(e.volumes.get('data')!.root).toEqual(root);
    c.mounts[0]!.RW = false;
    await expect(e.putArchive(c.id, '/data', Readable.from([archive]))).rejects.toBeInstanceOf(EngineError);
    await expect(e.putArchive(c.id, '/nowhere', Readable.from([archive]))).rejects.toBeInstanceOf(NotFoundError);
  });

  it('saves an image that another engine loads, and refuses an archive missing a layer it lacks', async () => {
    const { e } = await engineWithApp();
    const archive = await collect(await e.saveImages(['shop/app:1']));
    const other = new FakeEngine({ endpoint: 'tcp://other:2375' });
    expect(await other.loadImage(Readable.from([archive]))).toEqual(['shop/app:1']);
    const [a, b] = [e, other].map((x) => [...x.images.values()][0]!);
    expect(b!.id).toBe(a!.id);
    expect(b!.diffIds).toEqual(a!.diffIds);

    const files = await untar(archive);
    const withoutLayers = await packTar(
      [...files]
        .filter(([name, f]) => !name.endsWith('layer.tar') && f.header.type === 'file')
        .map(([name, f]) => ({ name, data: f.data })),
    );
    const third = new FakeEngine({ endpoint: 'tcp://third:2375' });
    await expect(third.loadImage(Readable.from([withoutLayers]))).rejects.toBeInstanceOf(EngineError);
    expect(third.images.size).toBe(0);
  });

  it('records calls in order and fails the nth or the matching call, once', async () => {
    const { e } = await engineWithApp();
    e.failOn('inspectVolume', 2);
    e.failOn('containerExists', (name) => name === 'web-2', new NotFoundError('boom'));
    expect(await e.inspectVolume('data')).toBeDefined();
    await expect(e.inspectVolume('data')).rejects.toBeInstanceOf(EngineError);
    expect(await e.inspectVolume('data')).toBeDefined();
    expect(await e.containerExists('web-1')).toBe(false);
    await expect(e.containerExists('web-2')).rejects.toThrow('boom');
    expect(await e.containerExists('web-2')).toBe(false);
    expect(e.methods()).toEqual([
      'inspectVolume',
      'inspectVolume',
      'inspectVolume',
      'containerExists',
      'containerExists',
      'containerExists',
    ]);
  });

  it('fails a call after doing it when asked (the answer was lost)', async () => {
    const { e } = await engineWithApp();
    e.failOn('createVolume', undefined, undefined, { after: true });
    await expect(e.createVolume({ Name: 'made' })).rejects.toBeInstanceOf(EngineError);
    expect(e.volumes.has('made')).toBe(true);
  });

  it('breaks a response stream after the given bytes', async () => {
    const { e, c } = await engineWithApp();
    e.failStream('getArchive', undefined, 600);
    const s = await e.getArchive(c.id, '/data/.');
    let got = 0;
    await expect(
      (async () => {
        for await (const chunk of s) got += (chunk as Buffer).length;
      })(),
    ).rejects.toThrow(/ECONNRESET/);
    expect(got).toBe(600);
  });
});
