import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  describeEndpoint,
  parseEngineUrl,
  resolveEndpoint,
  type Endpoint,
  type EndpointEnv,
} from '../../src/engine/endpoint.js';
import { EXIT, UsageError } from '../../src/errors.js';

function usageError(fn: () => unknown): UsageError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a UsageError').toBeInstanceOf(UsageError);
  expect((caught as UsageError).exitCode).toBe(EXIT.USAGE);
  expect((caught as UsageError).exitCode).toBe(2);
  return caught as UsageError;
}

describe('parseEngineUrl', () => {
  it('parses unix sockets', () => {
    expect(parseEngineUrl('unix:///var/run/docker.sock')).toEqual({
      kind: 'unix',
      socketPath: '/var/run/docker.sock',
      source: 'unix:///var/run/docker.sock',
    });
    expect(parseEngineUrl('unix:///run/user/1000/docker.sock', { source: '-H x' })).toEqual({
      kind: 'unix',
      socketPath: '/run/user/1000/docker.sock',
      source: '-H x',
    });
  });

  it('takes a bare absolute path as a unix socket', () => {
    expect(parseEngineUrl('/tmp/d.sock')).toEqual({ kind: 'unix', socketPath: '/tmp/d.sock', source: '/tmp/d.sock' });
  });

  it('parses tcp with and without a port (2375 default)', () => {
    expect(parseEngineUrl('tcp://10.0.0.5:2380')).toEqual({
      kind: 'tcp',
      host: '10.0.0.5',
      port: 2380,
      tls: undefined,
      source: 'tcp://10.0.0.5:2380',
    });
    expect(parseEngineUrl('tcp://docker.example.com')).toMatchObject({
      kind: 'tcp',
      host: 'docker.example.com',
      port: 2375,
      tls: undefined,
    });
    expect(parseEngineUrl('http://docker.example.com/')).toMatchObject({
      kind: 'tcp',
      host: 'docker.example.com',
      port: 2375,
      tls: undefined,
    });
  });

  it('defaults to 2376 with TLS', () => {
    expect(parseEngineUrl('https://docker.example.com')).toMatchObject({
      kind: 'tcp',
      port: 2376,
      tls: { verify: true },
    });
    expect(parseEngineUrl('tcp://docker.example.com', { tlsVerify: true })).toMatchObject({
      kind: 'tcp',
      port: 2376,
      tls: { verify: true },
    });
    expect(parseEngineUrl('tcp://docker.example.com:3000', { tlsVerify: true })).toMatchObject({ port: 3000 });
  });

  it('parses ssh URLs: user, host, port and socket path', () => {
    expect(parseEngineUrl('ssh://deploy@build.example.com:2222/run/docker.sock')).toEqual({
      kind: 'ssh',
      user: 'deploy',
      host: 'build.example.com',
      port: 2222,
      socketPath: '/run/docker.sock',
      source: 'ssh://deploy@build.example.com:2222/run/docker.sock',
    });
    expect(parseEngineUrl('ssh://build.example.com')).toEqual({
      kind: 'ssh',
      user: undefined,
      host: 'build.example.com',
      port: undefined,
      socketPath: undefined,
      source: 'ssh://build.example.com',
    });
    expect(parseEngineUrl('ssh://a%40b@host/')).toMatchObject({ user: 'a@b', host: 'host', socketPath: undefined });
  });

  it.each(['docker.sock', 'localhost:2375', 'tcp:/host', 'TCP://host'])('rejects the unparsable address %s', (url) => {
    const e = usageError(() => parseEngineUrl(url));
    expect(e.message).toContain(`cannot parse engine address "${url}"`);
  });

  it('rejects unix:// without a path', () => {
    expect(usageError(() => parseEngineUrl('unix://')).message).toContain('has no socket path');
  });

  it.each(['npipe:////./pipe/docker_engine', 'fd://', 'ftp://host'])('rejects the unsupported scheme of %s', (url) => {
    expect(usageError(() => parseEngineUrl(url)).message).toContain('unsupported engine address scheme');
  });

  it.each(['tcp://', 'tcp://host:notaport', 'tcp://host:99999', 'ssh://', 'ssh://user@', 'ssh://host:abc'])(
    'rejects the malformed address %s as a usage error',
    (url) => {
      const e = usageError(() => parseEngineUrl(url));
      expect(e.message).toMatch(/^(cannot parse engine address ".*"|engine address ".*" has no host)/);
      expect(e.message).toContain(`"${url}"`);
      expect(e.hint).toContain('tcp://host:port');
    },
  );
});

describe('resolveEndpoint', () => {
  let dir: string;
  let configDir: string;
  let home: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-endpoint-'));
    configDir = path.join(dir, 'docker-config');
    home = path.join(dir, 'home');
    mkdirSync(configDir, { recursive: true });
    mkdirSync(home, { recursive: true });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const ctxId = (name: string) => createHash('sha256').update(name).digest('hex');

  function addContext(
    name: string,
    host: string | undefined,
    opts: { tls?: string[]; skipTLSVerify?: boolean; base?: string } = {},
  ) {
    const base = opts.base ?? configDir;
    const metaDir = path.join(base, 'contexts', 'meta', ctxId(name));
    mkdirSync(metaDir, { recursive: true });
    const docker: Record<string, unknown> = { SkipTLSVerify: opts.skipTLSVerify ?? false };
    if (host !== undefined) docker.Host = host;
    writeFileSync(
      path.join(metaDir, 'meta.json'),
      JSON.stringify({ Name: name, Metadata: { Description: 'test' }, Endpoints: { docker } }),
    );
    if (opts.tls) {
      const tlsDir = path.join(base, 'contexts', 'tls', ctxId(name), 'docker');
      mkdirSync(tlsDir, { recursive: true });
      for (const f of opts.tls) writeFileSync(path.join(tlsDir, f), `${name}:${f}`);
    }
  }

  function setCurrent(name: string, base = configDir) {
    writeFileSync(path.join(base, 'config.json'), JSON.stringify({ auths: {}, currentContext: name }));
  }

  const env = (e: EndpointEnv = {}): EndpointEnv => ({ DOCKER_CONFIG: configDir, HOME: home, ...e });

  it('uses the default socket when nothing is set', () => {
    expect(resolveEndpoint(undefined, env())).toEqual({
      kind: 'unix',
      socketPath: '/var/run/docker.sock',
      source: 'default socket',
    });
  });

  it('uses the default socket for the "default" context', () => {
    setCurrent('default');
    expect(resolveEndpoint(undefined, env())).toMatchObject({
      socketPath: '/var/run/docker.sock',
      source: 'default socket',
    });
    expect(resolveEndpoint(undefined, env({ DOCKER_CONTEXT: 'default' }))).toMatchObject({ source: 'default socket' });
  });

  it('reads the current context from config.json', () => {
    addContext('remote', 'tcp://remote.example.com:2375');
    setCurrent('remote');
    expect(resolveEndpoint(undefined, env())).toEqual({
      kind: 'tcp',
      host: 'remote.example.com',
      port: 2375,
      tls: undefined,
      source: 'docker context remote',
    });
  });

  it('finds config.json under $HOME/.docker without DOCKER_CONFIG', () => {
    const base = path.join(home, '.docker');
    mkdirSync(base, { recursive: true });
    addContext('homectx', 'unix:///home/u/docker.sock', { base });
    setCurrent('homectx', base);
    expect(resolveEndpoint(undefined, { HOME: home })).toEqual({
      kind: 'unix',
      socketPath: '/home/u/docker.sock',
      source: 'docker context homectx',
    });
  });

  it('DOCKER_CONTEXT beats config.json currentContext', () => {
    addContext('remote', 'tcp://remote.example.com:2375');
    addContext('builder', 'ssh://ci@builder.example.com');
    setCurrent('remote');
    expect(resolveEndpoint(undefined, env({ DOCKER_CONTEXT: 'builder' }))).toMatchObject({
      kind: 'ssh',
      user: 'ci',
      host: 'builder.example.com',
      source: 'docker context builder',
    });
  });

  it('DOCKER_HOST beats DOCKER_CONTEXT', () => {
    addContext('builder', 'ssh://ci@builder.example.com');
    setCurrent('builder');
    expect(resolveEndpoint(undefined, env({ DOCKER_CONTEXT: 'builder', DOCKER_HOST: 'tcp://envhost:1234' }))).toEqual({
      kind: 'tcp',
      host: 'envhost',
      port: 1234,
      tls: undefined,
      source: 'DOCKER_HOST=tcp://envhost:1234',
    });
  });

  it('-H beats DOCKER_HOST', () => {
    addContext('builder', 'ssh://ci@builder.example.com');
    const ep = resolveEndpoint(
      'unix:///custom.sock',
      env({ DOCKER_CONTEXT: 'builder', DOCKER_HOST: 'tcp://envhost:1234' }),
    );
    expect(ep).toEqual({ kind: 'unix', socketPath: '/custom.sock', source: '-H unix:///custom.sock' });
  });

  it('an unknown context is a usage error naming it', () => {
    const e = usageError(() => resolveEndpoint(undefined, env({ DOCKER_CONTEXT: 'nosuch' })));
    expect(e.message).toContain('docker context "nosuch" was not found');
    expect(e.message).toContain(path.join(configDir, 'contexts'));
  });

  it('a context without a docker host is a usage error', () => {
    addContext('empty', undefined);
    usageError(() => resolveEndpoint(undefined, env({ DOCKER_CONTEXT: 'empty' })));
  });

  it('a damaged config.json falls back to the default socket', () => {
    writeFileSync(path.join(configDir, 'config.json'), '{not json');
    expect(resolveEndpoint(undefined, env())).toMatchObject({ kind: 'unix', source: 'default socket' });
  });

  it('a context with TLS files uses them, verifying unless told to skip', () => {
    addContext('secure', 'tcp://secure.example.com', { tls: ['ca.pem', 'cert.pem', 'key.pem'] });
    const ep = resolveEndpoint(undefined, env({ DOCKER_CONTEXT: 'secure' })) as Extract<Endpoint, { kind: 'tcp' }>;
    expect(ep.port).toBe(2376);
    expect(ep.tls?.verify).toBe(true);
    expect(ep.tls?.ca?.toString()).toBe('secure:ca.pem');
    expect(ep.tls?.cert?.toString()).toBe('secure:cert.pem');
    expect(ep.tls?.key?.toString()).toBe('secure:key.pem');

    addContext('insecure', 'tcp://insecure.example.com:2376', {
      tls: ['ca.pem', 'cert.pem', 'key.pem'],
      skipTLSVerify: true,
    });
    const ep2 = resolveEndpoint(undefined, env({ DOCKER_CONTEXT: 'insecure' })) as Extract<Endpoint, { kind: 'tcp' }>;
    expect(ep2.tls?.verify).toBe(false);
    expect(ep2.tls?.ca?.toString()).toBe('insecure:ca.pem');
  });

  it('DOCKER_TLS_VERIFY with DOCKER_CERT_PATH reads the certificates, port 2376', () => {
    const certs = path.join(dir, 'certs');
    mkdirSync(certs);
    for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(path.join(certs, f), `certs:${f}`);
    const ep = resolveEndpoint(
      undefined,
      env({ DOCKER_HOST: 'tcp://tls.example.com', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs }),
    ) as Extract<Endpoint, { kind: 'tcp' }>;
    expect(ep).toMatchObject({ kind: 'tcp', host: 'tls.example.com', port: 2376 });
    expect(ep.tls?.verify).toBe(true);
    expect(ep.tls?.ca?.toString()).toBe('certs:ca.pem');
    expect(ep.tls?.key?.toString()).toBe('certs:key.pem');
  });

  it('DOCKER_TLS_VERIFY without DOCKER_CERT_PATH looks in the docker config dir', () => {
    for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(path.join(configDir, f), `cfg:${f}`);
    const ep = resolveEndpoint('tcp://h', env({ DOCKER_TLS_VERIFY: '1' })) as Extract<Endpoint, { kind: 'tcp' }>;
    expect(ep.port).toBe(2376);
    expect(ep.tls?.cert?.toString()).toBe('cfg:cert.pem');
  });

  it('DOCKER_TLS_VERIFY with missing certificate files is a usage error', () => {
    const e = usageError(() =>
      resolveEndpoint(
        undefined,
        env({ DOCKER_HOST: 'tcp://h', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: path.join(dir, 'nope') }),
      ),
    );
    expect(e.message).toContain(path.join(dir, 'nope', 'ca.pem'));
  });

  it('DOCKER_TLS_VERIFY empty or 0 means no TLS', () => {
    for (const v of ['', '0']) {
      expect(resolveEndpoint(undefined, env({ DOCKER_HOST: 'tcp://h', DOCKER_TLS_VERIFY: v }))).toMatchObject({
        port: 2375,
        tls: undefined,
      });
    }
  });

  it('propagates parse errors of DOCKER_HOST as usage errors', () => {
    usageError(() => resolveEndpoint(undefined, env({ DOCKER_HOST: 'localhost:2375' })));
    usageError(() => resolveEndpoint('npipe:////./pipe/docker_engine', env()));
  });
});

describe('describeEndpoint', () => {
  it('prints each kind', () => {
    expect(describeEndpoint({ kind: 'unix', socketPath: '/var/run/docker.sock', source: 'x' })).toBe(
      'unix:///var/run/docker.sock',
    );
    expect(describeEndpoint({ kind: 'tcp', host: 'h', port: 2376, tls: { verify: true }, source: 'x' })).toBe(
      'tcp://h:2376 (TLS)',
    );
    expect(describeEndpoint({ kind: 'tcp', host: 'h', port: 2375, source: 'x' })).toBe('tcp://h:2375');
    expect(describeEndpoint({ kind: 'ssh', user: 'u', host: 'h', port: 22, socketPath: '/s.sock', source: 'x' })).toBe(
      'ssh://u@h:22/s.sock',
    );
    expect(describeEndpoint({ kind: 'ssh', host: 'h', source: 'x' })).toBe('ssh://h');
  });
});
