/**
 * Registry mode (issue 3): `ferry backup --image-mode push` pushes the committed image to the lab
 * registry (127.0.0.1:5000, plain HTTP) and keeps only its reference in the bundle and its digest
 * in the trailer; `ferry restore` on engine B pulls it by that digest. A push that fails leaves no
 * bundle and a running container; a pull that fails rolls the restore back.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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
  inspect,
  uid,
  volumeListing,
} from '../helpers/lab.js';

const REGISTRY = '127.0.0.1:5000';
const PREFIX = 'ferry-e2e';
const PASSWORD = 'hunter2-not-printed';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-registry-'));
const name = uid('reg');
const vol = `${name}-data`;
const authFile = path.join(dir, 'auth.json');
/** An empty docker config: the tests never depend on the machine's ~/.docker. */
const dockerConfig = path.join(dir, 'docker-config');
const env = { DOCKER_CONFIG: dockerConfig };

function tarNames(file: string): string[] {
  return execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n');
}
function member(file: string, m: string): any {
  return JSON.parse(execFileSync('tar', ['-xOf', file, m], { encoding: 'utf8' }));
}

beforeAll(() => {
  mkdirSync(dockerConfig);
  writeFileSync(authFile, JSON.stringify({ username: 'ferry', password: PASSWORD }));
  docker([
    'run',
    '-d',
    '--name',
    name,
    '-e',
    'WHERE=a',
    '-e',
    'API_TOKEN=tok-123',
    '-v',
    `${vol}:/data`,
    BUSYBOX,
    'sleep',
    '100000',
  ]);
  docker(['exec', name, 'sh', '-c', AWKWARD_DATA]);
  docker(['exec', name, 'sh', '-c', 'echo in-layer > /etc/ferry-layer']);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
  cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
  for (const host of [ENGINE_A, ENGINE_B]) {
    const imgs = docker(['images', '-q', `${REGISTRY}/${PREFIX}/${name}`], { host, allowFail: true });
    for (const id of new Set(imgs.split('\n').filter(Boolean))) docker(['rmi', '-f', id], { host, allowFail: true });
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('registry mode', () => {
  const bundle = path.join(dir, 'push.tar');
  let ref = '';
  let digest = '';

  it('backs up with --image-mode push: the image goes to the registry, not into the bundle', async () => {
    const r = await ferry(
      [
        'backup',
        name,
        '--image-mode',
        'push',
        '--registry',
        `${REGISTRY}/${PREFIX}`,
        '--registry-auth-file',
        authFile,
        '--compress',
        'gzip',
        '-o',
        bundle,
        '--json',
      ],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).dataPaths.images).toEqual([
      { container: name, ref: expect.stringMatching(`^${REGISTRY}/`), path: 'registry' },
    ]);
    // docker commit bakes API_TOKEN's value into the pushed image: said, without the value.
    expect(r.stderr).toMatch(/warning: .*API_TOKEN looks like a secret/);
    expect(r.stderr + r.stdout).not.toContain(PASSWORD);

    const names = tarNames(bundle);
    expect(names.filter((n) => n.startsWith('images/'))).toEqual([]);
    expect(names).toEqual(['manifest.json', `volumes/${vol}.tar.gz`, 'trailer.json', 'SHA256SUMS']);

    const m = member(bundle, 'manifest.json');
    expect(m.imageMode).toBe('push');
    expect(m.members.map((x: any) => x.kind)).toEqual(['volume']);
    ref = m.containers[0].image.ref;
    expect(ref).toMatch(new RegExp(`^${REGISTRY.replace(/\./g, '\\.')}/${PREFIX}/${name}:\\d{8}T\\d{6}Z$`));
    expect(m.containers[0].image.registry).toEqual({ host: REGISTRY });
    expect(m.containers[0].image.member).toBeUndefined();
    const t = member(bundle, 'trailer.json');
    digest = t.images[0].digest;
    expect(t.images[0].ref).toBe(ref);
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(r.stdout).toContain(digest);

    // The registry holds the repository, and the tag's manifest has the recorded digest.
    const res = await fetch(`http://${REGISTRY}/v2/_catalog?n=1000`);
    expect(res.status).toBe(200);
    const catalog = (await res.json()) as { repositories: string[] };
    expect(catalog.repositories).toContain(`${PREFIX}/${name}`);
    const tag = ref.slice(ref.lastIndexOf(':') + 1);
    const head = await fetch(`http://${REGISTRY}/v2/${PREFIX}/${name}/manifests/${tag}`, {
      method: 'HEAD',
      // What docker pull accepts: Docker 20.10 pushes a Docker v2 manifest, the containerd image
      // store an OCI one (the registry answers 404 to a HEAD that does not accept its type).
      headers: {
        Accept: [
          'application/vnd.docker.distribution.manifest.v2+json',
          'application/vnd.oci.image.manifest.v1+json',
          'application/vnd.oci.image.index.v1+json',
        ].join(', '),
      },
    });
    expect(head.status).toBe(200);
    expect(head.headers.get('docker-content-digest')).toBe(digest);

    // The local snapshot tag is gone; the container runs on, not paused.
    expect(exists('image', ref)).toBe(false);
    const st = inspect('container', name).State;
    expect(st.Running).toBe(true);
    expect(st.Paused).toBe(false);
  });

  it('ferry verify accepts the bundle (no image member to check)', async () => {
    const r = await ferry(['verify', bundle]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('a dry run on engine B says the image will be pulled', async () => {
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bundle, '--dry-run'], { env: { ...env, DOCKER_HOST: ENGINE_B } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`pull image ${ref} from ${REGISTRY}`);
    expect(exists('container', name, ENGINE_B)).toBe(false);
  });

  it('a failed pull rolls the restore back', async () => {
    // The same bundle, but its trailer names a digest the registry does not have.
    const x = path.join(dir, 'x');
    mkdirSync(x);
    execFileSync('tar', ['-xf', bundle, '-C', x]);
    const t = member(bundle, 'trailer.json');
    t.images[0].digest = 'sha256:' + '0'.repeat(64);
    writeFileSync(path.join(x, 'trailer.json'), JSON.stringify(t, null, 2) + '\n');
    const bad = path.join(dir, 'bad-digest.tar');
    execFileSync('tar', ['--format=ustar', '-cf', bad, '-C', x, ...tarNames(bundle)]);
    expect(tarNames(bad)).toEqual(tarNames(bundle));

    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bad], { env: { ...env, DOCKER_HOST: ENGINE_B } });
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`pull image ${ref.slice(0, ref.lastIndexOf(':'))}@sha256:${'0'.repeat(64)}`);
    expect(r.stderr).toMatch(/rollback: remove volume/);
    expect(exists('volume', vol, ENGINE_B)).toBe(false);
    expect(exists('container', name, ENGINE_B)).toBe(false);
  });

  it('restores on engine B by pulling the pushed digest', async () => {
    cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bundle, '--registry-auth-file', authFile, '--json'], {
      env: { ...env, DOCKER_HOST: ENGINE_B },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).dataPaths.images).toEqual([{ container: name, ref, path: 'registry' }]);
    expect(r.stderr).toContain(`pull image ${ref.slice(0, ref.lastIndexOf(':'))}@${digest}`);
    expect(r.stderr + r.stdout).not.toContain(PASSWORD);

    const c = inspect('container', name, ENGINE_B);
    expect(c.State.Running).toBe(true);
    expect(c.Config.Image).toBe(ref);
    expect(c.Config.Env).toContain('WHERE=a');
    expect(volumeListing(vol, ENGINE_B)).toBe(volumeListing(vol, ENGINE_A));
    expect(docker(['exec', name, 'cat', '/etc/ferry-layer'], { host: ENGINE_B })).toBe('in-layer');

    const img = inspect('image', ref, ENGINE_B);
    expect(img.RepoDigests).toContain(`${ref.slice(0, ref.lastIndexOf(':'))}@${digest}`);
    expect(img.RepoTags).toContain(ref);
  });

  it('a push to a registry that is not listening fails with 4, leaves no bundle and resumes the container', async () => {
    const out = path.join(dir, 'store-5999');
    const r = await ferry(
      [
        'backup',
        name,
        '--image-mode',
        'push',
        '--registry',
        '127.0.0.1:5999/ferry-e2e',
        '--registry-auth-file',
        authFile,
        '-o',
        out,
        '--mkdir',
      ],
      { env },
    );
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/error: push image 127\.0\.0\.1:5999\/ferry-e2e\//);
    expect(r.stderr).not.toContain(PASSWORD);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
    const st = inspect('container', name).State;
    expect(st.Running).toBe(true);
    expect(st.Paused).toBe(false);
    expect(docker(['images', '-q', `127.0.0.1:5999/ferry-e2e/${name}`])).toBe(''); // snapshot removed
  });

  it('refuses --image-mode push without --registry, and --registry without push', async () => {
    const r1 = await ferry(['backup', name, '--image-mode', 'push', '-o', path.join(dir, 'x1.tar')], { env });
    expect(r1.code).toBe(2);
    expect(r1.stderr).toContain('--registry');
    const r2 = await ferry(['backup', name, '--registry', `${REGISTRY}/${PREFIX}`, '-o', path.join(dir, 'x2.tar')], {
      env,
    });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('--image-mode push');
    expect(existsSync(path.join(dir, 'x1.tar')) || existsSync(path.join(dir, 'x2.tar'))).toBe(false);
  });
});
