/** age encryption of bundles (src/bundle/age.ts, envelope.ts, the encrypting store). */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { describe, expect, it } from 'vitest';
import {
  AGE_MAGIC,
  ageDecrypt,
  ageEncrypt,
  IdentityError,
  parseIdentities,
  parseRecipients,
  readAgeHeader,
} from '../../src/bundle/age.js';
import { CHUNK, newKey, PassphraseError, sealChunk } from '../../src/bundle/crypto.js';
import { BundleReader } from '../../src/bundle/reader.js';
import { BundleWriter } from '../../src/bundle/writer.js';
import { BundleError, EXIT, UsageError } from '../../src/errors.js';
import { listCatalog } from '../../src/store/catalog.js';
import { openStore } from '../../src/store/registry.js';
import { IMAGE_MEMBER, makeManifest, MemorySink, VOLUME_MEMBER } from './bundle-fixtures.js';
import { readAll, writeBundle } from './store-conformance.js';

const hasAge = spawnSync('age', ['--version']).status === 0;

async function keypair(): Promise<{ identity: string; recipient: string }> {
  const identity = await generateX25519Identity();
  return { identity, recipient: await identityToRecipient(identity) };
}

/** A plain bundle (streamed layout) with a volume and an image member. */
async function plainBundle(volume = Buffer.from('volume data '.repeat(10_000))): Promise<Buffer> {
  const sink = new MemorySink(false);
  const w = new BundleWriter(sink, makeManifest());
  await w.begin();
  await w.addMember(VOLUME_MEMBER, Readable.from([volume]), 'none');
  await w.addMember(IMAGE_MEMBER, Readable.from([Buffer.from('image bytes')]), 'gzip');
  w.recordImage({ ref: 'ferry/web:backup-20240301', id: 'sha256:' + 'ab'.repeat(32), layers: [] });
  await w.finish();
  return sink.data;
}

/** Read every member of a bundle; returns the volume member's bytes. */
async function readBundle(
  src: Buffer,
  keys: { passphrase?: string; identities?: string[] },
): Promise<{ volume: Buffer; reader: BundleReader }> {
  const reader = await BundleReader.open(Readable.from([src]), 'mem://b', keys);
  let volume = Buffer.alloc(0);
  for await (const m of reader.members()) {
    const b = await readAll(m.stream);
    if (m.plan.name === VOLUME_MEMBER) volume = b;
  }
  return { volume, reader };
}

async function encrypt(
  plain: Buffer,
  target: { passphrase?: string; recipients?: string[] },
  meta?: { createdAt: string; containers: string[] },
) {
  return readAll(await ageEncrypt(Readable.from([plain]), target, meta));
}

describe('age bundles', () => {
  it('encrypted to a recipient: no plaintext, clear meta, read back with the identity', async () => {
    const { identity, recipient } = await keypair();
    const plain = await plainBundle();
    const meta = { createdAt: '2026-12-07T03:00:00.000Z', containers: ['web'] };
    const enc = await encrypt(plain, { recipients: [recipient] }, meta);
    expect(enc.subarray(0, AGE_MAGIC.length).equals(AGE_MAGIC)).toBe(true);
    for (const s of ['volume data', 'manifest.json', 'API_TOKEN', 'abc123']) expect(enc.includes(s)).toBe(false);
    expect(readAgeHeader(enc)).toEqual({ kind: 'recipients', meta });
    const { volume, reader } = await readBundle(enc, { identities: [identity] });
    expect(volume.toString()).toBe('volume data '.repeat(10_000));
    expect(reader.manifest.containers[0]!.spec.name).toBe('web');
    expect(reader.encryption).toMatchObject({ format: 'age', kind: 'recipients' });
  });

  it('several recipients: each identity opens it', async () => {
    const a = await keypair();
    const b = await keypair();
    const enc = await encrypt(await plainBundle(), { recipients: [a.recipient, b.recipient] });
    for (const k of [a, b]) expect((await readBundle(enc, { identities: [k.identity] })).volume.length).toBe(120_000);
  });

  it('a wrong identity, or none, is an IdentityError with exit code 2, before any plaintext', async () => {
    const { recipient } = await keypair();
    const other = await keypair();
    const enc = await encrypt(await plainBundle(), { recipients: [recipient] });
    for (const keys of [{ identities: [other.identity] }, {}, { passphrase: 'x' }]) {
      const err = await BundleReader.open(Readable.from([enc]), 'mem://b', keys).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(IdentityError);
      expect((err as IdentityError).exitCode).toBe(EXIT.USAGE);
      expect((err as IdentityError).exitCode).toBe(2);
      expect((err as IdentityError).code).toBe('IDENTITY');
    }
  });

  it('to a passphrase (scrypt): read back with it; wrong or missing passphrase is exit 2', async () => {
    const plain = await plainBundle();
    const enc = await encrypt(plain, { passphrase: 'correct horse' });
    expect(readAgeHeader(enc)).toEqual({ kind: 'passphrase' });
    expect(enc.toString('latin1')).toMatch(/^age-encryption\.org\/v1\n-> scrypt \S{22} 18\n/);
    expect((await readBundle(enc, { passphrase: 'correct horse' })).volume.length).toBe(120_000);
    for (const [keys, msg] of [
      [{ passphrase: 'wrong' }, /wrong passphrase/],
      [{}, /no passphrase was given/],
    ] as const) {
      const err = await BundleReader.open(Readable.from([enc]), 'mem://b', keys).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PassphraseError);
      expect((err as PassphraseError).exitCode).toBe(2);
      expect((err as Error).message).toMatch(msg);
    }
  });

  it('a changed byte of the ciphertext fails the read (exit 7), not garbage', async () => {
    const { identity, recipient } = await keypair();
    const enc = await encrypt(await plainBundle(Buffer.alloc(300_000, 3)), { recipients: [recipient] });
    const bad = Buffer.from(enc);
    bad[bad.length - 5000]! ^= 1;
    const err = await readBundle(bad, { identities: [identity] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect((err as BundleError).exitCode).toBe(7);
    // cut short at a chunk boundary: the final chunk is missing
    const cut = enc.subarray(0, enc.length - 1000);
    expect(await readBundle(cut, { identities: [identity] }).catch((e: unknown) => e)).toBeInstanceOf(BundleError);
  });

  it("bundles in ferry's former format (FERRYENC) still read", async () => {
    const plain = await plainBundle();
    const k = await newKey('old pass', { createdAt: '2026-01-01T00:00:00.000Z', containers: ['web'] });
    const chunks = [k.header];
    let i = 0n;
    for (let o = 0; o < plain.length; o += CHUNK) {
      const last = o + CHUNK >= plain.length;
      chunks.push(sealChunk(k, i++, plain.subarray(o, o + CHUNK), last));
    }
    const old = Buffer.concat(chunks);
    expect(old.subarray(0, 8).toString()).toBe('FERRYENC');
    const { volume, reader } = await readBundle(old, { passphrase: 'old pass' });
    expect(volume.length).toBe(120_000);
    expect(reader.encryption).toMatchObject({ format: 'ferry', kdf: 'scrypt' });
    const err = await readBundle(old, { passphrase: 'nope' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PassphraseError);
    // and a plain bundle is still a plain bundle
    expect((await readBundle(plain, {})).reader.encryption).toBeUndefined();
  });

  it('recipients files and identity files: comments and blank lines; anything else is a usage error', async () => {
    const a = await keypair();
    const b = await keypair();
    expect(parseRecipients(`# ops\n${a.recipient}\n\n  ${b.recipient}  \n`, 'r.txt')).toEqual([
      a.recipient,
      b.recipient,
    ]);
    expect(() => parseRecipients('# none\n', 'r.txt')).toThrow(UsageError);
    expect(() => parseRecipients('ssh-ed25519 AAAAC3Nz...\n', 'r.txt')).toThrow(
      /r\.txt line 1: .*not an age X25519 recipient/,
    );
    // a recipient with a bad checksum
    const typo = a.recipient.slice(0, -1) + (a.recipient.endsWith('q') ? 'p' : 'q');
    expect(() => parseRecipients(typo, 'r.txt')).toThrow(UsageError);
    const text = `# created: 2026-12-07\n# public key: ${a.recipient}\n${a.identity}\n`;
    expect(parseIdentities(text, 'k.txt')).toEqual([a.identity]);
    expect(() => parseIdentities('AGE-SECRET-KEY-1XYZ\n', 'k.txt')).toThrow(UsageError);
    expect(() => parseIdentities('', 'k.txt')).toThrow(/holds no identity/);
  });

  it('the encrypting store writes age to recipients; ls reads the clear meta without the identity', async () => {
    const dir = await fs.mkdtemp(path.join(tmpdir(), 'ferry-age-'));
    try {
      const { identity, recipient } = await keypair();
      const store = openStore(dir, {}, { encrypt: { recipients: [recipient] } });
      const plain = await plainBundle();
      const meta = { createdAt: '2026-12-07T03:00:00.000Z', containers: ['web'] };
      await writeBundle(await store.create('e.tar', { meta }), plain);
      const raw = await fs.readFile(path.join(dir, 'e.tar'));
      expect(raw.subarray(0, AGE_MAGIC.length).equals(AGE_MAGIC)).toBe(true);
      expect(raw.includes('volume data')).toBe(false);
      const [locked] = await listCatalog(openStore(dir), undefined);
      expect(locked).toMatchObject({ encrypted: true, created: meta.createdAt, containers: ['web'] });
      expect(locked!.error).toBeUndefined();
      const [open] = await listCatalog(openStore(dir), undefined, undefined, [identity]);
      expect(open).toMatchObject({ encrypted: true, formatVersion: 1, containers: ['web'] });
      expect(open!.manifest?.createdAt).toBe('2024-03-01T10:00:00.000Z');
      // read back through the store with the identity
      const back = openStore(dir, {}, { encrypt: { recipients: [recipient], identities: [identity] } });
      expect((await readAll((await back.open('e.tar')).stream)).equals(plain)).toBe(true);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!hasAge)('opens with the age CLI (age -d -i) as a valid tar; ferry reads what age wrote', async () => {
    const dir = await fs.mkdtemp(path.join(tmpdir(), 'ferry-age-cli-'));
    try {
      const { identity, recipient } = await keypair();
      await fs.writeFile(path.join(dir, 'key.txt'), identity + '\n', { mode: 0o600 });
      const plain = await plainBundle();
      await fs.writeFile(
        path.join(dir, 'b.tar'),
        await encrypt(plain, { recipients: [recipient] }, { createdAt: 'x', containers: ['web'] }),
      );
      const out = execFileSync('age', ['-d', '-i', path.join(dir, 'key.txt'), path.join(dir, 'b.tar')]);
      expect(out.equals(plain)).toBe(true);
      const names = execFileSync('tar', ['-tf', '-'], { input: out }).toString().trim().split('\n');
      expect(names[0]).toBe('manifest.json');
      expect(names).toContain(VOLUME_MEMBER);
      // the other way: the age CLI encrypts a bundle to our recipient, ferry opens it
      const byAge = execFileSync('age', ['-r', recipient], { input: plain });
      expect((await readBundle(byAge, { identities: [identity] })).volume.length).toBe(120_000);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('streams: 2 GiB through encrypt and decrypt with flat memory', { timeout: 300_000 }, async () => {
    const { identity, recipient } = await keypair();
    const TOTAL = 2 * 1024 ** 3;
    const block = Buffer.alloc(1 << 20);
    for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i);
    let sent = 0;
    const src = new Readable({
      read() {
        if (sent >= TOTAL) return void this.push(null);
        sent += block.length;
        this.push(Buffer.from(block));
      },
    });
    const base = process.memoryUsage().rss;
    let peak = base;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
    try {
      const enc = await ageEncrypt(src, { recipients: [recipient] });
      const dec = await ageDecrypt(enc, { identities: [identity] }, 'mem://big');
      const h = createHash('sha256');
      let n = 0;
      for await (const c of dec) {
        h.update(c as Buffer);
        n += (c as Buffer).length;
      }
      expect(n).toBe(TOTAL);
      const want = createHash('sha256');
      for (let i = 0; i < TOTAL / block.length; i++) want.update(block);
      expect(h.digest('hex')).toBe(want.digest('hex'));
    } finally {
      clearInterval(timer);
    }
    // one chunk and the pipes' buffers, not the data: far below the 2 GiB streamed
    expect(peak - base).toBeLessThan(200 * 1024 ** 2);
  });
});
