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
});
