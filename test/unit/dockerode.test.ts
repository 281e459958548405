import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import Docker from '../../src/engine/dockerode.js';

const require = createRequire(import.meta.url);

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
