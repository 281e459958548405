/**
 * ferry's own age v1 (src/bundle/age.ts, on node:crypto): known answers from the age CLI, interop
 * both ways, the header's encoding rules and STREAM's last-chunk rules.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv, createHmac, hkdfSync, randomBytes, scryptSync } from 'node:crypto';
import fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ageDecrypt, ageEncrypt, IdentityError, readAgeHeader, recipientOf } from '../../src/bundle/age.js';
import { PassphraseError } from '../../src/bundle/crypto.js';
import { BundleError } from '../../src/errors.js';
import { readAll } from './store-conformance.js';

const hasAge = spawnSync('age', ['--version']).status === 0;
const hasScript = spawnSync('script', ['--version']).status === 0;

// Written by age 1.1.1 (Debian): `age -r <KAT_KEY's recipient>` and `age -p` ("kat pass") of KAT_PLAIN.
const KAT_PLAIN = 'ferry known answer\n';
const KAT_KEY = 'AGE-SECRET-KEY-1AE3XYQ3LNQPFC2HDF4C87HK95QT3990230CPJ6XFKPJ8PQG5TLDSUXEYDY';
const KAT_RECIPIENT = 'age1nhsrrfh4jqrg455t9kzue7xhkxqvqdue8zpquxd3jcs4rz2tdpdsjpqavz';
const KAT_X25519 =
  'YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBncTQ0M3hONis5ZlFjZ3gxT1U3UEdId0F1RXowMGFLd0lXUG9oL0ZrUFdNCkF1QVNKOHJESXJmQ0Y1Y3cxdGx2dlgyMDlJMVlaZUNwSFNGY1ZjRjNlNmsKLS0tIEtSMjlISldFcUIyL3UxYVhhY0FGL1lOTHVQcFVhSU9ockEvLzN3U1RVNGMK2Vi74KhJgmtTSU8INiN2Z1zvXSyR08N5NJ/lALoTrm2cdmrsmKbm2ZYuwxf3K7R+w5Y5';
const KAT_SCRYPT =
  'YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IHNjcnlwdCAva0JpNzI5L0NOWFN6SGtOcE4rQTd3IDE4CmxvYUF3OWpUWUdKWUFpVk5NL01XdUplZmxEc0ZEV2d3aVpRbEZ4OWlWa00KLS0tIGNuZThKZWJuUVZraDFIeFVqNFU5SE96ZFJTVUx1U0lhRkxyWEQvK2dHWGsKrpudHGnzA8/rnmQV8TlyiDEQ19UjIvYLO9620DRFnpV3pc8FPJqncNeIa6W1ScFEpkY1';

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 8)) & 0xff;
  return b;
}

async function decrypt(file: Buffer, keys: { passphrase?: string; identities?: string[] }): Promise<Buffer> {
  return readAll(await ageDecrypt(Readable.from([file]), keys, 'mem://t'));
}

async function encrypt(plain: Buffer, target: { passphrase?: string; recipients?: string[] }, meta?: object) {
  return readAll(await ageEncrypt(Readable.from(plain.length ? [plain] : []), target, meta as never));
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

function b64(b: Buffer): string {
  return b.toString('base64').replace(/=+$/, '');
}

/**
 * An age file made here straight from the spec (scrypt stanza at a low work factor, header MAC,
 * STREAM), with the chunks and last flags given: to make files ferry must refuse.
 */
function handMade(chunks: { data: Buffer; last: boolean }[], extraStanza = ''): { file: Buffer; pass: string } {
  const pass = 'hand made';
  const fileKey = randomBytes(16);
  const salt = randomBytes(16);
  const wrapKey = scryptSync(pass, Buffer.concat([Buffer.from('age-encryption.org/v1/scrypt'), salt]), 32, {
    N: 1024,
    r: 8,
    p: 1,
  });
  const sealWith = (key: Buffer, nonce: Buffer, data: Buffer) => {
    const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    return Buffer.concat([c.update(data), c.final(), c.getAuthTag()]);
  };
  const body = sealWith(wrapKey, Buffer.alloc(12), fileKey);
  const upTo = `age-encryption.org/v1\n-> scrypt ${b64(salt)} 10\n${b64(body)}\n${extraStanza}---`;
  const macKey = Buffer.from(hkdfSync('sha256', fileKey, Buffer.alloc(0), 'header', 32));
  const mac = createHmac('sha256', macKey).update(upTo).digest();
  const nonce = randomBytes(16);
  const key = Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32));
  const parts = [Buffer.from(`${upTo} ${b64(mac)}\n`), nonce];
  chunks.forEach((c, i) => {
    const n = Buffer.alloc(12);
    n.writeUIntBE(i, 5, 6);
    n[11] = c.last ? 1 : 0;
    parts.push(sealWith(key, n, c.data));
  });
  return { file: Buffer.concat(parts), pass };
}

describe('age v1 on node:crypto', () => {
  it('known answers: files written by the age CLI decrypt to their plaintext', async () => {
    expect((await decrypt(Buffer.from(KAT_X25519, 'base64'), { identities: [KAT_KEY] })).toString()).toBe(KAT_PLAIN);
    expect((await decrypt(Buffer.from(KAT_SCRYPT, 'base64'), { passphrase: 'kat pass' })).toString()).toBe(KAT_PLAIN);
    expect(await recipientOf(KAT_KEY)).toBe(KAT_RECIPIENT);
  });

  it('a file made from the spec by hand decrypts; the empty payload is one empty final chunk', async () => {
    const a = pattern(65536 + 10);
    const { file, pass } = handMade([
      { data: a.subarray(0, 65536), last: false },
      { data: a.subarray(65536), last: true },
    ]);
    expect((await decrypt(file, { passphrase: pass })).equals(a)).toBe(true);
    const empty = handMade([{ data: Buffer.alloc(0), last: true }]);
    expect((await decrypt(empty.file, { passphrase: empty.pass })).length).toBe(0);
    // and ferry writes the empty payload the same way: nonce, then one 16-byte sealed empty chunk
    const enc = await encrypt(Buffer.alloc(0), { recipients: [KAT_RECIPIENT] });
    const headerEnd = enc.indexOf('\n--- ') + 1 + 4 + 43 + 1;
    expect(enc.length - headerEnd).toBe(16 + 16);
    expect((await decrypt(enc, { identities: [KAT_KEY] })).length).toBe(0);
  });

  it('reads a file that arrives in pieces of any size (header, nonce and chunks split anywhere)', async () => {
    const plain = pattern(65536 + 77);
    const enc = await encrypt(plain, { recipients: [KAT_RECIPIENT] }, { createdAt: 'x', containers: ['web'] });
    for (const size of [1, 7, 4096]) {
      const pieces: Buffer[] = [];
      for (let o = 0; o < enc.length; o += size) pieces.push(enc.subarray(o, o + size));
      const out = await readAll(await ageDecrypt(Readable.from(pieces), { identities: [KAT_KEY] }, 'mem://t'));
      expect(out.equals(plain), `pieces of ${size}`).toBe(true);
    }
  });

  it('STREAM rules: a missing last flag, a last flag before the end, an empty final chunk after data are refused', async () => {
    const full = pattern(65536);
    const cases = [
      handMade([{ data: full, last: false }]), // no final chunk
      handMade([
        { data: full, last: true },
        { data: Buffer.from('more'), last: true },
      ]), // a "last" chunk that is not the last
      handMade([
        { data: full, last: false },
        { data: Buffer.alloc(0), last: true },
      ]), // an empty final chunk after data
      handMade([{ data: Buffer.from('short'), last: false }]), // a short chunk without the last flag
    ];
    for (const { file, pass } of cases) {
      const err = await failure(decrypt(file, { passphrase: pass }));
      expect(err).toBeInstanceOf(BundleError);
      expect((err as BundleError).exitCode).toBe(7);
    }
  });

  it('header: an unknown stanza is skipped and covered by the MAC; a changed header is refused', async () => {
    const plain = Buffer.from('covered');
    const meta = { createdAt: 'x', containers: ['web'] }; // short: its body is one line
    const enc = await encrypt(plain, { recipients: [KAT_RECIPIENT] }, meta);
    expect((await decrypt(enc, { identities: [KAT_KEY] })).equals(plain)).toBe(true);
    // the meta stanza's body says "web"; make it "wec" (same length): the header MAC fails
    const text = enc.toString('latin1');
    const body = b64(Buffer.from(JSON.stringify(meta)));
    expect(text.includes(body)).toBe(true);
    const changed = Buffer.from(
      text.replace(body, b64(Buffer.from(JSON.stringify({ ...meta, containers: ['wec'] })))),
      'latin1',
    );
    const err = await failure(decrypt(changed, { identities: [KAT_KEY] }));
    expect(err).toBeInstanceOf(BundleError);
    expect((err as Error).message).toMatch(/header MAC/);
    // bodies are canonical base64 wrapped at 64 columns: a body line of 65 columns is refused
    const long = Buffer.from(text.replace('\n---', `\n-> grease\n${'A'.repeat(65)}\n---`), 'latin1');
    expect(await failure(decrypt(long, { identities: [KAT_KEY] }))).toBeInstanceOf(BundleError);
    // a scrypt stanza must be alone
    const notAlone = handMade([{ data: plain, last: true }], `-> X25519 ${'A'.repeat(43)}\n${'A'.repeat(43)}\n`);
    expect(await failure(decrypt(notAlone.file, { passphrase: notAlone.pass }))).toBeInstanceOf(BundleError);
  });

  it('truncated, tampered, reordered, trailing: each refused with exit 7; wrong keys with exit 2', async () => {
    const plain = pattern(3 * 65536 + 1000);
    const enc = await encrypt(plain, { recipients: [KAT_RECIPIENT] });
    expect((await decrypt(enc, { identities: [KAT_KEY] })).equals(plain)).toBe(true);
    const start = enc.indexOf('\n--- ') + 1 + 4 + 43 + 1 + 16;
    const C = 65536 + 16;
    const chunk = (i: number) => enc.subarray(start + i * C, start + (i + 1) * C);
    const bad: Buffer[] = [
      enc.subarray(0, start + 3 * C), // the final chunk missing (cut at a chunk boundary)
      enc.subarray(0, enc.length - 1), // cut inside the final chunk
      enc.subarray(0, start + 10), // cut inside the first chunk
      enc.subarray(0, start - 3), // cut inside the nonce
      Buffer.concat([enc.subarray(0, start), chunk(1), chunk(0), enc.subarray(start + 2 * C)]), // reordered
      Buffer.concat([enc, Buffer.from([0])]), // one byte of trailing data
      Buffer.concat([enc, enc.subarray(start + 3 * C)]), // the final chunk again
      (() => {
        const t = Buffer.from(enc);
        t[start + C + 100]! ^= 0x20;
        return t;
      })(), // a flipped bit
    ];
    for (const b of bad) {
      const err = await failure(decrypt(b, { identities: [KAT_KEY] }));
      expect(err).toBeInstanceOf(BundleError);
      expect((err as BundleError).exitCode).toBe(7);
    }
    const other = execFileSync('age-keygen')
      .toString()
      .match(/AGE-SECRET-KEY-1\S+/)![0];
    expect(await failure(decrypt(enc, { identities: [other] }))).toBeInstanceOf(IdentityError);
    expect(await failure(decrypt(enc, { passphrase: 'x' }))).toBeInstanceOf(IdentityError);
    const p = await encrypt(plain.subarray(0, 100), { passphrase: 'right' });
    expect(await failure(decrypt(p, { passphrase: 'wrong' }))).toBeInstanceOf(PassphraseError);
  }, 60_000);

  it.skipIf(!hasAge)(
    'interop with the age CLI both ways, across chunk boundaries',
    async () => {
      const dir = await fs.mkdtemp(path.join(tmpdir(), 'ferry-age-native-'));
      try {
        const keyFile = path.join(dir, 'key.txt');
        await fs.writeFile(keyFile, KAT_KEY + '\n', { mode: 0o600 });
        const second = execFileSync('age-keygen')
          .toString()
          .match(/AGE-SECRET-KEY-1\S+/)![0];
        for (const n of [0, 1, 65535, 65536, 65537, 2 * 65536, 200_000]) {
          const plain = pattern(n);
          // ferry -> age: two recipients and the meta stanza (a 96-byte body: two full 64-column
          // lines, so the body ends with an empty line)
          const meta = { createdAt: '2026-12-07T00:00:00.000Z', containers: ['a'.repeat(38)] };
          expect(JSON.stringify(meta).length).toBe(96);
          const enc = await encrypt(plain, { recipients: [await recipientOf(second), KAT_RECIPIENT] }, meta);
          expect(readAgeHeader(enc)).toEqual({ kind: 'recipients', meta });
          const out = execFileSync('age', ['-d', '-i', keyFile], { input: enc, maxBuffer: 1 << 26 });
          expect(out.equals(plain), `age -d of ferry's ${n} bytes`).toBe(true);
          // age -> ferry
          const byAge = execFileSync('age', ['-r', KAT_RECIPIENT], { input: plain, maxBuffer: 1 << 26 });
          expect((await decrypt(byAge, { identities: [second, KAT_KEY] })).equals(plain), `age -r, ${n} bytes`).toBe(
            true,
          );
        }
      } finally {
        await fs.rm(dir, { recursive: true, force: true });
      }
    },
    120_000,
  );

  it.skipIf(!hasAge || !hasScript)(
    'interop with age -p: ferry decrypts it, age -d decrypts ferry (scrypt)',
    async () => {
      const dir = await fs.mkdtemp(path.join(tmpdir(), 'ferry-age-pass-'));
      try {
        const plain = pattern(70_000);
        await fs.writeFile(path.join(dir, 'p'), plain);
        // age reads a passphrase from the terminal only: give it one through script(1)'s pty
        const tty = (cmd: string, lines: string) =>
          spawnSync('sh', ['-c', `(sleep 1; ${lines}; sleep 8) | script -qec "${cmd}" /dev/null`], { cwd: dir });
        tty('age -p -o p.age p', "printf 'pw 1\\n'; sleep 1; printf 'pw 1\\n'");
        const byAge = await fs.readFile(path.join(dir, 'p.age'));
        expect((await decrypt(byAge, { passphrase: 'pw 1' })).equals(plain)).toBe(true);
        await fs.writeFile(path.join(dir, 'f.age'), await encrypt(plain, { passphrase: 'pw 2' }));
        tty('age -d -o f.out f.age', "printf 'pw 2\\n'");
        expect((await fs.readFile(path.join(dir, 'f.out'))).equals(plain)).toBe(true);
      } finally {
        await fs.rm(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );
});
