/**
 * `ferry ls <bundle> --files` and `ferry cat` on bundles of a real volume: the listing matches
 * what stat says inside the container (size, mode with setuid, owner, mtime; links as links),
 * and cat gives the file byte for byte, from a local encrypted bundle and from an S3 store.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ferry, s3Env, s3Url, uid } from '../helpers/lab.js';
import { schemaChecked } from '../helpers/json-schema.js';
import { s3Clean } from '../helpers/s3.js';

const name = uid('files');
const vol = `${name}-data`;
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-files-'));
const prefix = uid('e2e-files');
const PASS = 'files-test-passphrase';
let localBundle = '';
let s3Bundle = '';

interface FileJson {
  source: string;
  name: string;
  path: string;
  type: string;
  size: number;
  mode: string;
  uid: number;
  gid: number;
  mtime: string;
  linkname?: string;
}

beforeAll(async () => {
  docker(['run', '-d', '--name', name, '-v', `${vol}:/data`, BUSYBOX, 'sleep', '100000']);
  docker([
    'exec',
    name,
    'sh',
    '-c',
    [
      'mkdir -p /data/sub/deep',
      'printf hello > /data/a.txt',
      'head -c 3000000 /dev/urandom > /data/sub/big.bin',
      'ln /data/a.txt /data/sub/hard.txt',
      'ln -s ../a.txt /data/sub/link',
      'printf x > /data/sub/deep/suid && chmod 4750 /data/sub/deep/suid',
      'chown 1000:1001 /data/a.txt',
      'touch -d "2020-02-03 04:05:06" /data/sub/big.bin',
    ].join(' && '),
  ]);
  const b = await ferry(['--json', 'backup', name, '-o', dir, '--encrypt'], { env: { FERRY_PASSPHRASE: PASS } });
  expect(b.code, b.stderr).toBe(0);
  localBundle = (JSON.parse(b.stdout) as { bundle: string }).bundle;
  const s = await ferry(['--json', 'backup', name, '-o', s3Url(prefix)], { env: s3Env() });
  expect(s.code, s.stderr).toBe(0);
  s3Bundle = `${s3Url(prefix)}/${path.basename((JSON.parse(s.stdout) as { bundle: string }).bundle)}`;
}, 120_000);

afterAll(async () => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol, `${vol}-copy`, `${vol}-restored`] });
  rmSync(dir, { recursive: true, force: true });
  await s3Clean(prefix).catch(() => {});
});

/** What stat says in the container: path -> [type, size, octal mode, uid, gid, mtime seconds]. */
function statInContainer(): Map<string, string[]> {
  const out = docker(['exec', name, 'sh', '-c', "cd /data && find . -exec stat -c '%n|%F|%s|%a|%u|%g|%Y' {} +"]);
  return new Map(
    out.split('\n').map((l) => {
      const [n, ...rest] = l.split('|');
      return [n === '.' ? '/' : n!.replace(/^\./, ''), rest];
    }),
  );
}

describe('ls --files', () => {
  it('lists what stat sees in the volume, from an encrypted local bundle', async () => {
    const r = await ferry(['--json', 'ls', localBundle, '--files'], { env: { FERRY_PASSPHRASE: PASS } });
    expect(r.code, r.stderr).toBe(0);
    const files = (schemaChecked(r.stdout) as unknown as { files: FileJson[] }).files;
    const seen = statInContainer();
    expect(files.map((f) => f.path).sort()).toEqual([...seen.keys()].sort());
    for (const f of files) {
      const [type, size, mode, u, g, mtime] = seen.get(f.path)!;
      expect(f.name).toBe(vol);
      expect(Number.parseInt(f.mode, 8), f.path).toBe(Number.parseInt(mode!, 8));
      expect([f.uid, f.gid], f.path).toEqual([Number(u), Number(g)]);
      expect(Math.floor(Date.parse(f.mtime) / 1000), f.path).toBe(Number(mtime));
      if (f.type === 'file') expect(f.size, f.path).toBe(Number(size));
      if (type === 'directory') expect(f.type).toBe('directory');
      if (type === 'symbolic link') expect(f).toMatchObject({ type: 'symlink', linkname: '../a.txt' });
    }
    // one of the two names of the hard-linked file is a link to the other
    const pair = files.filter((f) => f.path === '/a.txt' || f.path === '/sub/hard.txt');
    expect(pair.map((f) => f.type).sort()).toEqual(['file', 'link']);
    expect(files.find((f) => f.path === '/sub/deep/suid')!.mode).toBe('4750');

    const text = await ferry(['ls', localBundle, '--files'], { env: { FERRY_PASSPHRASE: PASS } });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^-rwsr-x---  0/0 +1  \\S+ \\S+  ${vol}:/sub/deep/suid$`, 'm'));
    const noPass = await ferry(['ls', localBundle, '--files'], { env: { FERRY_PASSPHRASE: undefined } });
    expect(noPass.code).toBe(2);
  });

  it('lists a bundle in an S3 store the same way', async () => {
    const r = await ferry(['--json', 'ls', s3Bundle, '--files', '--volume', vol], { env: s3Env() });
    expect(r.code, r.stderr).toBe(0);
    const files = (schemaChecked(r.stdout) as unknown as { files: FileJson[] }).files;
    expect(files.map((f) => f.path).sort()).toEqual([...statInContainer().keys()].sort());
  });
});

describe('cat', () => {
  it('writes the file byte for byte, locally (encrypted) and from S3, and refuses what is not a file', async () => {
    const want = docker(['exec', name, 'sha256sum', '/data/sub/big.bin']).split(' ')[0];
    const out = path.join(dir, 'big.bin');
    const r = await ferry(['cat', localBundle, `${vol}:/sub/big.bin`], {
      env: { FERRY_PASSPHRASE: PASS },
      stdoutFile: out,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(createHash('sha256').update(readFileSync(out)).digest('hex')).toBe(want);
    const o = path.join(dir, 'from-s3.bin');
    const s = await ferry(['--json', 'cat', s3Bundle, `${vol}:sub/big.bin`, '-o', o], { env: s3Env() });
    expect(s.code, s.stderr).toBe(0);
    expect(schemaChecked(s.stdout)).toMatchObject({ ok: true, bytes: 3_000_000, file: { mode: '0644' } });
    expect(createHash('sha256').update(readFileSync(o)).digest('hex')).toBe(want);
    const small = await ferry(['cat', localBundle, `${vol}:/a.txt`], { env: { FERRY_PASSPHRASE: PASS } });
    expect(small.stdout).toBe('hello');
    const link = await ferry(['cat', localBundle, `${vol}:/sub/link`], { env: { FERRY_PASSPHRASE: PASS } });
    expect(link.code).toBe(2);
    expect(link.stderr).toMatch(/symbolic link to \.\.\/a\.txt/);
    const missing = await ferry(['--json', 'cat', localBundle, `${vol}:/nope`], { env: { FERRY_PASSPHRASE: PASS } });
    expect(missing.code).toBe(5);
    expect(schemaChecked(missing.stdout)).toMatchObject({ command: 'cat', ok: false, error: { exitCode: 5 } });
  });
});

describe('restore --only volume:<name>', () => {
  const env = { FERRY_PASSPHRASE: PASS };
  const inVolume = (v: string, cmd: string) => docker(['run', '--rm', '-v', `${v}:/d`, BUSYBOX, 'sh', '-c', cmd]);

  it('restores one volume alone, into a new name, with no container; an existing one per --on-conflict', async () => {
    const want = inVolume(vol, 'sha256sum /d/sub/big.bin').split(' ')[0];
    const r = await ferry(
      ['--json', 'restore', localBundle, '--only', `volume:${vol}`, '--map-volume', `${vol}=${vol}-copy`],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    const j = schemaChecked(r.stdout) as { containers: string[]; plan: { volumes: { from: string; to: string }[] } };
    expect(j.containers).toEqual([]);
    expect(j.plan.volumes).toEqual([expect.objectContaining({ from: vol, to: `${vol}-copy` })]);
    expect(inVolume(`${vol}-copy`, 'sha256sum /d/sub/big.bin').split(' ')[0]).toBe(want);
    expect(inVolume(`${vol}-copy`, "cat /d/a.txt; stat -c ' %a %u:%g' /d/sub/deep/suid /d/a.txt")).toBe(
      'hello 4750 0:0\n 644 1000:1001',
    );
    expect(docker(['ps', '-a', '--filter', `volume=${vol}-copy`, '--format', '{{.Names}}'])).toBe('');

    // the original is in use by the running container: fail (exit 6), then beside it with rename
    const fail = await ferry(['restore', localBundle, '--only', `volume:${vol}`], { env });
    expect(fail.code, fail.stderr).toBe(6);
    const rename = await ferry(['restore', localBundle, '--only', `volume:${vol}`, '--on-conflict', 'rename'], { env });
    expect(rename.code, rename.stderr).toBe(0);
    expect(rename.stdout).toBe(`restored volume ${vol}-restored (from ${vol})\n`);
    expect(inVolume(`${vol}-restored`, 'cat /d/a.txt')).toBe('hello');
    // replace while a container uses it: refused, the container untouched
    const replace = await ferry(['restore', localBundle, '--only', `volume:${vol}`, '--on-conflict', 'replace'], {
      env,
    });
    expect(replace.code).toBe(6);
    expect(replace.stderr).toMatch(new RegExp(`volume ${vol} is also used by ${name}`));
    expect(docker(['inspect', '-f', '{{.State.Running}}', name])).toBe('true');
    // an unknown volume: exit 2, naming the ones there are
    const none = await ferry(['restore', localBundle, '--only', 'volume:nope'], { env });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain(vol);
  });
});
