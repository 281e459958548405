import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, parseSignature, signMessage, verifyMessage } from '../../src/bundle/sshsig.js';
import { BUNDLE_NAMESPACE, checkSigner, parseAllowedSigners } from '../../src/bundle/trust.js';
import { agentSigner, keyFileSigner } from '../../src/ssh/sign-key.js';
import { TrustError } from '../../src/errors.js';

const KEYS: [string, string[]][] = [
  ['ed25519', ['-t', 'ed25519']],
  ['rsa', ['-t', 'rsa', '-b', '2048']],
  ['ecdsa256', ['-t', 'ecdsa', '-b', '256']],
  ['ecdsa384', ['-t', 'ecdsa', '-b', '384']],
  ['ecdsa521', ['-t', 'ecdsa', '-b', '521']],
];

let dir: string;
const keyPath = (name: string) => join(dir, name);
const pubLine = (name: string) =>
  readFileSync(`${keyPath(name)}.pub`, 'utf8')
    .trim()
    .split(' ')
    .slice(0, 2)
    .join(' ');
const keygen = (args: string[], input?: string) =>
  execFileSync('ssh-keygen', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-sshsig-'));
  for (const [name, args] of KEYS) keygen([...args, '-q', '-N', '', '-C', name, '-f', keyPath(name)]);
  keygen(['-t', 'ed25519', '-q', '-N', 'secret', '-C', 'enc', '-f', keyPath('enc')]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SSHSIG', () => {
  const message = Buffer.from('0123  manifest.json\nabcd  volumes/x.tar.zst\n');

  for (const [name] of KEYS) {
    it(`${name}: a ferry signature is accepted by ssh-keygen -Y verify`, async () => {
      const signer = await keyFileSigner(keyPath(name));
      const sig = await signMessage(signer, message, BUNDLE_NAMESPACE);
      const sigFile = join(dir, `${name}.ferry.sig`);
      writeFileSync(sigFile, sig);
      const allowed = join(dir, `${name}.allowed`);
      writeFileSync(allowed, `host-${name} ${pubLine(name)}\n`);
      const out = keygen(
        ['-Y', 'verify', '-f', allowed, '-I', `host-${name}`, '-n', BUNDLE_NAMESPACE, '-s', sigFile],
        message.toString(),
      );
      expect(out).toContain(`Good "${BUNDLE_NAMESPACE}" signature for host-${name}`);
      // and the same signature over other bytes is refused by ssh-keygen
      expect(() =>
        keygen(
          ['-Y', 'verify', '-f', allowed, '-I', `host-${name}`, '-n', BUNDLE_NAMESPACE, '-s', sigFile],
          message.toString() + 'x',
        ),
      ).toThrow();
      // ferry verifies its own
      const parsed = parseSignature(sig);
      expect(verifyMessage(parsed, message)).toBe(true);
      expect(verifyMessage(parsed, Buffer.concat([message, Buffer.from('x')]))).toBe(false);
      expect(fingerprint(parsed.publicKey.blob)).toBe(keygen(['-l', '-f', `${keyPath(name)}.pub`]).split(' ')[1]);
    });

    it(`${name}: an ssh-keygen -Y sign signature is verified by ferry`, () => {
      const msgFile = join(dir, `${name}.msg`);
      writeFileSync(msgFile, message);
      keygen(['-Y', 'sign', '-f', keyPath(name), '-n', BUNDLE_NAMESPACE, msgFile]);
      const parsed = parseSignature(readFileSync(`${msgFile}.sig`, 'utf8'));
      expect(parsed.namespace).toBe(BUNDLE_NAMESPACE);
      expect(verifyMessage(parsed, message)).toBe(true);
      expect(verifyMessage(parsed, Buffer.from('other'))).toBe(false);
      // one flipped byte of the signature itself
      const bad = { ...parsed, signature: Buffer.from(parsed.signature) };
      bad.signature[bad.signature.length - 1]! ^= 1;
      expect(verifyMessage(bad, message)).toBe(false);
    });
  }

  it('reads an encrypted key with its passphrase, and says what to do without it', async () => {
    await expect(keyFileSigner(keyPath('enc'))).rejects.toMatchObject({
      exitCode: 2,
      hint: expect.stringMatching(/FERRY_SIGN_KEY_PASSPHRASE/),
    });
    const signer = await keyFileSigner(keyPath('enc'), 'secret');
    const parsed = parseSignature(await signMessage(signer, message, BUNDLE_NAMESPACE));
    expect(verifyMessage(parsed, message)).toBe(true);
  });

  it('refuses a public key file as a signing key', async () => {
    await expect(keyFileSigner(`${keyPath('ed25519')}.pub`)).rejects.toThrow(/public key/);
  });

  it('does not accept garbage as a signature', () => {
    expect(() => parseSignature('hello')).toThrow(/not an SSH signature/);
    expect(() => parseSignature('-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----')).toThrow();
  });
});

describe('ssh-agent keys', () => {
  let agent: ChildProcess | undefined;
  let sock = '';
  beforeAll(async () => {
    sock = join(dir, 'agent.sock');
    agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    for (const k of ['ed25519', 'rsa', 'ecdsa256'])
      execFileSync('ssh-add', ['-q', keyPath(k)], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: 'ignore' });
  });
  afterAll(() => {
    agent?.kill();
  });

  for (const name of ['ed25519', 'rsa', 'ecdsa256']) {
    it(`${name}: the agent signs by fingerprint, and ssh-keygen -Y verify accepts it`, async () => {
      const fp = keygen(['-l', '-f', `${keyPath(name)}.pub`]).split(' ')[1]!;
      const signer = await agentSigner(fp, sock);
      const message = Buffer.from(`signed by the agent with ${name}\n`);
      const sig = await signMessage(signer, message, BUNDLE_NAMESPACE);
      expect(verifyMessage(parseSignature(sig), message)).toBe(true);
      const sigFile = join(dir, `${name}.agent.sig`);
      writeFileSync(sigFile, sig);
      const allowed = join(dir, `${name}.agent.allowed`);
      writeFileSync(allowed, `agent-${name} ${pubLine(name)}\n`);
      expect(
        keygen(
          ['-Y', 'verify', '-f', allowed, '-I', `agent-${name}`, '-n', BUNDLE_NAMESPACE, '-s', sigFile],
          message.toString(),
        ),
      ).toContain('Good');
    });
  }

  it('names the keys the agent has when the fingerprint is not one of them', async () => {
    await expect(agentSigner('SHA256:nope', sock)).rejects.toMatchObject({
      exitCode: 2,
      message: expect.stringMatching(/no key with that fingerprint/),
      hint: expect.stringMatching(/SHA256:/),
    });
  });
});

describe('allowed_signers', () => {
  const ed = () => pubLine('ed25519');
  const edBlob = () => Buffer.from(ed().split(' ')[1]!, 'base64');
  const rsaBlob = () => Buffer.from(pubLine('rsa').split(' ')[1]!, 'base64');

  it('reads principals, namespaces= and validity, and finds the line of a key', () => {
    const t = parseAllowedSigners(
      `# hosts\n\nhost-a,backup@host-a namespaces="file,${BUNDLE_NAMESPACE}" ${ed()} comment here\n"host-b" ${pubLine('rsa')}\n`,
      '/etc/ferry/allowed_signers',
    );
    expect(t.signers).toHaveLength(2);
    expect(t.signers[0]).toMatchObject({ line: 3, principals: ['host-a', 'backup@host-a'] });
    expect(t.signers[0]!.namespaces).toEqual(['file', BUNDLE_NAMESPACE]);
    expect(t.signers[1]!.principals).toEqual(['host-b']);
    expect(checkSigner(t, edBlob(), BUNDLE_NAMESPACE).principals).toEqual(['host-a', 'backup@host-a']);
    expect(checkSigner(t, rsaBlob(), BUNDLE_NAMESPACE).line).toBe(4);
  });

  it('refuses a key in another namespace, an unknown key, a revoked key and an expired line, naming the key and file', () => {
    const t = parseAllowedSigners(`host-a namespaces="git" ${ed()}\n`, 'signers.txt');
    expect(() => checkSigner(t, edBlob(), BUNDLE_NAMESPACE)).toThrow(/allows namespaces git/);
    expect(() => checkSigner(t, rsaBlob(), BUNDLE_NAMESPACE)).toThrow(
      new RegExp(`ssh-rsa ${fingerprint(rsaBlob()).replace(/[+/]/g, '.')}.*not an allowed signer in signers.txt`),
    );
    const r = parseAllowedSigners(`host-a ${ed()}\n@revoked ${ed()}\n`, 'f');
    expect(() => checkSigner(r, edBlob(), BUNDLE_NAMESPACE)).toThrow(/revokes \(line 2\)/);
    const old = parseAllowedSigners(`host-a valid-before="20200101" ${ed()}\n`, 'f');
    expect(() => checkSigner(old, edBlob(), BUNDLE_NAMESPACE)).toThrow(/expired/);
    const later = parseAllowedSigners(`host-a valid-after="20200101Z",valid-before="29990101Z" ${ed()}\n`, 'f');
    expect(checkSigner(later, edBlob(), BUNDLE_NAMESPACE).line).toBe(1);
    try {
      checkSigner(t, rsaBlob(), BUNDLE_NAMESPACE);
    } catch (err) {
      expect(err).toBeInstanceOf(TrustError);
      expect((err as TrustError).exitCode).toBe(11);
    }
  });

  it('ignores cert-authority lines, and says so', () => {
    const t = parseAllowedSigners(`*@example.com cert-authority ${ed()}\n`, 'f');
    expect(t.signers).toHaveLength(0);
    expect(t.notes[0]).toMatch(/line 1: cert-authority lines are ignored/);
    expect(() => checkSigner(t, edBlob(), BUNDLE_NAMESPACE)).toThrow(
      expect.objectContaining({ hint: expect.stringMatching(/cert-authority lines are ignored/) }),
    );
  });

  it('refuses a line it cannot read, naming the file and line', () => {
    expect(() => parseAllowedSigners('host-a\n', 'f')).toThrow(/f, line 1: no key type/);
    expect(() => parseAllowedSigners(`host-a bogus-opt ${ed()}\n`, 'f')).toThrow(/unknown option/);
    expect(() => parseAllowedSigners(`host-a valid-after="tomorrow" ${ed()}\n`, 'f')).toThrow(/not a time/);
  });
});
