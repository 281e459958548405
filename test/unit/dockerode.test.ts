import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import Docker from '../../src/engine/dockerode.js';

const require = createRequire(import.meta.url);
const dockerodeDir = path.dirname(require.resolve('dockerode'));
const modemDir = path.dirname(require.resolve('docker-modem', { paths: [dockerodeDir] }));
const standIns = ['@grpc/grpc-js', '@grpc/proto-loader'].map((n) => require.resolve(n, { paths: [dockerodeDir] }));

/** The modules in require.cache that required `file` (Node lists a cached module among its requirers' children). */
function requirersOf(file: string): string[] {
  const m = require.cache[file];
  return Object.values(require.cache)
    .filter((p) => p?.children.includes(m!))
    .map((p) => p!.filename);
}

/** The .js files directly in `dir` whose source requires `name`. */
function sourcesRequiring(dir: string, name: string): string[] {
  const re = new RegExp(`require\\(\\s*['"]${name.replace(/[/.]/g, '\\$&')}(\\.js)?['"]\\s*\\)`);
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.js') && re.test(fs.readFileSync(path.join(dir, f), 'utf8')))
    .map((f) => path.join(dir, f));
}

describe('dockerode without gRPC', () => {
  it('constructs a client, and gRPC (BuildKit sessions) is a stand-in that fails loudly if used', () => {
    const d = new Docker({ socketPath: '/nonexistent.sock' });
    expect(typeof d.listContainers).toBe('function');
    const grpcFile = require.resolve('@grpc/grpc-js', { paths: [path.dirname(require.resolve('dockerode'))] });
    const grpc = require.cache[grpcFile]?.exports as Record<string, unknown>;
    expect(grpc).toBeDefined();
    expect(() => grpc.Server).toThrow(/without gRPC/);
  });

  it("does not load ssh2: docker-modem's SSH transport is a stand-in too (ssh2 loads only for ssh://)", () => {
    const modemDir = path.dirname(
      require.resolve('docker-modem', { paths: [path.dirname(require.resolve('dockerode'))] }),
    );
    const sshFile = path.join(modemDir, 'ssh.js');
    expect(typeof require.cache[sshFile]?.exports).toBe('function');
    expect(() => (require.cache[sshFile]!.exports as () => void)()).toThrow(/opens SSH connections itself/);
    const ssh2File = require.resolve('ssh2');
    expect(require.cache[ssh2File]).toBeUndefined();
  });
});

/**
 * The guard of the patch in src/engine/dockerode.ts: it fails when dockerode or docker-modem
 * change under it, so that the patch is either fixed or removed, never silently dead.
 */
describe('what the dockerode patch relies on', () => {
  it('dockerode still requires both gRPC modules when it loads, and gets the stand-ins', () => {
    // Its source still names them (else the stand-ins are dead code: remove them).
    for (const name of ['@grpc/grpc-js', '@grpc/proto-loader'])
      expect(sourcesRequiring(dockerodeDir, name), name).not.toEqual([]);
    // Loading dockerode required them at the very paths the stand-ins sit at: a stand-in nobody
    // required means dockerode resolves gRPC elsewhere now (and loads the real one).
    for (const file of standIns) {
      const by = requirersOf(file);
      expect(by.length, file).toBeGreaterThan(0);
      for (const f of by) expect(f.startsWith(dockerodeDir + path.sep), f).toBe(true);
    }
  });

  it('leaves the real gRPC unloaded: nothing of @grpc/ is in require.cache but the stand-ins', () => {
    const grpcFiles = Object.keys(require.cache).filter((f) => f.includes(`${path.sep}@grpc${path.sep}`));
    expect(grpcFiles.sort()).toEqual([...standIns].sort());
  });

  it("docker-modem still requires './ssh' when it loads, and gets the stand-in; no ssh2 file is loaded", () => {
    const sshFile = path.join(modemDir, 'ssh.js');
    expect(sourcesRequiring(modemDir, './ssh')).toContain(path.join(modemDir, 'modem.js'));
    expect(requirersOf(sshFile)).toContain(path.join(modemDir, 'modem.js'));
    const ssh2Dir = path.dirname(path.dirname(require.resolve('ssh2'))); // node_modules/ssh2
    expect(Object.keys(require.cache).filter((f) => f.startsWith(ssh2Dir + path.sep))).toEqual([]);
  });
});
