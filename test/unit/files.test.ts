/** `ferry ls <bundle> --files` and `ferry cat` (src/ops/files.ts) on bundles the backup op writes from the engine fake. */
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, type BackupOptions } from '../../src/ops/backup.js';
import { LocalTransport } from '../../src/store/local.js';
import { readTarget, writeTarget } from '../../src/store/registry.js';
import { catFile, listFiles, memberPath, parseVolumePath, type FileEntry } from '../../src/ops/files.js';
import { modeString } from '../../src/cli/commands/ls.js';
import { BundleError, NotFoundError, UsageError } from '../../src/errors.js';
import { main } from '../../src/cli/main.js';
import { runContext, sourceEngine, tempDir, useTempStateDir, APP_FILES } from '../helpers/ops-fixtures.js';
import { schemaChecked } from '../helpers/json-schema.js';

process.setMaxListeners(100);
const OPTS: BackupOptions = { containers: ['app', 'app2'], codec: 'gzip', includeBinds: false };
const BIG = Buffer.alloc(3 << 20);
for (let i = 0; i < BIG.length; i++) BIG[i] = (i * 7 + (i >> 12)) & 0xff;

let restoreState: () => Promise<void>;
let dir = '';
let plain = '';
let encrypted = '';
beforeAll(async () => {
  restoreState = await useTempStateDir();
  dir = await tempDir('ferry-files-');
  const fake = await sourceEngine();
  fake.addVolume('bigdata', { 'blob.bin': '' }).files.get('blob.bin')!.data = BIG; // every byte value
  fake.addContainer('app2', { image: 'shop/app:1', volumes: { bigdata: '/big' } });
  const { ctx } = runContext();
  plain = (await backup(fake, new LocalTransport(path.join(dir, 'plain.tar')), OPTS, ctx)).location;
  encrypted = (
    await backup(fake, writeTarget(path.join(dir, 'enc.tar'), {}, { encrypt: { passphrase: 'pw' } }), OPTS, ctx)
  ).location;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await restoreState();
});

const ctx = (passphrase?: string) => ({ signal: new AbortController().signal, ...(passphrase ? { passphrase } : {}) });

async function list(file: string, passphrase?: string, volume?: string): Promise<FileEntry[]> {
  const out: FileEntry[] = [];
  await listFiles(readTarget(file), ctx(passphrase), (e) => void out.push(e), volume ? { volume } : {});
  return out;
}

async function cat(file: string, spec: string, passphrase?: string): Promise<Buffer> {
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (c: Buffer) => chunks.push(c));
  await catFile(readTarget(file), ctx(passphrase), parseVolumePath(spec), sink);
  return Buffer.concat(chunks);
}

describe('ls --files', () => {
  it('lists every file of every volume with path, type, size, mode, owner and mtime', async () => {
    const files = await list(plain);
    const app = Object.fromEntries(files.filter((f) => f.name === 'appdata').map((f) => [f.path, f]));
    expect(Object.keys(app).sort()).toEqual([
      '/',
      '/README.txt',
      '/db',
      '/db/index',
      '/db/index/keys.bin',
      '/db/records.txt',
    ]);
    expect(app['/']).toMatchObject({ type: 'directory', mode: 0o700, uid: 999, gid: 999, source: 'volume' });
    expect(app['/']!.mtime.toISOString()).toBe('2024-05-06T07:08:09.000Z');
    expect(app['/db/records.txt']).toMatchObject({ type: 'file', size: APP_FILES['db/records.txt'].length });
    expect(files.find((f) => f.path === '/blob.bin')).toMatchObject({ name: 'bigdata', size: BIG.length });
    expect(modeString('directory', 0o700)).toBe('drwx------');
    expect(modeString('file', 0o4755)).toBe('-rwsr-xr-x');
    expect(modeString('directory', 0o1777)).toBe('drwxrwxrwt');
  });

  it('--volume narrows it; an unknown volume is named with the ones there are', async () => {
    expect(new Set((await list(plain, undefined, 'bigdata')).map((f) => f.name))).toEqual(new Set(['bigdata']));
    const err = await list(plain, undefined, 'nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as NotFoundError).hint).toMatch(/appdata.*bigdata|bigdata.*appdata/);
  });

  it('reads an encrypted bundle with the passphrase, and refuses without it', async () => {
    expect((await list(encrypted, 'pw')).map((f) => f.path)).toEqual((await list(plain)).map((f) => f.path));
    const err = await list(encrypted).catch((e: unknown) => e);
    expect((err as { exitCode: number }).exitCode).toBe(2);
  });
});

describe('cat', () => {
  it('writes one file, byte for byte, from a plain and an encrypted bundle', async () => {
    expect((await cat(plain, 'appdata:db/records.txt')).toString()).toBe(APP_FILES['db/records.txt']);
    expect((await cat(plain, 'appdata:/README.txt')).toString()).toBe(APP_FILES['README.txt']);
    expect((await cat(encrypted, 'bigdata:/blob.bin', 'pw')).equals(BIG)).toBe(true);
  });

  it('names what is missing or not a file', async () => {
    const e1 = await cat(plain, 'appdata:/nope').catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(NotFoundError);
    expect((e1 as Error).message).toMatch(/\/nope is not in volume appdata/);
    const e2 = await cat(plain, 'other:/x').catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(NotFoundError);
    const e3 = await cat(plain, 'appdata:/db').catch((e: unknown) => e);
    expect(e3).toBeInstanceOf(UsageError);
    expect((e3 as Error).message).toMatch(/is a directory/);
    expect(() => parseVolumePath('nocolon')).toThrow(UsageError);
    expect(() => parseVolumePath('v:')).toThrow(UsageError);
    expect(parseVolumePath('v:a/../b/./c/')).toEqual({ volume: 'v', path: '/b/c' });
    expect(memberPath('./')).toBe('/');
    expect(memberPath('./sub/a.txt')).toBe('/sub/a.txt');
  });

  it('a bundle damaged after the file fails as damaged (exit 7), although the file was written', async () => {
    const bad = path.join(dir, 'bad.tar');
    const buf = await readFile(plain);
    // flip a byte in the data of the big volume's member (it comes after appdata's)
    const at = buf.indexOf(Buffer.from('volumes/bigdata')) + 512 + 1000;
    expect(at).toBeGreaterThan(1512);
    buf[at] = buf[at]! ^ 0xff;
    await writeFile(bad, buf);
    const err = await cat(bad, 'appdata:/README.txt').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect((err as BundleError).exitCode).toBe(7);
  });
});

async function run(...args: string[]) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  let err = '';
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c) => (err += c));
  const code = await main(['node', 'ferry', ...args], {
    stdout: stdout as unknown as NodeJS.WriteStream,
    stderr: stderr as unknown as NodeJS.WriteStream,
  });
  return { code, stdout: Buffer.concat(out), stderr: err };
}

describe('the CLI', () => {
  it('ls --files as text and as JSON (schema-checked); cat to stdout and to -o', async () => {
    const t = await run('ls', plain, '--files', '--volume', 'appdata');
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout.toString()).toMatch(/^drwx------ {2}999\/999 +0 {2}2024-05-06 07:08:09Z {2}appdata:\/$/m);
    expect(t.stdout.toString()).toMatch(/ 17 {2}\S+ \S+ {2}appdata:\/db\/records.txt$/m);
    const j = await run('--json', 'ls', plain, '--files');
    expect(j.code, j.stderr).toBe(0);
    const body = schemaChecked(j.stdout.toString()) as { files: { path: string; mode: string; name: string }[] };
    expect(body.files.find((f) => f.path === '/' && f.name === 'appdata')!.mode).toBe('0700');
    const c = await run('cat', plain, 'bigdata:/blob.bin');
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout.equals(BIG)).toBe(true);
    const o = path.join(dir, 'out.bin');
    const co = await run('--json', 'cat', plain, 'appdata:/README.txt', '-o', o);
    expect(co.code, co.stderr).toBe(0);
    expect(schemaChecked(co.stdout.toString())).toMatchObject({ ok: true, bytes: APP_FILES['README.txt'].length });
    expect(await readFile(o, 'utf8')).toBe(APP_FILES['README.txt']);
    const big = path.join(dir, 'big.out');
    const cb = await run('cat', plain, 'bigdata:/blob.bin', '-o', big);
    expect(cb.code, cb.stderr).toBe(0);
    expect((await readFile(big)).equals(BIG)).toBe(true);
    const again = await run('--json', 'cat', plain, 'appdata:/README.txt', '-o', o);
    expect(again.code, again.stdout.toString()).toBe(6);
    expect(schemaChecked(again.stdout.toString()), again.stdout.toString()).toMatchObject({
      command: 'cat',
      ok: false,
    });
    const missing = await run('--json', 'cat', plain, 'appdata:/nope', '-o', path.join(dir, 'none.bin'));
    expect(missing.code).toBe(5);
    expect(schemaChecked(missing.stdout.toString())).toMatchObject({
      command: 'cat',
      ok: false,
      error: { exitCode: 5 },
    });
    expect((await readdir(dir)).filter((n) => n.includes('.part') || n === 'none.bin')).toEqual([]);
  });
});
