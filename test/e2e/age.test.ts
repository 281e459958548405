/**
 * Bundles encrypted with age to a public key (--recipient): the host that backs up holds no key
 * that decrypts; Debian's age CLI opens the bundle without ferry; `ferry restore --identity`
 * restores the container with its data.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  exists,
  ferry,
  inspect,
  removeSnapshots,
  uid,
  volumeListing,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-age-'));
const name = uid('age');
const vol = `${name}-v`;
const key = path.join(dir, 'key.txt');
const otherKey = path.join(dir, 'other.txt');
const store = path.join(dir, 'store');
let recipient = '';
let bundle = '';
let listing = '';

/** `age -d -i <key>` of a file, as Debian's CLI does it. */
function ageDecrypt(file: string, identity = key): Buffer {
  return execFileSync('age', ['-d', '-i', identity, file], { maxBuffer: 256 << 20 });
}

/** One member of a tar given as bytes, with GNU tar. */
function tarMember(tarBytes: Buffer, member: string): Buffer {
  return execFileSync('tar', ['-xOf', '-', member], { input: tarBytes, maxBuffer: 256 << 20 });
}

beforeAll(async () => {
  execFileSync('age-keygen', ['-o', key], { stdio: 'ignore' });
  execFileSync('age-keygen', ['-o', otherKey], { stdio: 'ignore' });
  recipient = execFileSync('age-keygen', ['-y', key]).toString().trim();
  docker([
    'run',
    '-d',
    '--name',
    name,
    '-e',
    'DB_PASSWORD=hunter2-age-secret',
    '-v',
    `${vol}:/d`,
    BUSYBOX,
    'sleep',
    '100000',
  ]);
  docker([
    'exec',
    name,
    'sh',
    '-c',
    'echo age-plaintext-marker > /d/f; chown 7:8 /d/f; mkdir /d/sub; echo x > /d/sub/y',
  ]);
  listing = volumeListing(vol);
  // The cron host: the public key only, from a recipients file; no identity anywhere.
  const rfile = path.join(dir, 'recipients.txt');
  writeFileSync(rfile, `# the restore key, kept offline\n${recipient}\n`);
  const r = await ferry(['backup', name, '-o', store, '--mkdir', '--recipients-file', rfile], {
    env: { FERRY_PASSPHRASE: undefined, FERRY_AGE_IDENTITY: undefined },
  });
  expect(r.code, r.stderr).toBe(0);
  bundle = path.join(store, readdirSync(store)[0]!);
}, 180_000);

afterAll(() => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
  removeSnapshots([name], [ENGINE_A]);
  rmSync(dir, { recursive: true, force: true });
});

describe('age bundles (--recipient)', () => {
  it('are age files holding no plaintext', () => {
    const bytes = readFileSync(bundle);
    expect(bytes.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
    expect(bytes.toString('latin1')).toContain('\n-> X25519 ');
    for (const s of ['age-plaintext-marker', 'hunter2-age-secret', 'manifest.json', 'DB_PASSWORD'])
      expect(bytes.includes(Buffer.from(s))).toBe(false);
  });

  it("open with Debian's age CLI into a valid bundle tar, with the volume's files in it", () => {
    const plain = ageDecrypt(bundle);
    const names = execFileSync('tar', ['-tf', '-'], { input: plain }).toString().trim().split('\n');
    expect(names[0]).toBe('manifest.json');
    expect(names).toContain('trailer.json');
    const manifest = JSON.parse(tarMember(plain, 'manifest.json').toString()) as {
      volumes: { name: string; member: string }[];
      members: { name: string; codec: string }[];
    };
    const v = manifest.volumes.find((x) => x.name === vol)!;
    const codec = manifest.members.find((m) => m.name === v.member)!.codec;
    let member = tarMember(plain, v.member);
    if (codec === 'zstd') member = execFileSync('zstd', ['-dc'], { input: member, maxBuffer: 256 << 20 });
    if (codec === 'gzip') member = execFileSync('gzip', ['-dc'], { input: member, maxBuffer: 256 << 20 });
    const inner = execFileSync('tar', ['-tf', '-'], { input: member }).toString();
    expect(inner).toMatch(/(^|\n)(\.\/)?f\n/);
    expect(tarMember(member, inner.includes('./f') ? './f' : 'f').toString()).toBe('age-plaintext-marker\n');
    // the decrypted bundle's SHA256SUMS lists the member
    expect(tarMember(plain, 'SHA256SUMS').toString()).toContain(`  ${v.member}\n`);
  });

  it('the wrong key does not open it, with the age CLI or with ferry (exit 2), and nothing is created', async () => {
    expect(() => ageDecrypt(bundle, otherKey)).toThrow();
    const r1 = await ferry(['--identity', otherKey, 'restore', bundle, '--name', `${name}-x`]);
    expect(r1.code, r1.stderr).toBe(2);
    expect(r1.stderr).toMatch(/no identity given matches a recipient/);
    const r2 = await ferry(['restore', bundle, '--name', `${name}-x`], { env: { FERRY_AGE_IDENTITY: undefined } });
    expect(r2.code, r2.stderr).toBe(2);
    expect(r2.stderr).toMatch(/no identity was given/);
    for (const r of [r1, r2]) expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
    expect(exists('container', `${name}-x`)).toBe(false);
  });

  it('ls on the cron host (no identity) reads the clear header: encrypted, its containers', async () => {
    const r = await ferry(['ls', store, '--json'], { env: { FERRY_AGE_IDENTITY: undefined } });
    expect(r.code, r.stderr).toBe(0);
    const [e] = JSON.parse(r.stdout).bundles;
    expect(e.encrypted).toBe(true);
    expect(e.containers).toEqual([name]);
    expect(e.error).toBeUndefined();
  });

  it('verify with FERRY_AGE_IDENTITY checks every member', async () => {
    const r = await ferry(['verify', bundle, '--json'], { env: { FERRY_AGE_IDENTITY: key } });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).ok).toBe(true);
  });

  it('ferry restore --identity restores the container with its data and env', async () => {
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    expect(exists('container', name)).toBe(false);
    const r = await ferry(['--identity', key, 'restore', bundle]);
    expect(r.code, r.stderr).toBe(0);
    const c = inspect('container', name);
    expect(c.State.Running).toBe(true);
    expect(c.Config.Env).toContain('DB_PASSWORD=hunter2-age-secret');
    expect(volumeListing(vol)).toBe(listing);
  });

  it('--recipient with a malformed key is refused before anything happens (exit 2)', async () => {
    const out = path.join(dir, 'bad');
    mkdirSync(out);
    const r = await ferry(['backup', name, '-o', out, '--recipient', 'age1notakey']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not an age X25519 recipient/);
    expect(readdirSync(out)).toEqual([]);
    expect(inspect('container', name).State.Paused).toBe(false);
  });
});
