import { UsageError } from '../errors.js';
import { LocalTransport } from './local.js';
import { StreamTransport } from './stream.js';
import type { Transport } from './transport.js';

/** A bundle location from the command line: `-`, a path, or (issue 3) ssh://. */
export function resolveTransport(target: string): Transport {
  if (target === '-') return new StreamTransport();
  if (/^[a-z]+:\/\//.test(target)) {
    throw new UsageError(`bundle location ${target}: remote stores are not supported yet`, 'write to a local path or to - (stdout) and copy it');
  }
  return new LocalTransport(target);
}
