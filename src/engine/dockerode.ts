/**
 * dockerode, loaded without gRPC. dockerode requires @grpc/grpc-js and @grpc/proto-loader when it
 * loads, for BuildKit sessions (`docker build` with a session), which ferry never opens; they cost
 * resident memory and start-up time in every run (docs/performance.md, ssh2 and dockerode). They
 * are replaced by stand-ins that fail loudly if
 * anything ever uses them; so is docker-modem's SSH transport (ssh2 is loaded only for ssh://,
 * by ssh/client.ts). Only engine.ts imports this module.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type DockerType from 'dockerode';

const require = createRequire(import.meta.url);
const dockerodeDir = path.dirname(require.resolve('dockerode'));

for (const name of ['@grpc/grpc-js', '@grpc/proto-loader']) {
  let file: string;
  try {
    file = require.resolve(name, { paths: [dockerodeDir] });
  } catch {
    continue; // not installed: dockerode would fail to load anyway, and will say why
  }
  const unused = new Proxy(
    {},
    {
      get(_t, prop) {
        if (prop === '__esModule' || typeof prop === 'symbol') return undefined;
        throw new Error(
          `internal: ${name}.${String(prop)} used, but ferry loads dockerode without gRPC (BuildKit sessions are not supported)`,
        );
      },
    },
  );
  require.cache[file] = {
    id: file,
    filename: file,
    loaded: true,
    exports: unused,
    children: [],
    paths: [],
    path: path.dirname(file),
  } as unknown as NodeJS.Module;
}

// docker-modem's own SSH transport (protocol 'ssh'), which loads ssh2 at start-up: ferry reaches
// ssh:// engines through its own connection (engine/connect.ts), so this is never used.
{
  const file = path.join(path.dirname(require.resolve('docker-modem', { paths: [dockerodeDir] })), 'ssh.js');
  const unused = () => {
    throw new Error("internal: docker-modem's SSH transport used, but ferry opens SSH connections itself");
  };
  require.cache[file] = {
    id: file,
    filename: file,
    loaded: true,
    exports: unused,
    children: [],
    paths: [],
    path: path.dirname(file),
  } as unknown as NodeJS.Module;
}

const Docker = require('dockerode') as typeof DockerType;
export default Docker;
