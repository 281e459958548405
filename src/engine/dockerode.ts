/**
 * dockerode, loaded without gRPC. A patch of dockerode's and docker-modem's internals, kept here
 * and nowhere else.
 *
 * What it patches: dockerode's lib/session.js requires @grpc/grpc-js and @grpc/proto-loader when
 * dockerode loads, for BuildKit sessions (`docker build` with a session), which ferry never opens;
 * docker-modem's modem.js requires its SSH transport (./ssh.js), which loads ssh2. Before
 * dockerode is required, require.cache gets stand-ins at the paths those requires resolve to:
 * objects that fail loudly if anything ever uses them. ssh2 is loaded only for ssh://, by
 * ssh/client.ts. Only engine.ts imports this module.
 *
 * Why: loading gRPC and ssh2 costs resident memory and start-up time in every run, for code ferry
 * never calls (the gain: see docs/performance.md, ssh2 and dockerode).
 *
 * Guarded by test/unit/dockerode.test.ts ("what the dockerode patch relies on"): it fails if
 * dockerode or docker-modem no longer require those modules, require them at other paths (the
 * stand-ins then silently unused), or anything of the real gRPC or ssh2 gets loaded.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Agent } from 'node:http';
import type DockerType from 'dockerode';

declare module 'dockerode' {
  interface DockerOptions {
    /** docker-modem's own option (an HTTP agent for every request), which @types/dockerode leaves out. */
    agent?: Agent;
  }
}

const require = createRequire(import.meta.url);
const dockerodeDir = path.dirname(require.resolve('dockerode'));

/** Put `exports` in require's cache as the module at `file`, so that loading it yields them. */
function standIn(file: string, exports: unknown): void {
  // A cache entry needs only what require reads of it; NodeJS.Module's other members go unused.
  require.cache[file] = {
    id: file,
    filename: file,
    loaded: true,
    exports,
    children: [],
    paths: [],
    path: path.dirname(file),
  } as unknown as NodeJS.Module;
}

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
  standIn(file, unused);
}

// docker-modem's own SSH transport (protocol 'ssh'), which loads ssh2 at start-up: ferry reaches
// ssh:// engines through its own connection (engine/connect.ts), so this is never used.
{
  const file = path.join(path.dirname(require.resolve('docker-modem', { paths: [dockerodeDir] })), 'ssh.js');
  const unused = () => {
    throw new Error("internal: docker-modem's SSH transport used, but ferry opens SSH connections itself");
  };
  standIn(file, unused);
}

const Docker = require('dockerode') as typeof DockerType;
export default Docker;
