/**
 * Commands on the engine's host: this machine for an engine on a unix socket, the SSH host for
 * an ssh:// engine (an exec channel on the connection the engine API already uses). ferry runs
 * only fixed programs here (stat, tar, id), with arguments it built, never a user's string.
 */
import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { EngineError } from '../errors.js';
import { keepText } from '../util/keep-text.js';
import type { SshPool, SshTarget } from '../ssh/client.js';

export interface HostProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Exit status; null when killed by a signal (or the connection dropped). */
  exit: Promise<number | null>;
  kill(): void;
  /** Why the program's channel went away (the SSH connection dropped), if it did. */
  lost(): Error | undefined;
}

export interface HostShell {
  /** `this host` or `ssh://host`, for messages. */
  readonly where: string;
  run(argv: string[]): Promise<HostProcess>;
}

/** One argument for a POSIX shell (an SSH exec is a command line). Pure; unit-tested. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export const localShell: HostShell = {
  where: 'this host',
  async run(argv) {
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const exit = new Promise<number | null>((resolve) => {
      c.on('error', () => resolve(127));
      c.on('close', (code) => resolve(code));
    });
    c.stdin.on('error', () => {}); // EPIPE when the program stops reading: its exit status says why
    return {
      stdin: c.stdin,
      stdout: c.stdout,
      stderr: c.stderr,
      exit,
      kill: () => void c.kill('SIGTERM'),
      lost: () => undefined,
    };
  },
};

export function sshShell(pool: SshPool, target: SshTarget, where: string): HostShell {
  return {
    where,
    async run(argv) {
      const conn = await pool.get(target);
      const ch = await conn.exec(argv.map(shellQuote).join(' '));
      let lostWith: Error | undefined;
      ch.on('error', (err: Error) => (lostWith ??= err));
      return {
        lost: () =>
          lostWith ??
          (conn.closed
            ? new EngineError(`the ssh connection to ${where} was lost`, {
                hint: 'check the network and the host, then retry',
              })
            : undefined),
        stdin: ch,
        stdout: ch,
        stderr: ch.stderr as Readable,
        exit: ch.exitCode,
        kill: () => ch.destroy(),
      };
    },
  };
}

/** Run a short command to its end: exit status and output (first 64 KiB). */
export async function capture(
  shell: HostShell,
  argv: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = await shell.run(argv);
  p.stdin.end();
  const stdout = keepText(p.stdout, 65536);
  const stderr = keepText(p.stderr, 65536);
  // An SSH exit status may come before the last of the output.
  const [code] = await Promise.all([p.exit, finished(p.stdout).catch(() => {})]);
  return { code, stdout: stdout(), stderr: stderr() };
}

/** Run a short command to its end: exit status and its exact stdout bytes (at most `max`; more is an error). */
export async function captureBytes(
  shell: HostShell,
  argv: string[],
  max = 1 << 22,
): Promise<{ code: number | null; stdout: Buffer }> {
  const p = await shell.run(argv);
  p.stdin.end();
  p.stderr.resume();
  const chunks: Buffer[] = [];
  let size = 0;
  p.stdout.on('data', (b: Buffer) => {
    size += b.length;
    if (size <= max) chunks.push(b);
  });
  const [code] = await Promise.all([p.exit, finished(p.stdout).catch(() => {})]);
  if (size > max) throw new Error(`${argv[0]} wrote more than ${max} bytes`);
  return { code, stdout: Buffer.concat(chunks) };
}
