/** Registry mode: the manifest/trailer rules for images kept in a registry, and push digests. */
import { describe, expect, it } from 'vitest';
import {
  FORMAT,
  FORMAT_VERSION,
  parseManifest,
  parseTrailer,
  registryDigest,
  type Manifest,
  type Trailer,
} from '../../src/bundle/manifest.js';
import { pushedDigest } from '../../src/engine/engine.js';
import { VOLUME_MEMBER, bundleError, makeManifest } from './bundle-fixtures.js';

type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const REF = '127.0.0.1:5000/ferry-e2e/web:20240301T100000Z';
const DIGEST = 'sha256:' + 'ab'.repeat(32);

/** A push-mode manifest: no image member, the image's registry reference. */
function pushManifest(): Manifest {
  const m = makeManifest([{ name: VOLUME_MEMBER, kind: 'volume', codec: 'none' }]);
  m.imageMode = 'push';
  m.containers[0]!.image = { ref: REF, registry: { host: '127.0.0.1:5000' } };
  return m;
}

function text(edit?: (m: Loose) => void): string {
  const m = JSON.parse(JSON.stringify(pushManifest())) as Loose;
  edit?.(m);
  return JSON.stringify(m);
}

function trailer(edit?: (t: Loose) => void): string {
  const t: Trailer = {
    format: FORMAT,
    formatVersion: FORMAT_VERSION,
    complete: true,
    finishedAt: '2024-03-01T10:05:00.000Z',
    members: [{ name: VOLUME_MEMBER, bytes: 10, sha256: 'cd'.repeat(32), rawBytes: 10 }],
    images: [{ ref: REF, id: 'sha256:' + 'ef'.repeat(32), layers: [], digest: DIGEST }],
  };
  const l = JSON.parse(JSON.stringify(t)) as Loose;
  edit?.(l);
  return JSON.stringify(l);
}

describe('push-mode manifest', () => {
  it('accepts a container whose image is in a registry, with no image member', () => {
    const m = parseManifest(text());
    expect(m.imageMode).toBe('push');
    expect(m.containers[0]!.image).toEqual({ ref: REF, registry: { host: '127.0.0.1:5000' } });
    expect(m.members.map((x) => x.kind)).toEqual(['volume']);
  });

  it('rejects a push-mode container without a registry, or with an image member too', async () => {
    await bundleError(() => parseManifest(text((m) => delete m.containers[0].image.registry)));
    await bundleError(() => parseManifest(text((m) => (m.containers[0].image.registry = { host: 'Bad Host' }))));
    await bundleError(() =>
      parseManifest(
        text((m) => {
          m.members.push({ name: 'images/web.tar.gz', kind: 'image', codec: 'gzip' });
          m.containers[0].image.member = 'images/web.tar.gz';
        }),
      ),
    );
  });

  it('rejects a reference outside the registry host, or without a tag', async () => {
    const e = await bundleError(() =>
      parseManifest(text((m) => (m.containers[0].image.ref = 'other.example.com/ferry-e2e/web:1'))),
    );
    expect(e.message).toContain('127.0.0.1:5000');
    await bundleError(() => parseManifest(text((m) => (m.containers[0].image.ref = '127.0.0.1:5000/ferry-e2e/web'))));
    await bundleError(() =>
      parseManifest(text((m) => (m.containers[0].image.ref = `127.0.0.1:5000/ferry-e2e/web@${DIGEST}`))),
    );
  });

  it('rejects a registry image in an archive-mode manifest, an archive container without member, and an unknown mode', async () => {
    await bundleError(() => parseManifest(text((m) => delete m.imageMode)));
    await bundleError(() => parseManifest(text((m) => (m.imageMode = 'archive'))));
    await bundleError(() => parseManifest(text((m) => (m.imageMode = 'ship'))));
  });
});

describe('push-mode trailer', () => {
  it('accepts a trailer with the pushed digest and hands it out', () => {
    const m = parseManifest(text());
    const t = parseTrailer(trailer(), m);
    expect(registryDigest(t, REF)).toBe(DIGEST);
  });

  it('rejects a trailer without a sha256 digest for a registry image', async () => {
    const m = parseManifest(text());
    const e = await bundleError(() =>
      parseTrailer(
        trailer((t) => delete t.images[0].digest),
        m,
      ),
    );
    expect(e.message).toContain(REF);
    await bundleError(() =>
      parseTrailer(
        trailer((t) => (t.images[0].digest = 'sha256:abc')),
        m,
      ),
    );
    await bundleError(() =>
      parseTrailer(
        trailer((t) => (t.images[0].ref = 'ferry/web:1')),
        m,
      ),
    );
    await bundleError(() =>
      parseTrailer(
        trailer((t) => delete t.images),
        m,
      ),
    );
  });

  it('does not ask an archive-mode trailer for digests', () => {
    const m = makeManifest();
    const t = parseTrailer(
      trailer((t) => {
        t.members = m.members.map((x) => ({ name: x.name, bytes: 1, sha256: 'cd'.repeat(32), rawBytes: 1 }));
        t.images = [];
      }),
      m,
    );
    expect(t.images).toEqual([]);
  });
});

describe('pushedDigest', () => {
  it('reads aux.Digest and the "digest: sha256:..." status line, nothing else', () => {
    expect(pushedDigest({ progressDetail: {}, aux: { Tag: '1', Digest: DIGEST, Size: 528 } })).toBe(DIGEST);
    expect(pushedDigest({ status: `20240301T100000Z: digest: ${DIGEST} size: 528` })).toBe(DIGEST);
    expect(pushedDigest({ status: 'Pushed', id: 'abc' })).toBeUndefined();
    expect(pushedDigest({ status: 'digest: sha256:short size: 1' })).toBeUndefined();
    expect(pushedDigest({ aux: { Digest: 'md5:xyz' } })).toBeUndefined();
  });
});
