/** --encrypt: a bundle that can sit on an untrusted disk, restorable only with the passphrase. */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, exists, ferry, inspect, uid, volumeListing } from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-enc-'));
const name = uid('enc');
const vol = `${name}-v`;
const PASS = 'correct horse battery staple';
let bundle = '';
let listing = '';

beforeAll(async () => {
  docker([
    'run',
    '-d',
    '--name',
    name,
    '-e',
    'DB_PASSWORD=hunter2-secret-value',
    '-v',
    `${vol}:/d`,
    BUSYBOX,
    'sleep',
    '100000',
  ]);
  docker(['exec', name, 'sh', '-c', 'echo plaintext-marker-in-volume > /d/f; chown 7:8 /d/f']);
  listing = volumeListing(vol);
  const r = await ferry(['backup', name, '-o', path.join(dir, 'store'), '--mkdir', '--encrypt', '--compress', 'none'], {
    env: { FERRY_PASSPHRASE: PASS },
  });
  expect(r.code, r.stderr).toBe(0);
  bundle = path.join(dir, 'store', readdirSync(path.join(dir, 'store'))[0]!);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
  rmSync(dir, { recursive: true, force: true });
});

describe('encrypted bundles', () => {
  it('hold no plaintext: neither volume data nor env values nor the manifest', () => {
    const bytes = readFileSync(bundle);
    // an age file (scrypt), since issue 26
    expect(bytes.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
    expect(bytes.toString('latin1')).toMatch(/^age-encryption\.org\/v1\n-> scrypt /);
    for (const s of ['plaintext-marker-in-volume', 'hunter2-secret-value', 'manifest.json', 'DB_PASSWORD'])
      expect(bytes.includes(Buffer.from(s))).toBe(false);
  });

  it('--encrypt without a passphrase is refused before anything happens', async () => {
    const r = await ferry(['backup', name, '-o', path.join(dir, 'nopass'), '--mkdir', '--encrypt']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--encrypt needs a passphrase/);
    expect(exists('container', name) && inspect('container', name).State.Paused).toBe(false);
  });

  it('ls shows it as encrypted without the passphrase, and its containers with it', async () => {
    // age allows nothing beside the scrypt stanza: without the passphrase only "encrypted" is known
    // (bundles encrypted to --recipient keep their containers in the clear: age.test.ts)
    const r = await ferry(['ls', path.join(dir, 'store'), '--json'], { env: { FERRY_PASSPHRASE: undefined } });
    expect(r.code, r.stderr).toBe(0);
    const [e] = JSON.parse(r.stdout).bundles;
    expect(e.encrypted).toBe(true);
    expect(e.error.code).toBe('PASSPHRASE');
    const r2 = await ferry(['ls', path.join(dir, 'store'), '--json'], { env: { FERRY_PASSPHRASE: PASS } });
    expect(r2.code, r2.stderr).toBe(0);
    const [e2] = JSON.parse(r2.stdout).bundles;
    expect(e2.encrypted).toBe(true);
    expect(e2.containers).toEqual([name]);
  });

  it("opens with Debian's age CLI and the passphrase, as a valid bundle tar", () => {
    // age -d reads a passphrase from a terminal only: give it one with script(1), typed after a second
    const out = path.join(dir, 'plain.tar');
    const r = spawnSync(
      'sh',
      ['-c', `(sleep 1; printf '%s\\n' "$P") | script -qec "age -d '${bundle}' > '${out}'" /dev/null`],
      { env: { ...process.env, P: PASS }, encoding: 'utf8' },
    );
    expect(r.status, r.stderr + r.stdout).toBe(0);
    const names = execFileSync('tar', ['-tf', out]).toString().trim().split('\n');
    expect(names[0]).toBe('manifest.json');
    expect(names).toContain('trailer.json');
  });

  it('restore without a passphrase, or with a wrong one, fails cleanly and creates nothing', async () => {
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const r1 = await ferry(['restore', bundle]);
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(/is encrypted and no passphrase was given/);
    const r2 = await ferry(['restore', bundle], { env: { FERRY_PASSPHRASE: 'wrong' } });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/wrong passphrase/);
    for (const r of [r1, r2]) expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(exists('container', name)).toBe(false);
    expect(exists('volume', vol)).toBe(false);
  });

  it('a tampered ciphertext is refused (exit 7) and restores nothing', async () => {
    const bad = path.join(dir, 'tampered.tar');
    const bytes = Buffer.from(readFileSync(bundle));
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(bad, bytes);
    const r = await ferry(['restore', bad], { env: { FERRY_PASSPHRASE: PASS } });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(/does not authenticate/);
    expect(exists('container', name)).toBe(false);
    expect(exists('volume', vol)).toBe(false);
  });

  it('restores with the passphrase from a file', async () => {
    const pf = path.join(dir, 'pass.txt');
    writeFileSync(pf, PASS + '\n', { mode: 0o600 });
    const r = await ferry(['--passphrase-file', pf, 'restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    expect(inspect('container', name).Config.Env).toContain('DB_PASSWORD=hunter2-secret-value');
    expect(volumeListing(vol)).toBe(listing);
    const v = await ferry(['--passphrase-file', pf, 'verify', bundle]);
    expect(v.code, v.stderr).toBe(0);
  });
});
