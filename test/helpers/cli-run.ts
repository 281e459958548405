import { PassThrough } from 'node:stream';
import { main } from '../../src/cli/main.js';

process.setMaxListeners(100); // main() adds a SIGPIPE listener that stays, as in a real run

/** ferry's main() in this process, its stdout and stderr captured. */
export async function runMain(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c) => (out += c));
  stderr.on('data', (c) => (err += c));
  const code = await main(['node', 'ferry', ...args], {
    stdout: stdout as unknown as NodeJS.WriteStream,
    stderr: stderr as unknown as NodeJS.WriteStream,
  });
  return { code, stdout: out, stderr: err };
}
