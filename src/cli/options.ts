/** Argument parsers for commander: they throw InvalidArgumentError, which commander reports as usage errors. */
import { InvalidArgumentError } from 'commander';
import { CODECS, hasZstd, type Codec } from '../bundle/codec.js';

export function choice<T extends string>(values: readonly T[]) {
  return (v: string): T => {
    if (!values.includes(v as T)) throw new InvalidArgumentError(`expected one of: ${values.join(', ')}`);
    return v as T;
  };
}

export function codecOption(v: string): Codec {
  const c = choice(CODECS)(v);
  if (c === 'zstd' && !hasZstd()) throw new InvalidArgumentError('zstd needs the zstd command (apt-get install zstd); or use gzip');
  return c;
}
