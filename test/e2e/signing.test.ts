/**
 * Signed bundles and the restore policy (issue 27), with the real CLI on the run's primary engine:
 * a bundle signed with --sign-key restores under --trust; the same bundle with its manifest
 * changed, its signature removed, signed by another key, or unsigned is refused with nothing
 * created; ssh-keygen -Y verify accepts the genuine signature; a privileged container with a bind
 * of / is refused unless --allow or a trusted signature says otherwise.
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
  s3Env,
  s3Url,
  uid,
  volumeListing,
} from '../helpers/lab.js';
import { s3Clean } from '../helpers/s3.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-sign-'));
const name = uid('sig');
const vol = `${name}-v`;
const priv = uid('sigpriv');
const key = path.join(dir, 'host-a');
const otherKey = path.join(dir, 'other');
const signers = path.join(dir, 'allowed_signers');
const PASS = 'signed and sealed';
let listing = '';
let signed = '';
let unsigned = '';
let byOther = '';
let streamed = '';
let encrypted = '';
const S3_ROOT = uid('e2e-sign');
const s3Store = s3Url(`${S3_ROOT}/shared`);
let s3Good = '';
let s3Planted = '';

const pubLine = (k: string) => readFileSync(`${k}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
const fp = (k: string) => execFileSync('ssh-keygen', ['-l', '-f', `${k}.pub`], { encoding: 'utf8' }).split(' ')[1]!;

async function backup(args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await ferry(['--json', 'backup', ...args], { env });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).bundle as string;
}

/** Nothing of the bundle's is on the engine: container, volume, image. */
function nothingRestored() {
  expect(exists('container', name)).toBe(false);
  expect(exists('volume', vol)).toBe(false);
  expect(docker(['images', '-q', `ferry/${name}`])).toBe('');
}

function removeRestored() {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
  removeSnapshots([name], [ENGINE_A]);
}

beforeAll(async () => {
  for (const k of [key, otherKey])
    execFileSync('ssh-keygen', ['-t', 'ed25519', '-q', '-N', '', '-C', path.basename(k), '-f', k]);
  writeFileSync(signers, `# the backing-up hosts\nhost-a ${pubLine(key)}\n`);
  docker(['run', '-d', '--name', name, '-v', `${vol}:/d`, BUSYBOX, 'sleep', '100000']);
  docker(['exec', name, 'sh', '-c', 'echo signed-data > /d/f; mkdir /d/sub; echo 2 > /d/sub/g']);
  listing = volumeListing(vol);
  signed = await backup([name, '-o', path.join(dir, 'store'), '--mkdir', '--sign-key', key]);
  unsigned = await backup([name, '-o', path.join(dir, 'unsigned.tar')]);
  byOther = await backup([name, '-o', path.join(dir, 'other.tar')], { FERRY_SIGN_KEY: otherKey });
  const s = await ferry(['backup', name, '-o', '-', '--sign-key', key], { stdoutFile: path.join(dir, 'stream.tar') });
  expect(s.code, s.stderr).toBe(0);
  streamed = path.join(dir, 'stream.tar');
  encrypted = await backup([name, '-o', path.join(dir, 'enc'), '--mkdir', '--encrypt', '--sign-key', key], {
    FERRY_PASSPHRASE: PASS,
  });
  // A shared S3 store: this host signs; another writer of the store plants an unsigned bundle.
  s3Good = await backup([name, '-o', s3Store, '--sign-key', key], s3Env());
  s3Planted = await backup([name, '-o', s3Store], s3Env());
  removeRestored();
});

afterAll(async () => {
  await s3Clean(S3_ROOT);
  removeRestored();
  cleanup(ENGINE_A, { containers: [priv] });
  removeSnapshots([priv], [ENGINE_A]);
  rmSync(dir, { recursive: true, force: true });
});

describe('signed bundles', () => {
  it('carry an SSHSIG signature that ssh-keygen -Y verify accepts, and SHA256SUMS that sha256sum -c checks', () => {
    const x = path.join(dir, 'x');
    mkdirSync(x);
    execFileSync('tar', ['-xf', signed], { cwd: x });
    expect(readdirSync(x).sort()).toEqual([
      'SHA256SUMS',
      'SHA256SUMS.sig',
      'images',
      'manifest.json',
      'trailer.json',
      'volumes',
    ]);
    const out = execFileSync(
      'ssh-keygen',
      ['-Y', 'verify', '-f', signers, '-I', 'host-a', '-n', 'ferry-bundle@ferry', '-s', 'SHA256SUMS.sig'],
      { cwd: x, input: readFileSync(path.join(x, 'SHA256SUMS')), encoding: 'utf8' },
    );
    expect(out).toContain('Good "ferry-bundle@ferry" signature for host-a');
    expect(execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: x, encoding: 'utf8' })).toMatch(
      /manifest.json: OK[\s\S]*trailer.json: OK/,
    );
    // and the bundle is still what docker load takes
    const img = readdirSync(path.join(x, 'images'))[0]!;
    expect(docker(['load', '-i', path.join(x, 'images', img)])).toMatch(new RegExp(`Loaded image: ferry/${name}:`));
    removeSnapshots([name], [ENGINE_A]);
  });

  it('ls and inspect name the signer (by principal with --trust), and verify --trust checks it', async () => {
    const ls = await ferry(['--json', 'ls', path.join(dir, 'store'), '--trust', signers]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout).bundles[0].signer).toEqual({
      key: pubLine(key),
      fingerprint: fp(key),
      principals: ['host-a'],
    });
    const text = await ferry(['ls', path.join(dir, 'store')]);
    expect(text.stdout).toContain(fp(key));
    const ins = await ferry(['inspect', signed, '--trust', signers]);
    expect(ins.stdout).toMatch(new RegExp(`signed by +host-a \\(ssh-ed25519 ${fp(key).replace(/[+/]/g, '.')}\\)`));
    expect((await ferry(['inspect', unsigned])).stdout).toMatch(/signed by +no one \(unsigned\)/);
    const v = await ferry(['--json', 'verify', signed, '--trust', signers]);
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout).signer).toMatchObject({ principals: ['host-a'], trustedBy: signers });
    const vo = await ferry(['verify', byOther, '--trust', signers]);
    expect(vo.code).toBe(11);
  });

  it('restore --trust restores a bundle signed by an allowed key, from a file, a pipe and encrypted', async () => {
    for (const [args, env] of [
      [['restore', signed, '--trust', signers], {}],
      [['restore', '-'], { FERRY_TRUST: signers }],
      [['restore', encrypted, '--trust', signers], { FERRY_PASSPHRASE: PASS }],
    ] as [string[], Record<string, string>][]) {
      const r = await ferry(args, { env, ...(args[1] === '-' ? { stdinFile: streamed } : {}) });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stderr).toContain(`host-a (ssh-ed25519 ${fp(key)}), allowed by ${signers}`);
      expect(inspect('container', name).State.Running).toBe(true);
      expect(volumeListing(vol)).toBe(listing);
      removeRestored();
    }
  });

  it('refuses, with exit 11 and nothing created: a changed manifest, a removed signature, another key, no signature', async () => {
    const tampered = path.join(dir, 'tampered.tar');
    const bytes = Buffer.from(readFileSync(signed));
    const at = bytes.indexOf(Buffer.from(`"name": "${name}"`));
    expect(at).toBeGreaterThan(0);
    bytes[at + 9 + name.length - 1] ^= 0x01; // one byte of the container's name (its last character)
    writeFileSync(tampered, bytes);
    const stripped = path.join(dir, 'stripped.tar');
    // The signature is the last entry: cut the archive at its header and end it there.
    const whole = readFileSync(signed);
    const sigAt = whole.indexOf(Buffer.from('SHA256SUMS.sig\0'));
    expect(sigAt % 512).toBe(0);
    writeFileSync(stripped, Buffer.concat([whole.subarray(0, sigAt), Buffer.alloc(1024)]));
    const cases: [string, RegExp][] = [
      [tampered, /manifest.json does not match the signed SHA256SUMS/],
      [stripped, /SHA256SUMS.sig is missing/],
      [
        byOther,
        new RegExp(
          `signed by ssh-ed25519 ${fp(otherKey).replace(/[+/]/g, '.')}, which is not an allowed signer in ${signers}`,
        ),
      ],
      [unsigned, new RegExp(`is not signed; --trust ${signers}`)],
    ];
    for (const [bundle, why] of cases) {
      const r = await ferry(['restore', bundle, '--trust', signers]);
      expect(r.code, `${bundle}: ${r.stderr}`).toBe(11);
      expect(r.stderr).toMatch(why);
      nothingRestored();
      // the changed name is not on the engine either
      expect(docker(['ps', '-a', '-q', '--filter', `name=${name.slice(0, -1)}`])).toBe('');
    }
    // a revoked key is refused even where another line allows it
    const revoked = path.join(dir, 'revoked_signers');
    writeFileSync(revoked, `host-a ${pubLine(key)}\n@revoked ${pubLine(key)}\n`);
    const r = await ferry(['restore', signed, '--trust', revoked]);
    expect(r.code).toBe(11);
    expect(r.stderr).toMatch(/revokes \(line 2\)/);
    nothingRestored();
  });

  it('drill --trust refuses an unknown signer and passes a trusted one', async () => {
    const bad = await ferry(['drill', byOther, '--trust', signers]);
    expect(bad.code, bad.stderr).toBe(11);
    const ok = await ferry(['drill', signed, '--trust', signers]);
    expect(ok.code, ok.stderr).toBe(0);
  });
});

describe('a shared S3 store', () => {
  it('holds a signed bundle that restores under --trust beside a planted one that is refused', async () => {
    const env = s3Env();
    const [good, planted] = [s3Good, s3Planted];
    const ls = await ferry(['--json', 'ls', s3Store, '--trust', signers], { env });
    expect(ls.code, ls.stderr).toBe(0);
    const byBundle = new Map(
      (JSON.parse(ls.stdout).bundles as { bundle: string; signer?: { principals?: string[] } }[]).map((e) => [
        e.bundle,
        e.signer,
      ]),
    );
    expect(byBundle.get(good)?.principals).toEqual(['host-a']);
    expect(byBundle.has(planted)).toBe(true);
    expect(byBundle.get(planted)).toBeUndefined(); // unsigned: no signer field
    const refused = await ferry(['restore', planted, '--trust', signers], { env });
    expect(refused.code, refused.stderr).toBe(11);
    nothingRestored();
    const ok = await ferry(['restore', good, '--trust', signers], { env });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain(`host-a (ssh-ed25519 ${fp(key)}), allowed by ${signers}`);
    expect(volumeListing(vol)).toBe(listing);
    removeRestored();
  });
});

describe('restore policy', () => {
  let plain = '';
  let trusted = '';
  beforeAll(async () => {
    // Created, never started (the lab's engines may not run privileged containers): it restores as created.
    docker(['create', '--name', priv, '--privileged', '-v', '/:/host:ro', BUSYBOX, 'sleep', '100000']);
    plain = await backup([priv, '-o', path.join(dir, 'priv.tar')]);
    trusted = await backup([priv, '-o', path.join(dir, 'priv-signed.tar'), '--sign-key', key]);
    cleanup(ENGINE_A, { containers: [priv] });
  });

  it('inspect and restore --dry-run list the host access', async () => {
    const ins = await ferry(['inspect', plain]);
    expect(ins.stdout).toMatch(/host access +--privileged \[privileged\]/);
    expect(ins.stdout).toContain('bind of host / -> /host [host-binds]');
    const dry = await ferry(['--json', 'restore', plain, '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(
      JSON.parse(dry.stdout).plan.hostAccess.map((h: { kind: string; allowed: boolean }) => [h.kind, h.allowed]),
    ).toEqual([
      ['privileged', false],
      ['host-binds', false],
      ['unconfined', false], // the engine records label=disable for a privileged container
    ]);
  });

  it('an unsigned privileged container with a bind of / is refused (exit 12, nothing created), and restores with --allow', async () => {
    const r = await ferry(['restore', plain]);
    expect(r.code, r.stderr).toBe(12);
    expect(r.stderr).toMatch(/--allow privileged,host-binds,unconfined/);
    expect(exists('container', priv)).toBe(false);
    const half = await ferry(['restore', plain, '--allow', 'privileged']);
    expect(half.code).toBe(12);
    expect(exists('container', priv)).toBe(false);
    const ok = await ferry(['restore', plain, '--allow', 'privileged,host-binds', '--allow', 'unconfined']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(inspect('container', priv).HostConfig.Privileged).toBe(true);
    cleanup(ENGINE_A, { containers: [priv] });
  });

  it('a bundle signed by a trusted key restores as it was made', async () => {
    const r = await ferry(['restore', trusted, '--trust', signers]);
    expect(r.code, r.stderr).toBe(0);
    const hc = inspect('container', priv).HostConfig;
    expect(hc.Privileged).toBe(true);
    expect(hc.Binds).toContain('/:/host:ro');
  });
});
