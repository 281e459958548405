import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIG_MEMBER, SUMS_MEMBER } from '../../src/bundle/manifest.js';
import { BundleReader } from '../../src/bundle/reader.js';
import { BUNDLE_NAMESPACE, parseAllowedSigners, type Trust } from '../../src/bundle/trust.js';
import { BundleWriter } from '../../src/bundle/writer.js';
import { BundleError, TrustError } from '../../src/errors.js';
import { keyFileSigner } from '../../src/ssh/sign-key.js';
import { IMAGE_MEMBER, VOLUME_MEMBER, makeManifest, MemorySink } from './bundle-fixtures.js';
import { packTar, tarEntries } from '../helpers/tar.js';

let dir: string;
let trust: Trust;
const volume = randomBytes(3000);
const image = randomBytes(5000);

const pub = (name: string) =>
  readFileSync(join(dir, `${name}.pub`), 'utf8')
    .trim()
    .split(' ')
    .slice(0, 2)
    .join(' ');

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-signed-'));
  for (const k of ['host-a', 'other'])
    execFileSync('ssh-keygen', ['-t', 'ed25519', '-q', '-N', '', '-C', k, '-f', join(dir, k)]);
  writeFileSync(join(dir, 'allowed_signers'), `host-a ${pub('host-a')}\n`);
  trust = parseAllowedSigners(readFileSync(join(dir, 'allowed_signers'), 'utf8'), join(dir, 'allowed_signers'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function write(seekable: boolean, key?: string): Promise<Buffer> {
  const sink = new MemorySink(seekable);
  const w = new BundleWriter(sink, makeManifest(), key ? { signer: await keyFileSigner(join(dir, key)) } : {});
  await w.begin();
  await w.addMember(VOLUME_MEMBER, Readable.from([volume]), 'none');
  await w.addMember(IMAGE_MEMBER, Readable.from([image]), 'gzip');
  w.recordImage({ ref: 'ferry/web:backup-20240301', id: 'sha256:' + 'ab'.repeat(32), layers: [] });
  await w.finish();
  return sink.data;
}

/** Read the whole bundle; the reader (for its signer) or the error. */
async function read(bundle: Buffer, t?: Trust): Promise<BundleReader> {
  const r = await BundleReader.open(Readable.from([bundle]), 'mem://bundle', { trust: t });
  for await (const m of r.members()) m.stream.resume();
  return r;
}

/** A tar of just these names and contents (the rest of each header: tar-stream's defaults). */
const pack = (list: { name: string; data: Buffer }[]) => packTar(list.map(({ name, data }) => ({ name, data })));

const refusal = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a refusal');
};

describe.each([
  ['file', true],
  ['stream', false],
])('signed %s bundle', (_kind, seekable) => {
  it('ends with SHA256SUMS (listing manifest.json and trailer.json) and its signature, and reads under --trust', async () => {
    const bundle = await write(seekable, 'host-a');
    const names = (await tarEntries(bundle)).map((e) => e.name);
    expect(names.slice(-3)).toEqual(['trailer.json', SUMS_MEMBER, SIG_MEMBER]);
    const sums = (await tarEntries(bundle)).find((e) => e.name === SUMS_MEMBER)!.data.toString();
    expect(sums.split('\n')[0]).toMatch(/^[0-9a-f]{64} {2}manifest\.json$/);
    expect(sums.trimEnd().split('\n').at(-1)).toMatch(/^[0-9a-f]{64} {2}trailer\.json$/);
    const r = await read(bundle, trust);
    expect(r.signer).toMatchObject({ principals: ['host-a'], trustedBy: trust.file });
    expect(r.signer!.key).toBe(pub('host-a'));
    // without --trust the signature is still checked, and the signer reported
    expect((await read(bundle)).signer?.fingerprint).toMatch(/^SHA256:/);
    // an unsigned bundle reads as before without --trust
    expect((await read(await write(seekable))).signer).toBeUndefined();
  });

  it('can be checked with tar, ssh-keygen -Y verify and sha256sum -c alone', async () => {
    const bundle = await write(seekable, 'host-a');
    const x = mkdtempSync(join(dir, 'x-'));
    writeFileSync(join(x, 'b.tar'), bundle);
    execFileSync('tar', ['-xf', 'b.tar'], { cwd: x });
    const out = execFileSync(
      'ssh-keygen',
      ['-Y', 'verify', '-f', trust.file, '-I', 'host-a', '-n', BUNDLE_NAMESPACE, '-s', SIG_MEMBER],
      { cwd: x, input: readFileSync(join(x, SUMS_MEMBER)), encoding: 'utf8' },
    );
    expect(out).toContain('Good');
    expect(execFileSync('sha256sum', ['-c', SUMS_MEMBER], { cwd: x, encoding: 'utf8' })).toMatch(/manifest.json: OK/);
  });

  it('refuses under --trust: unsigned, another key, a changed manifest, a removed or replaced signature', async () => {
    const unsigned = await refusal(read(await write(seekable), trust));
    expect(unsigned).toBeInstanceOf(TrustError);
    expect(unsigned.message).toMatch(/is not signed; --trust .*allowed_signers/);

    const other = await refusal(read(await write(seekable, 'other'), trust));
    expect(other).toBeInstanceOf(TrustError);
    expect(other.message).toContain('not an allowed signer in ' + trust.file);
    expect(other.message).toMatch(/ssh-ed25519 SHA256:/);

    const good = await tarEntries(await write(seekable, 'host-a'));
    // one byte of the manifest changed (the host name), nothing else
    const edited = good.map((e) =>
      e.name === 'manifest.json' ? { ...e, data: Buffer.from(e.data.toString().replace('src-host', 'src-hosx')) } : e,
    );
    const tampered = await refusal(read(await pack(edited), trust));
    expect(tampered).toBeInstanceOf(TrustError);
    expect(tampered.message).toMatch(/manifest.json does not match the signed SHA256SUMS.*checked against/);
    // without --trust the same bundle is damaged
    expect(await refusal(read(await pack(edited)))).toBeInstanceOf(BundleError);

    const stripped = await refusal(read(await pack(good.filter((e) => e.name !== SIG_MEMBER)), trust));
    expect(stripped).toBeInstanceOf(TrustError);
    expect(stripped.message).toMatch(/SHA256SUMS.sig is missing/);

    // SHA256SUMS rewritten to match the edit: the signature no longer verifies
    const otherSig = (await tarEntries(await write(seekable, 'other'))).find((e) => e.name === SIG_MEMBER)!;
    const swapped = await refusal(read(await pack(good.map((e) => (e.name === SIG_MEMBER ? otherSig : e))), trust));
    expect(swapped).toBeInstanceOf(TrustError);
    expect(swapped.message).toMatch(/not the key the manifest declares/);
  });
});
