import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  FORMAT,
  FORMAT_VERSION,
  MANIFEST_MEMBER,
  TRAILER_MEMBER,
  isSafeMemberName,
  memberName,
  parseManifest,
  parseTrailer,
  sha256sums,
  type Manifest,
  type Trailer,
} from '../../src/bundle/manifest.js';
import { IMAGE_MEMBER, VOLUME_MEMBER, bundleError, makeManifest } from './bundle-fixtures.js';

type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The manifest as JSON text, after an optional edit of its parsed form. */
function text(edit?: (m: Loose) => void): string {
  const m = JSON.parse(JSON.stringify(makeManifest())) as Loose;
  edit?.(m);
  return JSON.stringify(m);
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

function trailerFor(manifest: Manifest): Trailer {
  return {
    format: FORMAT,
    formatVersion: FORMAT_VERSION,
    complete: true,
    finishedAt: '2024-03-01T10:05:00.000Z',
    members: manifest.members.map((m, i) => ({
      name: m.name,
      bytes: 1000 + i,
      sha256: sha(m.name),
      rawBytes: 2000 + i,
    })),
    images: [{ ref: 'ferry/web:backup-20240301', id: 'sha256:' + sha('image'), layers: ['sha256:' + sha('layer1')] }],
  };
}

function trailerText(edit?: (t: Loose) => void): string {
  const t = JSON.parse(JSON.stringify(trailerFor(makeManifest()))) as Loose;
  edit?.(t);
  return JSON.stringify(t);
}

describe('parseManifest', () => {
  it('accepts a valid manifest and returns it', () => {
    const m = parseManifest(text());
    expect(m).toEqual(makeManifest());
    expect(m.members.map((x) => x.name)).toEqual([VOLUME_MEMBER, IMAGE_MEMBER]);
  });

  it('accepts bind members referenced by a container', () => {
    const m = parseManifest(
      text((m) => {
        m.members.push({ name: 'binds/web-etc-web.tar', kind: 'bind', codec: 'none' });
        m.containers[0].binds = [
          { container: 'web', hostPath: '/etc/web', destination: '/etc/web', member: 'binds/web-etc-web.tar' },
        ];
      }),
    );
    expect(m.containers[0]!.binds[0]!.member).toBe('binds/web-etc-web.tar');
  });

  it('accepts the older readable version and every codec', () => {
    const m = parseManifest(
      text((m) => {
        m.formatVersion = 1;
        m.members.push({ name: 'volumes/other.tar.zst', kind: 'volume', codec: 'zstd' });
      }),
    );
    expect(m.members.map((x) => x.codec)).toEqual(['none', 'gzip', 'zstd']);
  });

  it('rejects text that is not JSON', async () => {
    const e = await bundleError(() => parseManifest('{"format": "ferry-bundle",'));
    expect(e.message).toMatch(/^manifest\.json: not valid JSON/);
    expect(e.member).toBe(MANIFEST_MEMBER);
  });

  it('rejects JSON that is not an object', async () => {
    for (const t of ['null', '42', '"ferry-bundle"']) {
      const e = await bundleError(() => parseManifest(t));
      expect(e.message).toMatch(/not a JSON object|format is/);
    }
  });

  it('rejects a wrong format string', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.format = 'docker-save';
        }),
      ),
    );
    expect(e.message).toContain('format is "docker-save", expected "ferry-bundle"');
  });

  it('rejects a missing or non-integer formatVersion', async () => {
    await bundleError(() =>
      parseManifest(
        text((m) => {
          delete m.formatVersion;
        }),
      ),
    );
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.formatVersion = 1.5;
        }),
      ),
    );
    expect(e.message).toContain('formatVersion is missing');
  });

  it('rejects a newer formatVersion and says to upgrade', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.formatVersion = FORMAT_VERSION + 1;
        }),
      ),
    );
    expect(e.message).toContain(`version ${FORMAT_VERSION + 1} is newer`);
    expect(`${e.message} ${e.hint}`).toMatch(/upgrade/i);
  });

  it('rejects a version older than the oldest readable one', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.formatVersion = 0;
        }),
      ),
    );
    expect(e.message).toContain('no longer supported');
  });

  it.each(['containers', 'volumes', 'networks', 'members'])('rejects a missing "%s" list', async (k) => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          delete m[k];
        }),
      ),
    );
    expect(e.message).toContain(`"${k}" is missing or not a list`);
    await bundleError(() =>
      parseManifest(
        text((m) => {
          m[k] = {};
        }),
      ),
    );
  });

  it('rejects a missing source', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          delete m.source;
        }),
      ),
    );
    expect(e.message).toContain('"source" is missing');
  });

  it.each([
    ['/volumes/webdata.tar', 'absolute'],
    ['volumes/../../etc/passwd', 'parent'],
    ['volumes/..', 'dot-dot name'],
    ['../volumes/webdata.tar', 'leading parent'],
    ['data/webdata.tar', 'unknown folder'],
    ['webdata.tar', 'no folder'],
    ['volumes/sub/webdata.tar', 'nested'],
    ['volumes/', 'empty'],
    ['volumes/.hidden', 'hidden'],
    ['volumes/web data.tar', 'space'],
    ['manifest.json', 'reserved'],
  ])('rejects member name %s (%s)', async (name) => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.members[0].name = name;
          m.volumes[0].member = name;
        }),
      ),
    );
    expect(e.message).toContain(`member name ${JSON.stringify(name)} is not allowed`);
  });

  it('rejects a member without a name, and a null member', async () => {
    await bundleError(() =>
      parseManifest(
        text((m) => {
          delete m.members[0].name;
        }),
      ),
    );
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.members.push(null);
        }),
      ),
    );
    expect(e.message).toContain('has no name');
  });

  it('rejects a member listed twice', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.members.push({ ...m.members[0] });
        }),
      ),
    );
    expect(e.message).toContain(`member ${VOLUME_MEMBER} is listed twice`);
  });

  it('rejects an unknown kind', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.members[0].kind = 'secret';
        }),
      ),
    );
    expect(e.message).toContain('unknown kind "secret"');
  });

  it('rejects an unknown codec', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.members[1].codec = 'lz4';
        }),
      ),
    );
    expect(e.message).toContain(`member ${IMAGE_MEMBER} uses unknown codec "lz4"`);
  });

  it('rejects a container whose image member is not listed', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.containers[0].image.member = 'images/other.tar.gz';
        }),
      ),
    );
    expect(e.message).toContain('container web refers to member images/other.tar.gz, which the bundle does not list');
  });

  it('rejects a container whose bind member is not listed', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.containers[0].binds = [
            { container: 'web', hostPath: '/etc/web', destination: '/etc/web', member: 'binds/missing.tar' },
          ];
        }),
      ),
    );
    expect(e.message).toContain('refers to member binds/missing.tar');
  });

  it('rejects an incomplete container entry', async () => {
    await bundleError(() =>
      parseManifest(
        text((m) => {
          delete m.containers[0].spec;
        }),
      ),
    );
    await bundleError(() =>
      parseManifest(
        text((m) => {
          delete m.containers[0].image;
        }),
      ),
    );
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.containers.push(null);
        }),
      ),
    );
    expect(e.message).toContain('a container entry is incomplete');
  });

  it.each(['../web', '/web', 'web/../../x', '-web', '', 'we b', 'web;rm'])(
    'rejects the container name %j',
    async (name) => {
      const e = await bundleError(() =>
        parseManifest(
          text((m) => {
            m.containers[0].spec.name = name;
          }),
        ),
      );
      expect(e.message).toContain(`container name ${JSON.stringify(name)} is not a valid name`);
    },
  );

  it.each(['../webdata', '/var/lib/docker', '.hidden', '', 'a b'])('rejects the volume name %j', async (name) => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.volumes[0].name = name;
        }),
      ),
    );
    expect(e.message).toContain('a volume entry has an invalid name');
  });

  it('rejects a volume whose member is not listed', async () => {
    const e = await bundleError(() =>
      parseManifest(
        text((m) => {
          m.volumes[0].member = 'volumes/nope.tar';
        }),
      ),
    );
    expect(e.message).toContain('volume webdata refers to member volumes/nope.tar');
  });
});

describe('isSafeMemberName', () => {
  it('accepts names under the known folders and nothing else', () => {
    expect(isSafeMemberName('images/web.tar.zst')).toBe(true);
    expect(isSafeMemberName('volumes/0123_a-b.c.tar')).toBe(true);
    expect(isSafeMemberName('binds/x.tar.gz')).toBe(true);
    expect(isSafeMemberName('volumes/' + 'a'.repeat(201))).toBe(true);
    expect(isSafeMemberName('volumes/' + 'a'.repeat(202))).toBe(false);
    expect(isSafeMemberName('trailer.json')).toBe(false);
    expect(isSafeMemberName('volumes\\..\\x')).toBe(false);
    expect(isSafeMemberName('volumes/x\n')).toBe(false);
  });
});

describe('parseTrailer', () => {
  const manifest = makeManifest();

  it('accepts a complete trailer', () => {
    const t = parseTrailer(trailerText(), manifest);
    expect(t).toEqual(trailerFor(manifest));
  });

  it('rejects text that is not JSON, naming the trailer', async () => {
    const e = await bundleError(() => parseTrailer('{', manifest));
    expect(e.member).toBe(TRAILER_MEMBER);
    expect(e.message).toMatch(/^trailer\.json: not valid JSON/);
  });

  it('rejects a trailer whose complete flag is not true', async () => {
    for (const v of [false, 'true', undefined]) {
      const e = await bundleError(() =>
        parseTrailer(
          trailerText((t) => {
            t.complete = v;
          }),
          manifest,
        ),
      );
      expect(e.message).toContain('not a complete ferry trailer');
    }
  });

  it('rejects a wrong format, a null trailer and missing members', async () => {
    await bundleError(() =>
      parseTrailer(
        trailerText((t) => {
          t.format = 'other';
        }),
        manifest,
      ),
    );
    await bundleError(() => parseTrailer('null', manifest));
    await bundleError(() =>
      parseTrailer(
        trailerText((t) => {
          delete t.members;
        }),
        manifest,
      ),
    );
  });

  it('rejects a member entry that is not an object', async () => {
    for (const v of [null, 'volumes/webdata.tar', 42]) {
      const e = await bundleError(() =>
        parseTrailer(
          trailerText((t) => {
            t.members[0] = v;
          }),
          manifest,
        ),
      );
      expect(e.member).toBe(TRAILER_MEMBER);
    }
  });

  it('rejects a member the manifest does not list', async () => {
    const e = await bundleError(() =>
      parseTrailer(
        trailerText((t) => {
          t.members.push({ name: 'volumes/extra.tar', bytes: 1, sha256: sha('x'), rawBytes: 1 });
        }),
        manifest,
      ),
    );
    expect(e.message).toContain('lists member "volumes/extra.tar" that the manifest does not');
    expect(e.member).toBe(TRAILER_MEMBER);
  });

  it.each([
    ['short', 'abc123'],
    ['upper case', sha('x').toUpperCase()],
    ['non-hex', 'g'.repeat(64)],
    ['not a string', 12345],
    ['missing', undefined],
  ])('rejects a %s sha256', async (_what, value) => {
    const e = await bundleError(() =>
      parseTrailer(
        trailerText((t) => {
          t.members[0].sha256 = value;
        }),
        manifest,
      ),
    );
    expect(e.message).toContain(`member ${VOLUME_MEMBER} has no valid sha256`);
  });

  it('rejects an invalid size', async () => {
    for (const v of [-1, 1.5, '10', undefined]) {
      const e = await bundleError(() =>
        parseTrailer(
          trailerText((t) => {
            t.members[1].bytes = v;
          }),
          manifest,
        ),
      );
      expect(e.message).toContain(`member ${IMAGE_MEMBER} has no valid size`);
    }
  });

  it('rejects a trailer without the checksum of a planned member', async () => {
    const e = await bundleError(() =>
      parseTrailer(
        trailerText((t) => {
          t.members.splice(1, 1);
        }),
        manifest,
      ),
    );
    expect(e.message).toContain(`has no checksum for member ${IMAGE_MEMBER}`);
  });
});

describe('sha256sums', () => {
  it('prints "<hex>  <name>\\n" per member, in order', () => {
    const t = trailerFor(makeManifest());
    expect(sha256sums(t)).toBe(`${sha(VOLUME_MEMBER)}  ${VOLUME_MEMBER}\n${sha(IMAGE_MEMBER)}  ${IMAGE_MEMBER}\n`);
    expect(sha256sums({ ...t, members: [] })).toBe('');
  });

  describe('compatibility with sha256sum -c', () => {
    const hasTool = spawnSync('sha256sum', ['--version'], { stdio: 'ignore' }).status === 0;
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-sums-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it.skipIf(!hasTool)('is accepted by sha256sum -c, which also catches a change', () => {
      const contents: Record<string, string> = { [VOLUME_MEMBER]: 'volume bytes\n', [IMAGE_MEMBER]: 'image bytes\n' };
      const t = trailerFor(makeManifest());
      t.members = t.members.map((m) => ({ ...m, sha256: sha(contents[m.name]!), bytes: contents[m.name]!.length }));
      for (const [name, body] of Object.entries(contents)) {
        mkdirSync(path.join(dir, path.dirname(name)), { recursive: true });
        writeFileSync(path.join(dir, name), body);
      }
      writeFileSync(path.join(dir, 'SHA256SUMS'), sha256sums(t));
      const out = execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir, encoding: 'utf8' });
      expect(out).toBe(`${VOLUME_MEMBER}: OK\n${IMAGE_MEMBER}: OK\n`);
      writeFileSync(path.join(dir, VOLUME_MEMBER), 'tampered\n');
      const bad = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir, encoding: 'utf8' });
      expect(bad.status).not.toBe(0);
      expect(bad.stdout).toContain(`${VOLUME_MEMBER}: FAILED`);
    });
  });
});

describe('memberName', () => {
  it('builds folder/name.tar<ext>', () => {
    expect(memberName('volumes', 'webdata', 0, '')).toBe('volumes/webdata.tar');
    expect(memberName('images', 'web', 3, '.zst')).toBe('images/web.tar.zst');
    expect(memberName('binds', 'web-etc_web.conf', 1, '.gz')).toBe('binds/web-etc_web.conf.tar.gz');
  });

  it('replaces unsafe characters and strips a leading non-alphanumeric run', () => {
    expect(memberName('binds', 'web:/etc/web conf', 0, '')).toBe('binds/web__etc_web_conf.tar');
    expect(memberName('volumes', '../../etc', 2, '')).toBe('volumes/etc.tar');
    expect(memberName('volumes', '_data', 2, '')).toBe('volumes/data.tar');
    expect(memberName('volumes', 'données', 0, '')).toBe('volumes/donn_es.tar');
  });

  it('falls back to the index when the name is long or has nothing usable', () => {
    expect(memberName('volumes', 'a'.repeat(80), 7, '')).toBe(`volumes/${'a'.repeat(80)}.tar`);
    expect(memberName('volumes', 'a'.repeat(81), 7, '')).toBe('volumes/007.tar');
    expect(memberName('images', '///', 12, '.gz')).toBe('images/012.tar.gz');
    expect(memberName('volumes', '', 1234, '')).toBe('volumes/1234.tar');
  });

  it('always yields a name the manifest accepts', () => {
    for (const base of [
      'web',
      'a'.repeat(300),
      '..',
      '/etc/passwd',
      'x y z',
      'ünïcödé',
      '-',
      '.hidden',
      '0' + '.'.repeat(90),
    ])
      for (const ext of ['', '.gz', '.zst'])
        expect(isSafeMemberName(memberName('volumes', base, 5, ext)), `${base}${ext}`).toBe(true);
  });
});
