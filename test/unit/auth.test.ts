import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DOCKER_HUB_KEY,
  defaultAuthDeps,
  describeAuth,
  dockerConfigPath,
  normaliseRegistryHost,
  parseRegistryOption,
  resolveRegistryAuth,
  serverAddress,
  type AuthDeps,
} from '../../src/engine/auth.js';
import { EngineError, FerryError, UsageError } from '../../src/errors.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-auth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** A fake docker-credential-fake on a PATH of its own; it logs every server URL it is asked for. */
const bin = path.join(dir, 'bin');
const helperLog = path.join(dir, 'helper.log');
mkdirSync(bin);
writeFileSync(
  path.join(bin, 'docker-credential-fake'),
  [
    '#!/bin/sh',
    '[ "$1" = get ] || { echo "unexpected action $1" >&2; exit 3; }',
    'read -r url || true',
    `printf '%s\\n' "$url" >> '${helperLog}'`,
    'case "$url" in',
    `  127.0.0.1:5000) echo '{"ServerURL":"127.0.0.1:5000","Username":"alice","Secret":"pa:ss:word"}' ;;`,
    `  tok.example.com) echo '{"ServerURL":"tok.example.com","Username":"<token>","Secret":"id-token-1"}' ;;`,
    `  ${DOCKER_HUB_KEY}) echo '{"ServerURL":"${DOCKER_HUB_KEY}","Username":"hubuser","Secret":"hubpw"}' ;;`,
    '  broken.example.com) echo "the keychain is locked" >&2; exit 1 ;;',
    '  *) echo "credentials not found in native keychain"; exit 1 ;;',
    'esac',
    '',
  ].join('\n'),
);
chmodSync(path.join(bin, 'docker-credential-fake'), 0o755);

/** Real file reads and a real helper process, with HOME and PATH of the test's own. */
function deps(config?: object, env: NodeJS.ProcessEnv = {}): AuthDeps {
  const home = mkdtempSync(path.join(dir, 'home-'));
  if (config) {
    mkdirSync(path.join(home, '.docker'));
    writeFileSync(path.join(home, '.docker', 'config.json'), JSON.stringify(config));
  }
  return { ...defaultAuthDeps(), home, env: { PATH: `${bin}:${process.env.PATH ?? ''}`, ...env } };
}

async function rejection(p: Promise<unknown>): Promise<FerryError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(FerryError);
  return caught as FerryError;
}

describe('registry names', () => {
  it('normalises config keys to host[:port] and every Docker Hub spelling to docker.io', () => {
    expect(normaliseRegistryHost('https://127.0.0.1:5000/v2/')).toBe('127.0.0.1:5000');
    expect(normaliseRegistryHost('http://Registry.Example.com')).toBe('registry.example.com');
    expect(normaliseRegistryHost('registry.example.com/some/path')).toBe('registry.example.com');
    for (const k of [DOCKER_HUB_KEY, 'index.docker.io', 'docker.io', 'registry-1.docker.io'])
      expect(normaliseRegistryHost(k)).toBe('docker.io');
    expect(serverAddress('docker.io')).toBe(DOCKER_HUB_KEY);
    expect(serverAddress('127.0.0.1:5000')).toBe('127.0.0.1:5000');
  });

  it('parses --registry host[:port]/prefix', () => {
    expect(parseRegistryOption('127.0.0.1:5000/ferry-e2e')).toEqual({ host: '127.0.0.1:5000', prefix: 'ferry-e2e' });
    expect(parseRegistryOption('registry.example.com/a/b_c/')).toEqual({
      host: 'registry.example.com',
      prefix: 'a/b_c',
    });
    expect(parseRegistryOption('localhost:5000')).toEqual({ host: 'localhost:5000', prefix: '' });
    expect(parseRegistryOption('docker.io/me')).toEqual({ host: 'docker.io', prefix: 'me' });
  });

  it('refuses a --registry without a registry host or with an invalid path', () => {
    for (const bad of [
      'myuser',
      'myuser/backups',
      '',
      'reg.example.com/Upper',
      'reg.example.com/a..b',
      'reg.example.com/-x',
      'reg example.com/x',
    ])
      expect(() => parseRegistryOption(bad), bad).toThrow(UsageError);
  });

  it('finds config.json in $DOCKER_CONFIG, else ~/.docker', () => {
    expect(dockerConfigPath({ DOCKER_CONFIG: '/etc/dc' }, '/home/u')).toBe('/etc/dc/config.json');
    expect(dockerConfigPath({}, '/home/u')).toBe('/home/u/.docker/config.json');
  });
});

describe('credentials from the docker config', () => {
  it('is {} (anonymous, still an object) without a config file or an entry', async () => {
    expect(await resolveRegistryAuth('127.0.0.1:5000', {}, deps())).toEqual({});
    expect(
      await resolveRegistryAuth('127.0.0.1:5000', {}, deps({ auths: { 'other.example.com': { auth: b64('u:p') } } })),
    ).toEqual({});
  });

  it('decodes auths[host].auth, splitting user:password at the first colon, with a normalised key', async () => {
    const d = deps({ auths: { 'https://127.0.0.1:5000/v2/': { auth: b64('bob:pa:ss') } } });
    expect(await resolveRegistryAuth('127.0.0.1:5000', {}, d)).toEqual({
      username: 'bob',
      password: 'pa:ss',
      serveraddress: '127.0.0.1:5000',
    });
  });

  it('uses the Docker Hub key https://index.docker.io/v1/ for docker.io', async () => {
    const d = deps({ auths: { [DOCKER_HUB_KEY]: { auth: b64('hub:pw') } } });
    expect(await resolveRegistryAuth('docker.io', {}, d)).toEqual({
      username: 'hub',
      password: 'pw',
      serveraddress: DOCKER_HUB_KEY,
    });
  });

  it('turns an identitytoken into {identitytoken, serveraddress}', async () => {
    const d = deps({ auths: { 'reg.example.com': { auth: b64('x:y'), identitytoken: 'tok-123' } } });
    expect(await resolveRegistryAuth('reg.example.com', {}, d)).toEqual({
      identitytoken: 'tok-123',
      serveraddress: 'reg.example.com',
    });
  });

  it('honours DOCKER_CONFIG', async () => {
    const cfgDir = mkdtempSync(path.join(dir, 'dc-'));
    writeFileSync(
      path.join(cfgDir, 'config.json'),
      JSON.stringify({ auths: { 'reg.example.com': { auth: b64('dc:pw') } } }),
    );
    const d = deps({ auths: { 'reg.example.com': { auth: b64('home:pw') } } }, { DOCKER_CONFIG: cfgDir });
    expect((await resolveRegistryAuth('reg.example.com', {}, d)).username).toBe('dc');
  });

  it('refuses a config that is not JSON, naming the file', async () => {
    const d = deps();
    mkdirSync(path.join(d.home, '.docker'));
    writeFileSync(path.join(d.home, '.docker', 'config.json'), '{nope');
    const e = await rejection(resolveRegistryAuth('reg.example.com', {}, d));
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toContain(path.join(d.home, '.docker', 'config.json'));
  });
});

describe('credential helpers (a fake docker-credential-fake on PATH)', () => {
  it('asks credHelpers[host] before credsStore and auths, with the server URL on stdin', async () => {
    writeFileSync(helperLog, '');
    const d = deps({
      credHelpers: { '127.0.0.1:5000': 'fake' },
      credsStore: 'missing-store',
      auths: { '127.0.0.1:5000': { auth: b64('file:pw') } },
    });
    expect(await resolveRegistryAuth('127.0.0.1:5000', {}, d)).toEqual({
      username: 'alice',
      password: 'pa:ss:word',
      serveraddress: '127.0.0.1:5000',
    });
    expect(readFileSync(helperLog, 'utf8')).toBe('127.0.0.1:5000\n');
  });

  it('uses credsStore before auths', async () => {
    const d = deps({ credsStore: 'fake', auths: { '127.0.0.1:5000': { auth: b64('file:pw') } } });
    expect((await resolveRegistryAuth('127.0.0.1:5000', {}, d)).username).toBe('alice');
  });

  it('passes Docker Hub as https://index.docker.io/v1/ to the helper', async () => {
    const d = deps({ credsStore: 'fake' });
    expect(await resolveRegistryAuth('docker.io', {}, d)).toEqual({
      username: 'hubuser',
      password: 'hubpw',
      serveraddress: DOCKER_HUB_KEY,
    });
  });

  it('reads Username "<token>" as an identity token', async () => {
    const d = deps({ credHelpers: { 'tok.example.com': 'fake' } });
    expect(await resolveRegistryAuth('tok.example.com', {}, d)).toEqual({
      identitytoken: 'id-token-1',
      serveraddress: 'tok.example.com',
    });
  });

  it('"credentials not found" means none: auths, then anonymous', async () => {
    expect(await resolveRegistryAuth('unknown.example.com', {}, deps({ credsStore: 'fake' }))).toEqual({});
    const d = deps({ credsStore: 'fake', auths: { 'unknown.example.com': { auth: b64('file:pw') } } });
    expect((await resolveRegistryAuth('unknown.example.com', {}, d)).username).toBe('file');
  });

  it('a failing helper is an error that says which helper failed and why', async () => {
    const e = await rejection(resolveRegistryAuth('broken.example.com', {}, deps({ credsStore: 'fake' })));
    expect(e).toBeInstanceOf(EngineError);
    expect(e.message).toContain('docker-credential-fake');
    expect(e.message).toContain('the keychain is locked');
  });

  it('a helper that is not installed is an error with a hint', async () => {
    const e = await rejection(resolveRegistryAuth('reg.example.com', {}, deps({ credsStore: 'nosuch' })));
    expect(e.message).toContain('docker-credential-nosuch');
    expect(e.hint).toMatch(/install docker-credential-nosuch/);
  });

  it('refuses a helper name that is not a plain name', async () => {
    const e = await rejection(resolveRegistryAuth('reg.example.com', {}, deps({ credsStore: '../../bin/sh' })));
    expect(e).toBeInstanceOf(UsageError);
  });
});

describe('--registry-auth-file', () => {
  const file = (name: string, content: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, content);
    return p;
  };

  it('takes {username, password}, ignoring the docker config', async () => {
    const f = file('up.json', JSON.stringify({ username: 'ci', password: 's3cr:et' }));
    const d = deps({ auths: { 'reg.example.com': { auth: b64('home:pw') } } });
    expect(await resolveRegistryAuth('reg.example.com', { authFile: f }, d)).toEqual({
      username: 'ci',
      password: 's3cr:et',
      serveraddress: 'reg.example.com',
    });
  });

  it('takes a docker config.json, helpers included', async () => {
    const f = file(
      'cfg.json',
      JSON.stringify({
        credHelpers: { '127.0.0.1:5000': 'fake' },
        auths: { 'reg.example.com': { auth: b64('cfg:pw') } },
      }),
    );
    expect((await resolveRegistryAuth('127.0.0.1:5000', { authFile: f }, deps())).username).toBe('alice');
    expect((await resolveRegistryAuth('reg.example.com', { authFile: f }, deps())).username).toBe('cfg');
  });

  it('refuses a missing file, bad JSON and an object of neither shape', async () => {
    expect(
      await rejection(resolveRegistryAuth('r.example.com', { authFile: path.join(dir, 'nope.json') }, deps())),
    ).toBeInstanceOf(UsageError);
    expect(
      await rejection(resolveRegistryAuth('r.example.com', { authFile: file('bad.json', '{x') }, deps())),
    ).toBeInstanceOf(UsageError);
    const e = await rejection(
      resolveRegistryAuth(
        'r.example.com',
        { authFile: file('odd.json', JSON.stringify({ user: 'x', password: 'hunter2' })) },
        deps(),
      ),
    );
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).not.toContain('hunter2');
  });
});

describe('describeAuth', () => {
  it('says who, never the secret', () => {
    expect(describeAuth({})).toBe('anonymously');
    expect(describeAuth({ username: 'ci', password: 'hunter2', serveraddress: 'r' })).toBe('as ci');
    expect(describeAuth({ identitytoken: 'tok-secret', serveraddress: 'r' })).toBe('with an identity token');
    for (const a of [{ username: 'ci', password: 'hunter2' }, { identitytoken: 'tok-secret' }])
      expect(describeAuth(a)).not.toMatch(/hunter2|tok-secret/);
  });
});
