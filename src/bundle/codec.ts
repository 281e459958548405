/**
 * Member compression. zstd through the zstd CLI (Node 20 has no zstd of its own), gzip through
 * zlib, or none. Every codec is a streaming Duplex; a codec process that fails fails the stream.
 */
import { spawn, spawnSync } from 'node:child_process';
import { Duplex, PassThrough } from 'node:stream';
import zlib from 'node:zlib';
import { BundleError } from '../errors.js';
import { gatedOutput } from '../util/gated-output.js';
import { keepText } from '../util/keep-text.js';

export type Codec = 'zstd' | 'gzip' | 'none';
export const CODECS: readonly Codec[] = ['zstd', 'gzip', 'none'];

export function codecExtension(c: Codec): string {
  return c === 'zstd' ? '.zst' : c === 'gzip' ? '.gz' : '';
}

let zstdAvailable: boolean | undefined;
export function hasZstd(): boolean {
  if (zstdAvailable === undefined) {
    try {
      zstdAvailable = spawnSync('zstd', ['--version'], { stdio: 'ignore' }).status === 0;
    } catch {
      zstdAvailable = false;
    }
  }
  return zstdAvailable;
}

/** The codec used when the user does not choose: zstd where available, else gzip. */
export function defaultCodec(): Codec {
  return hasZstd() ? 'zstd' : 'gzip';
}

/** A child process as a Duplex filter whose readable side fails if the process exits non-zero. */
function processFilter(cmd: string, args: string[], what: string): Duplex {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr = keepText(child.stderr);
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const exit = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  const { stream: out } = gatedOutput(
    child.stdout,
    exit,
    (code) =>
      code === 0 ? undefined : new BundleError(`${what} failed: ${stderr().trim() || `${cmd} exited with ${code}`}`),
    kill,
  );
  child.on('error', (err) => out.destroy(err));
  const d = Duplex.from({ writable: child.stdin, readable: out });
  // An early end of either side must not leave the process behind.
  d.on('close', kill);
  child.stdin.on('error', () => {}); // EPIPE when the process died: surfaced via exit status
  return d;
}

export function compressor(c: Codec): Duplex {
  switch (c) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    case 'gzip':
      return zlib.createGzip({ level: 1, chunkSize: 1 << 16 });
    case 'zstd':
      return processFilter('zstd', ['-q', '-c', '-3', '-T0'], 'zstd compression');
  }
}

export function decompressor(c: Codec, member: string): Duplex {
  switch (c) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    case 'gzip':
      return zlib.createGunzip({ chunkSize: 1 << 16 });
    case 'zstd':
      if (!hasZstd())
        throw new BundleError(`member ${member} is zstd-compressed and the zstd command is not installed`, {
          hint: 'apt-get install zstd',
          member,
        });
      return processFilter('zstd', ['-q', '-d', '-c'], `zstd decompression of ${member}`);
    default:
      throw new BundleError(`member ${member} uses an unknown codec "${String(c)}"`, {
        member,
        hint: 'this bundle was written by a newer ferry, or is damaged',
      });
  }
}
