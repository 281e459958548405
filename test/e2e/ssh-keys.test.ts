/**
 * An SSH key encrypted with a passphrase: ferry asks for it on a terminal (driven here through a
 * pty made by script(1)), refuses a wrong one, and without a terminal skips the key and says why.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, ferry, LAB } from '../helpers/lab.js';

const PASS = 'ferry-lab-key-passphrase'; // set by .ci/lab.sh
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-sshkey-'));
const home = path.join(dir, 'home');
mkdirSync(path.join(home, '.ssh'), { recursive: true, mode: 0o700 });
copyFileSync(path.join(LAB, 'ssh', 'known_hosts'), path.join(home, '.ssh', 'known_hosts'));
writeFileSync(
  path.join(home, '.ssh', 'config'),
  [
    'Host enc',
    '  HostName 127.0.0.1',
    '  Port 2222',
    '  User root',
    '  IdentitiesOnly yes',
    `  IdentityFile ${path.join(LAB, 'ssh', 'id_ed25519_enc')}`,
    '',
  ].join('\n'),
);
const env = { HOME: home, SSH_AUTH_SOCK: '' };

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Run ferry on a pseudo-terminal, typing `typed` once the prompt is there. Output is the terminal's. */
function ferryOnTty(args: string[], typed: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const cmd = [BIN, ...args].map((a) => `'${a}'`).join(' ');
    const child = spawn('script', ['-qec', `${cmd}; echo "EXIT=$?"`, '/dev/null'], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let typedYet = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!typedYet && /passphrase for /.test(out)) {
        typedYet = true;
        child.stdin.write(`${typed}\n`);
      }
    });
    child.on('error', reject);
    child.on('close', () => {
      const m = /EXIT=(\d+)/.exec(out);
      resolve({ code: m ? Number(m[1]) : -1, out });
    });
  });
}

describe('an encrypted SSH key', () => {
  it('is unlocked with the passphrase typed at the prompt, and the connection is made', async () => {
    const r = await ferryOnTty(['-H', 'ssh://enc', 'restore', '/nonexistent.tar'], PASS);
    expect(r.out).toMatch(/passphrase for .*id_ed25519_enc/);
    expect(r.out).not.toContain(PASS); // not echoed
    expect(r.out).toMatch(/no bundle at \/nonexistent\.tar/); // logged in; the bundle is what is missing
    expect(r.code, r.out).toBe(5);
  });

  it('a wrong passphrase is refused with a clear message', async () => {
    const r = await ferryOnTty(['-H', 'ssh://enc', 'restore', '/nonexistent.tar'], 'not-the-passphrase');
    expect(r.out).toMatch(/wrong passphrase for .*id_ed25519_enc/);
    expect(r.code, r.out).toBe(2);
  });

  it('without a terminal the key is skipped, and ferry says why', async () => {
    const r = await ferry(['-H', 'ssh://enc', 'restore', '/nonexistent.tar'], { env });
    expect(r.stderr).toMatch(/skipping .*id_ed25519_enc: it is encrypted and there is no terminal/);
    expect(r.stderr).toMatch(/no way to log in to root@127\.0\.0\.1:2222/);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
  });
});
