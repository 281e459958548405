import { UsageError } from '../errors.js';
import type { SshPool } from '../ssh/client.js';
import { LocalTransport } from './local.js';
import { SftpTransport } from './sftp.js';
import { StreamTransport } from './stream.js';
import type { Transport } from './transport.js';

/** A bundle location from the command line: `-` (stdout/stdin), a local path, or ssh://host/path. */
export function resolveTransport(target: string, deps: { ssh?: () => SshPool } = {}): Transport {
  if (target === '-') return new StreamTransport();
  if (target.startsWith('ssh://')) {
    if (!deps.ssh) throw new UsageError(`${target}: ssh stores need an SSH session`);
    return new SftpTransport(target, deps.ssh());
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target))
    throw new UsageError(
      `unsupported bundle location ${target}`,
      'use a local path, - for stdout/stdin, or ssh://host/path',
    );
  return new LocalTransport(target);
}
