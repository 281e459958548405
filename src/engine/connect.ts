/** Open an Engine for an engine address from the command line / environment. */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { SshPool } from '../ssh/client.js';
import { UsageError } from '../errors.js';
import { DockerEngine, type Engine } from './engine.js';
import { createRunIdentity, type RunIdentity } from './run.js';
import { localShell, sshShell } from '../hostaccess/shell.js';
import { parseEngineUrl, resolveEndpoint, type Endpoint, type EndpointEnv } from './endpoint.js';

export interface EngineDeps {
  env?: EndpointEnv;
  ssh?: SshPool;
  /** This run's identity; pass the same one to every engine a run opens (default: a new one). */
  run?: RunIdentity;
}

/** An http.Agent whose every connection is a channel on one SSH connection to the remote socket. */
function sshAgent(open: () => Promise<Duplex>): http.Agent {
  const agent = new http.Agent({ keepAlive: false, maxSockets: 16 });
  agent.createConnection = (_o: unknown, cb: (err: Error | null, s?: Duplex) => void) => {
    open().then(
      (ch) => {
        // http calls these on real sockets; an ssh2 channel does not have them.
        const c = ch as Duplex & Record<string, unknown>;
        for (const m of ['setNoDelay', 'setKeepAlive', 'ref', 'unref']) if (typeof c[m] !== 'function') c[m] = () => c;
        if (typeof c.setTimeout !== 'function') c.setTimeout = () => c;
        cb(null, ch);
      },
      (err: Error) => cb(err),
    );
    return undefined;
  };
  return agent;
}

export async function openEndpoint(ep: Endpoint, deps: EngineDeps = {}): Promise<Engine> {
  const run = deps.run ?? createRunIdentity();
  if (ep.kind !== 'ssh') {
    return DockerEngine.connect(ep, ep.kind === 'unix' ? { host: localShell, run } : { run });
  }
  if (!deps.ssh) throw new UsageError(`engine ${ep.source}: ssh:// engines need an SSH session`);
  const pool = deps.ssh;
  const target = { user: ep.user, host: ep.host, port: ep.port };
  await pool.get(target); // connect (and check the host key) now, not on the first request
  const socket = ep.socketPath ?? '/var/run/docker.sock';
  // A request after the connection dropped gets a new connection (one retry), so that a rollback
  // can still clean up the remote engine.
  const open = async () => {
    const conn = await pool.get(target);
    try {
      return await conn.openSocket(socket);
    } catch (err) {
      if (!conn.closed) throw err;
      return (await pool.get(target)).openSocket(socket);
    }
  };
  return DockerEngine.connect(ep, {
    run,
    agent: sshAgent(open),
    prepareCleanup: () => pool.allowReconnect(),
    // The engine's own socket path on that host: its volumes' directories are there too.
    host: sshShell(pool, target, `ssh://${ep.host}`),
  });
}

export async function openEngine(hostFlag: string | undefined, deps: EngineDeps = {}): Promise<Engine> {
  return openEndpoint(resolveEndpoint(hostFlag, deps.env ?? process.env), deps);
}

export { parseEngineUrl };
