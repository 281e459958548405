/**
 * dockerode, loaded without gRPC. dockerode requires @grpc/grpc-js and @grpc/proto-loader when it
 * loads, for BuildKit sessions (`docker build` with a session), which ferry never opens; they cost
 * about 17 MB of resident memory in every run. They are replaced by stand-ins that fail loudly if
 * anything ever uses them. Only engine.ts imports this module.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type DockerType from 'dockerode';
import '../ssh/ssh2.js'; // before docker-modem requires ssh2: see ssh2.ts

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
        throw new Error(`internal: ${name}.${String(prop)} used, but ferry loads dockerode without gRPC (BuildKit sessions are not supported)`);
      },
    },
  );
  require.cache[file] = { id: file, filename: file, loaded: true, exports: unused, children: [], paths: [], path: path.dirname(file) } as unknown as NodeJS.Module;
}

const Docker = require('dockerode') as typeof DockerType;
export default Docker;
