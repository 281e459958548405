/** Open an Engine for an engine address from the command line / environment. */
import { UsageError } from '../errors.js';
import { Engine } from './engine.js';
import { resolveEndpoint, type EndpointEnv } from './endpoint.js';

export async function openEngine(hostFlag: string | undefined, env: EndpointEnv = process.env): Promise<Engine> {
  const ep = resolveEndpoint(hostFlag, env);
  if (ep.kind === 'ssh')
    throw new UsageError(`engine ${ep.source}: ssh:// engines are not supported yet`, 'run ferry on that host, or expose its engine over tcp:// with TLS');
  return Engine.connect(ep);
}
