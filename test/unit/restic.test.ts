/**
 * restic repositories as ferry stores: the pure layout and argument building, the tar rebasing of
 * `restic dump`, and backup -> snapshot -> restore against the fake engine and a fake restic
 * (test/helpers/restic-fake.ts) that stores what it is given as restic 0.14 would.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  backupArgs,
  bindWrap,
  checkLayout,
  dumpArgs,
  forgetArgs,
  optionArgs,
  parseBackupSummary,
  parseResticLocation,
  parseResticOptions,
  parseSnapshots,
  restoreArgs,
  restoresSparse,
  selectSnapshot,
  snapshotsAndSignaturesArgs,
  snapshotTags,
  snapshotsArgs,
  type ResticSnapshot,
} from '../../src/store/restic/layout.js';
import { NodeTimes, paxFor, paxTime, rebase, rebaseName, walkCompare } from '../../src/store/restic/retar.js';
import {
  checkRestic,
  parseResticVersion,
  commandOf,
  ResticCli,
  ResticError,
  ResticUnavailableError,
  resticText,
  stopResticRuns,
} from '../../src/store/restic/runner.js';
import { resticBackup, type ResticBackupOptions } from '../../src/ops/restic-backup.js';
import { directRefusal, openResticSnapshot, snapshotBundle } from '../../src/store/restic/snapshot.js';
import type { HostAccess } from '../../src/hostaccess/access.js';
import { localShell } from '../../src/hostaccess/shell.js';
import type { DirectSource } from '../../src/store/transport.js';
import { signResticSnapshot } from '../../src/ops/restic-sign.js';
import { parseAllowedSigners, type Trust } from '../../src/bundle/trust.js';
import { keyFileSigner } from '../../src/ssh/sign-key.js';
import { restore } from '../../src/ops/restore.js';
import {
  groupSnapshots,
  resticBackupJson,
  resticInspectJson,
  resticLsJson,
  resticPruneJson,
  resticVerifyJson,
} from '../../src/cli/commands/restic.js';
import { resticVerify } from '../../src/ops/restic-verify.js';
import { envelope } from '../../src/cli/json.js';
import { schemaChecked } from '../helpers/json-schema.js';
import { resticPrune, resticRetention } from '../../src/ops/restic-prune.js';
import { TrustError, UsageError } from '../../src/errors.js';
import { hostName } from '../../src/ops/steps/capture.js';
import { silentProgress } from '../../src/context.js';
import type { Manifest } from '../../src/bundle/manifest.js';
import { FakeEngine } from '../helpers/engine-fake.js';
import { FakeRestic } from '../helpers/restic-fake.js';
import { collect, packTar } from '../helpers/tar.js';
import { Command } from 'commander';
import { resticOption } from '../../src/cli/options.js';
import { APP_FILES, runContext, sourceEngine, tempDir, untar, useTempStateDir } from '../helpers/ops-fixtures.js';

describe('restic locations and arguments', () => {
  it('parses restic:<repo>[#snapshot|#container]', () => {
    expect(parseResticLocation('restic:/srv/repo')).toEqual({ repo: '/srv/repo' });
    expect(parseResticLocation('restic:sftp:backup@host:/r#web')).toEqual({
      repo: 'sftp:backup@host:/r',
      container: 'web',
    });
    expect(parseResticLocation('restic:s3:http://127.0.0.1:9000/b#0a1b2c3d')).toEqual({
      repo: 's3:http://127.0.0.1:9000/b',
      snapshot: '0a1b2c3d',
    });
    expect(() => parseResticLocation('restic:')).toThrow(UsageError);
    expect(() => parseResticLocation('restic:/r#a b')).toThrow(UsageError);
    expect(() => parseResticLocation('/srv/repo')).toThrow(UsageError);
  });

  it('builds one backup of relative staging paths, sorted, with host, tags and parent', () => {
    const args = backupArgs('/r', {
      host: 'h1',
      tags: snapshotTags(['web', 'db']),
      parent: 'abc',
      paths: ['volumes', 'manifest.json', 'images'],
    });
    expect(args).toEqual([
      '-r',
      '/r',
      'backup',
      '--json',
      '--host',
      'h1',
      '--tag',
      'ferry,ferry-set=db+web,ferry-container=web,ferry-container=db',
      '--parent',
      'abc',
      '--',
      'images',
      'manifest.json',
      'volumes',
    ]);
    for (const bad of ['/etc', '../x', '-x', 'a/../../b'])
      expect(() => backupArgs('/r', { host: 'h', tags: [], paths: [bad] })).toThrow();
    expect(backupArgs('/r', { host: 'h', tags: ['ferry'], paths: ['a'] })).not.toContain('--parent');
  });

  it('lists, dumps and wraps restic in a mount namespace with read-only binds', () => {
    expect(snapshotsArgs('/r')).toEqual(['-r', '/r', 'snapshots', '--json', '--tag', 'ferry']);
    expect(snapshotsArgs('/r', { tags: ['ferry-set=a'], host: 'h' })).toEqual([
      '-r',
      '/r',
      'snapshots',
      '--json',
      '--tag',
      'ferry-set=a',
      '--host',
      'h',
    ]);
    expect(dumpArgs('/r', 'abc', 'volumes/data')).toEqual([
      '-r',
      '/r',
      'dump',
      '--archive',
      'tar',
      'abc',
      '/volumes/data',
    ]);
    expect(bindWrap([])).toEqual([]);
    const w = bindWrap([
      ['/var/lib/docker/volumes/a/_data', 'volumes/a'],
      ['/x y', 'volumes/b'],
    ]);
    expect(w.slice(0, 4)).toEqual(['unshare', '--mount', '--propagation', 'private']);
    expect(w[6]).toContain('mount --bind -o ro "$1" "$2"');
    // Paths are arguments of the script, never part of it.
    expect(w.slice(7)).toEqual(['sh', '2', '/var/lib/docker/volumes/a/_data', 'volumes/a', '/x y', 'volumes/b']);
  });

  it('parses restic versions and refuses a missing or old restic with one typed error', async () => {
    expect(parseResticVersion('restic 0.14.0 compiled with go1.19.8 on linux/amd64')).toEqual([0, 14, 0]);
    expect(parseResticVersion('something else')).toBeUndefined();
    const fake = new FakeRestic();
    expect(await checkRestic(fake)).toBe('0.14.0');
    fake.version = 'restic 0.13.1 compiled with go1.18 on linux/amd64';
    const old = await checkRestic(fake).catch((e: unknown) => e);
    expect(old).toBeInstanceOf(ResticUnavailableError);
    expect((old as Error).message).toContain('0.13.1');
    expect((old as ResticUnavailableError).hint).toContain('restic');
    const missing = await checkRestic(new ResticCli({ PATH: '/nonexistent' })).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ResticUnavailableError);
    expect((missing as Error).message).toContain('not installed');
  });

  it('interrupts a restic left running with SIGINT (on which restic removes its lock) when the run ends', async () => {
    const bin = await tempDir('ferry-fake-restic-bin-');
    const mark = path.join(bin, 'cleaned');
    // A restic that writes until stopped, and on SIGINT (only) says it cleaned up, as restic does.
    writeFileSync(
      path.join(bin, 'restic'),
      `#!/bin/sh\ntrap 'echo INT > "${mark}"; exit 130' INT\ntrap 'echo TERM > "${mark}"; exit 143' TERM\nwhile :; do echo data; sleep 0.05; done\n`,
      { mode: 0o755 },
    );
    const run = new ResticCli({ PATH: `${bin}:/usr/bin:/bin` }).run({ args: ['-r', '/r', 'dump', 'x', '/f'] });
    await new Promise((res) => run.stdout.once('data', res)); // running, and nobody reads on
    const started = Date.now();
    await stopResticRuns();
    expect(Date.now() - started).toBeLessThan(5000);
    expect(readFileSync(mark, 'utf8')).toBe('INT\n');
    await expect(run.done).rejects.toBeInstanceOf(ResticError);
    await stopResticRuns(); // nothing left: returns at once
    await rm(bin, { recursive: true, force: true });
  });

  it("takes restic's -o options one per line, each one argument, and refuses what is not key=value", () => {
    const cmd = 'ssh -i /k/id x -o "UserKnownHostsFile=/k/known hosts" -p 2222 root@127.0.0.1 -s sftp';
    expect(parseResticOptions(`sftp.command=${cmd}\r\n\ns3.storage-class=STANDARD_IA\n`)).toEqual([
      `sftp.command=${cmd}`,
      's3.storage-class=STANDARD_IA',
    ]);
    expect(parseResticOptions('  \n')).toEqual([]);
    expect(optionArgs(['a.b=1', 'c=x; rm -rf /'])).toEqual(['-o', 'a.b=1', '-o', 'c=x; rm -rf /']);
    for (const bad of ['sftp.command', '=x', '-o=x', '--repo=/x', ' a=b'])
      expect(() => parseResticOptions(bad), bad).toThrow(/not a restic option/);
    // --restic-option: repeatable, a value may hold several lines (FERRY_RESTIC_OPTION), bad ones are usage errors.
    const parse = (argv: string[]) =>
      new Command()
        .exitOverride()
        .configureOutput({ writeErr: () => {} })
        .addOption(resticOption())
        .parse(argv, { from: 'user' })
        .opts().resticOption as string[];
    expect(parse(['--restic-option', 'a=1', '--restic-option', 'b=2\nc=3'])).toEqual(['a=1', 'b=2', 'c=3']);
    expect(() => parse(['--restic-option', 'nokey'])).toThrow(/not a restic option/);
    expect(() => parse(['--restic-option', ''])).toThrow(/expected key=value/);
  });

  it('puts the -o options before every call, as separate arguments, never through a shell', async () => {
    const bin = await tempDir('ferry-fake-restic-bin-');
    writeFileSync(path.join(bin, 'restic'), '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n', {
      mode: 0o755,
    });
    const opt = "sftp.command=ssh -p 2222 'root'@h -s sftp; touch /tmp/pwned-$$";
    const out = await resticText(new ResticCli({ PATH: `${bin}:/usr/bin:/bin` }, undefined, [opt, 'x=1']), {
      args: ['-r', 'sftp:h:/r', 'snapshots', '--json'],
    });
    expect(out.split('\n').slice(0, -1)).toEqual(['-o', opt, '-o', 'x=1', '-r', 'sftp:h:/r', 'snapshots', '--json']);
    await rm(bin, { recursive: true, force: true });
  });

  it('names the restic command of a call in its errors', () => {
    expect(commandOf(['-r', '/r', 'backup', '--json'])).toBe('backup');
    expect(commandOf(['version'])).toBe('version');
  });

  it('parses snapshots and the backup summary', () => {
    expect(parseSnapshots('null')).toEqual([]);
    const summary =
      '{"message_type":"status"}\n{"message_type":"summary","snapshot_id":"abcd1234","data_added":7,"files_new":1,"files_changed":0,"files_unmodified":3,"total_bytes_processed":9,"total_duration":1}\n';
    expect(parseBackupSummary(summary)).toMatchObject({ snapshot_id: 'abcd1234', data_added: 7 });
    expect(() => parseBackupSummary('{"message_type":"status"}')).toThrow();
  });

  const snap = (id: string, time: string, host: string, set: string[]): ResticSnapshot => ({
    id: id.padEnd(64, '0'),
    short_id: id,
    time,
    hostname: host,
    tags: snapshotTags(set),
    paths: [],
  });
  const list = [
    snap('aaaa1111', '2026-01-01T00:00:00Z', 'h1', ['web']),
    snap('bbbb2222', '2026-01-02T00:00:00Z', 'h1', ['web']),
    snap('cccc3333', '2026-01-03T00:00:00Z', 'h2', ['db', 'api']),
    { ...snap('dddd4444', '2026-01-04T00:00:00Z', 'h1', ['web']), tags: ['not-ferry'] },
  ];

  it('selects a snapshot by id, by container (the newest), or the only set', () => {
    expect(selectSnapshot(list, { repo: 'r', snapshot: 'aaaa' })).toMatchObject({ short_id: 'aaaa1111' });
    expect(selectSnapshot(list, { repo: 'r', container: 'web' })).toMatchObject({ short_id: 'bbbb2222' });
    expect(selectSnapshot(list, { repo: 'r', container: 'api' })).toMatchObject({ short_id: 'cccc3333' });
    expect(selectSnapshot(list, { repo: 'r', container: 'nope' })).toContain('no ferry snapshot');
    expect(selectSnapshot(list, { repo: 'r', snapshot: 'dddd4444' })).toContain('no ferry snapshot');
    expect(selectSnapshot(list, { repo: 'r' })).toContain('2 container sets');
    expect(selectSnapshot(list.slice(0, 2), { repo: 'r' })).toMatchObject({ short_id: 'bbbb2222' });
    expect(selectSnapshot([], { repo: 'r' })).toContain('no ferry snapshot');
  });

  it('groups snapshots by host and container set for ls, newest first', () => {
    const g = groupSnapshots(list.slice(0, 3));
    expect(g.map((x) => [x.host, x.set, x.snapshots.map((s) => s.snapshot.slice(0, 8))])).toEqual([
      ['h1', 'web', ['bbbb2222', 'aaaa1111']],
      ['h2', 'api+db', ['cccc3333']],
    ]);
    expect(g[1]!.snapshots[0]!.containers).toEqual(['db', 'api']);
  });

  it('checks a layout against its manifest', () => {
    const m = { members: [{ name: 'volumes/a.tar', kind: 'volume', codec: 'none' }] } as unknown as Manifest;
    const ok = {
      layout: 'ferry-restic',
      version: 1,
      images: [],
      volumes: [{ name: 'a', member: 'volumes/a.tar', kind: 'tree', path: 'volumes/a' }],
    };
    expect(checkLayout(ok, m)).toEqual(ok);
    expect(() => checkLayout({ ...ok, volumes: [] }, m)).toThrow(/does not place/);
    expect(() => checkLayout({ ...ok, version: 2 }, m)).toThrow(UsageError);
    expect(() => checkLayout({ ...ok, volumes: [{ ...ok.volumes[0], path: '../etc' }] }, m)).toThrow(/bad path/);
    expect(() => checkLayout({}, m)).toThrow(/not a ferry backup/);
  });
});

describe('restic restore of a file-tree volume (restic-restore)', () => {
  it('restores one directory of the snapshot under a target, --sparse only where restic has it', () => {
    expect(restoreArgs('/r', 'abc123', 'volumes/data', '/var/lib/docker/volumes/d/.ferry-tree-x')).toEqual([
      '-r',
      '/r',
      'restore',
      'abc123',
      '--target',
      '/var/lib/docker/volumes/d/.ferry-tree-x',
      '--include',
      '/volumes/data',
    ]);
    expect(restoreArgs('/r', 'abc123', '/volumes/data/', '/t', true).slice(-3)).toEqual([
      '--include',
      '/volumes/data',
      '--sparse',
    ]);
    // a pattern character would widen restic's --include; .. would leave the snapshot path
    for (const bad of ['volumes/d*', 'volumes/[a]', 'volumes/../x', '', '/'])
      expect(() => restoreArgs('/r', 'abc123', bad, '/t')).toThrow(/not a snapshot path/);
    expect([
      restoresSparse('0.14.0'),
      restoresSparse('0.15.0'),
      restoresSparse('0.17.3'),
      restoresSparse('1.0.0'),
    ]).toEqual([false, true, true, true]);
  });

  it('is taken only on this host, with host access for volumes, for an unsigned snapshot with trees', () => {
    const local: HostAccess = {
      volumes: { use: true, reason: 'root on this host' },
      layers: { use: false, reason: 'x' },
      shell: localShell,
    };
    expect(directRefusal(local, true, false)).toBeUndefined();
    expect(directRefusal(local, false, false)).toMatch(/no volume as a file tree/);
    expect(directRefusal(local, true, true)).toMatch(/signed/);
    expect(directRefusal({ ...local, volumes: { use: false, reason: 'not root on this host' } }, true, false)).toBe(
      'not root on this host',
    );
    const remote = { ...local, shell: { ...localShell, where: 'db1 (ssh)' } };
    expect(directRefusal(remote, true, false)).toMatch(/db1 \(ssh\); restic runs on this host/);
  });
});

describe('rebasing restic dump archives', () => {
  it('renames entries under a prefix', () => {
    expect(rebaseName('volumes/data/a.txt', 'volumes/data', true)).toBe('./a.txt');
    expect(rebaseName('volumes/data/sub/', '/volumes/data/', true)).toBe('./sub/');
    expect(rebaseName('images/web/manifest.json', 'images/web', false)).toBe('manifest.json');
    expect(rebaseName('volumes/database/x', 'volumes/data', true)).toBeUndefined();
    expect(rebaseName('volumes/data/', 'volumes/data', true)).toBeUndefined();
  });

  it('puts the root first, keeps data, owners, modes, links and long names', async () => {
    const long = 'd/' + 'x'.repeat(150);
    const mtime = new Date('2020-01-02T03:04:05Z');
    const dump = await packTar([
      { name: 'volumes/v/a.txt', mode: 0o4755, uid: 1000, gid: 1001, mtime, data: 'hello' },
      { name: 'volumes/v/d/', type: 'directory', mode: 0o1777, mtime },
      { name: `volumes/v/${long}`, mode: 0o600, mtime, data: 'long' },
      { name: 'volumes/v/l', type: 'symlink', linkname: '../outside', mtime },
    ]);
    const out = rebase(Readable.from([dump]), 'volumes/v', {
      dotSlash: true,
      root: { mode: 0o40700, uid: 999, gid: 998, mtime: 1_700_000_000 },
    });
    const entries = await untar(await collect(out));
    expect([...entries.keys()]).toEqual(['./', './a.txt', './d/', `./${long}`, './l']);
    const root = entries.get('./')!.header;
    expect([root.type, root.mode, root.uid, root.gid, root.mtime!.getTime()]).toEqual([
      'directory',
      0o700,
      999,
      998,
      1_700_000_000_000,
    ]);
    const a = entries.get('./a.txt')!;
    expect([a.data.toString(), a.header.mode, a.header.uid, a.header.gid]).toEqual(['hello', 0o4755, 1000, 1001]);
    expect(entries.get('./d/')!.header.mode).toBe(0o1777);
    expect(entries.get(`./${long}`)!.data.toString()).toBe('long');
    expect(entries.get('./l')!.header.linkname).toBe('../outside');
  });

  it('orders paths as restic walks them, and turns RFC 3339 times into PAX times', () => {
    expect(walkCompare('/v/a', '/v/a-c')).toBeLessThan(0);
    expect(walkCompare('/v/a/b', '/v/a-c')).toBeLessThan(0); // a's subtree before a-c
    expect(walkCompare('/v/b', '/v/a/z')).toBeGreaterThan(0);
    expect(walkCompare('/v/a', '/v/a')).toBe(0);
    expect(paxTime('2026-12-07T06:21:47.825583066Z')).toBe(`${Date.parse('2026-12-07T06:21:47Z') / 1000}.825583066`);
    expect(paxTime('2020-01-02T03:04:05Z')).toBe(`${Date.parse('2020-01-02T03:04:05Z') / 1000}.000000000`);
    expect(paxTime('yesterday')).toBeUndefined();
  });

  it('adds PAX records for large owner ids and exact mtimes, and drops stale path records', () => {
    expect(paxFor({ uid: 1000, gid: 1000 })).toBeUndefined();
    expect(
      paxFor({ uid: 300000, gid: 5, pax: { path: 'old/name', linkpath: 'old', 'SCHILY.xattr.x': 'y' } }, '1.5'),
    ).toEqual({
      uid: '300000',
      'SCHILY.xattr.x': 'y',
      mtime: '1.5',
    });
  });

  it('looks up exact mtimes from restic ls in step with the dump, skipping what the dump lacks', async () => {
    const node = (p: string, mtime: string) => JSON.stringify({ struct_type: 'node', path: p, mtime });
    const lines = [
      JSON.stringify({ struct_type: 'snapshot', id: 'x' }),
      node('/v', '2020-01-01T00:00:00.1Z'),
      node('/v/a', '2020-01-01T00:00:01.2Z'),
      node('/v/a/x', '2020-01-01T00:00:02.3Z'),
      node('/v/fifo', '2020-01-01T00:00:03.4Z'),
      node('/v/z', '2020-01-01T00:00:04.5Z'),
    ];
    const t = new NodeTimes(Readable.from([lines.join('\n') + '\n']));
    expect(await t.mtime('/v/a')).toBe('2020-01-01T00:00:01.2Z');
    expect(await t.mtime('/v/a/x')).toBe('2020-01-01T00:00:02.3Z');
    expect(await t.mtime('/v/b')).toBeUndefined(); // not listed: /v/fifo skipped, /v/z kept for later
    expect(await t.mtime('/v/z')).toBe('2020-01-01T00:00:04.5Z');
    expect(await t.mtime('/v/zz')).toBeUndefined();
    await t.drain();
  });

  it('restores exact mtimes and large owner ids through the rebased archive', async () => {
    // restic's dump (Go's tar): the mtime rounded to the nearest second, owner ids above 262143
    // as 7 octal digits (tar-stream writes only 6, so the fields are patched in here).
    const input = await packTar([
      { name: 'volumes/v/a', mtime: new Date('2020-01-01T00:00:02Z'), uid: 1, gid: 1, mode: 0o644, data: 'x' },
    ]);
    input.write('1111740\0', 108, 'ascii');
    input.write('1111741\0', 116, 'ascii');
    input.fill(' ', 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += input[i]!;
    input.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
    const ls = Readable.from([
      JSON.stringify({ struct_type: 'node', path: '/volumes/v/a', mtime: '2020-01-01T00:00:01.75Z' }) + '\n',
    ]);
    const out = rebase(Readable.from([input]), 'volumes/v', { dotSlash: true, times: new NodeTimes(ls) });
    const a = (await untar(await collect(out))).get('./a')!;
    expect(a.header.mtime!.getTime()).toBe(Date.parse('2020-01-01T00:00:01Z')); // truncated, as the engine's archive has it
    // The ids go in PAX records (which the engine's tar reads; the ustar fields cannot hold them).
    expect(a.header.pax).toEqual({
      path: './a', // tar-stream writes the name into the PAX header it makes
      mtime: `${Date.parse('2020-01-01T00:00:01Z') / 1000}.750000000`,
      uid: '300000',
      gid: '300001',
    });
    expect(a.data.toString()).toBe('x');
  });

  it('fails when the dump does', async () => {
    const broken = new Readable({ read() {} });
    const out = rebase(broken, 'volumes/v', { dotSlash: true });
    setImmediate(() => broken.destroy(new Error('dump died')));
    await expect(
      (async () => {
        for await (const _ of out) void _;
      })(),
    ).rejects.toThrow('dump died');
  });
});

describe('backup into and restore from a restic repository (fake engine, fake restic)', () => {
  let restoreState: () => Promise<void>;
  let stageRoot: string;
  beforeAll(async () => {
    restoreState = await useTempStateDir();
  });
  afterAll(async () => restoreState());

  let fake: FakeEngine;
  let restic: FakeRestic;
  let opts: ResticBackupOptions;
  beforeEach(async () => {
    fake = await sourceEngine();
    restic = new FakeRestic();
    restic.onCall = (c) => fake.timeline.push(`restic:${c}`);
    stageRoot = path.join(await tempDir(), 'stage');
    opts = { containers: ['app'], repo: '/repo', runner: restic, stageRoot };
  });

  it('writes one snapshot: manifest, layout, the image one file per layer, the volume as a tar (no host access)', async () => {
    const { ctx } = runContext();
    const res = await resticBackup(fake, opts, ctx);
    expect(restic.snapshots).toHaveLength(1);
    const s = restic.snapshots[0]!;
    expect(res.snapshot).toBe(s.meta.id.slice(0, 8));
    expect(s.meta.hostname).toBe(hostName());
    expect(s.meta.tags).toEqual(['ferry', 'ferry-set=app', 'ferry-container=app']);
    const files = [...s.nodes.keys()];
    expect(files).toEqual(expect.arrayContaining(['/manifest.json', '/ferry-restic.json', '/volumes/appdata.tar']));
    // The image archive unpacked: its manifest and a file per layer.
    expect(files).toContain('/images/app/manifest.json');
    const layers = files.filter((f) => f.startsWith('/images/app/') && f.endsWith('/layer.tar'));
    expect(layers.length).toBe(3); // two of shop/app:1, one committed
    const manifest = JSON.parse(s.nodes.get('/manifest.json')!.data!.toString()) as Manifest;
    expect(manifest.members.map((m) => [m.name, m.codec])).toEqual([
      ['volumes/appdata.tar', 'none'],
      ['images/app.tar', 'none'],
    ]);
    const volume = await untar(s.nodes.get('/volumes/appdata.tar')!.data!);
    expect(volume.get('./README.txt')!.data.toString()).toBe(APP_FILES['README.txt']);
    expect(res.volumes).toEqual([{ name: 'appdata', layout: 'tar', reason: expect.any(String) }]);
    // No bind: restic runs without a mount namespace, and after the container is back.
    const backupCall = restic.calls.find((c) => c.args.includes('backup'))!;
    expect(backupCall.wrap).toEqual([]);
    const t = fake.timeline;
    expect(t.indexOf('call:pause')).toBeLessThan(t.indexOf('call:commit'));
    expect(t.indexOf('end:getArchive')).toBeLessThan(t.indexOf('call:unpause'));
    expect(t.indexOf('call:unpause')).toBeLessThan(t.indexOf('restic:backup'));
    expect(fake.containerByName('app')!.status).toBe('running');
    // The committed image and the staging directory are gone.
    expect([...fake.images.values()].some((i) => i.repoTags.some((r) => r.startsWith('ferry/')))).toBe(false);
    expect(await readdir(stageRoot)).toEqual([]);
  });

  it('gives the previous snapshot of the same set from this host as the parent', async () => {
    const { ctx } = runContext();
    const first = await resticBackup(fake, opts, ctx);
    const second = await resticBackup(fake, opts, ctx);
    expect(first.parent).toBeUndefined();
    expect(second.parent).toBe(restic.snapshots[0]!.meta.id);
    const args = restic.calls.filter((c) => c.args.includes('backup')).map((c) => c.args);
    expect(args[1]).toContain('--parent');
    // Unchanged volume and layers add nothing the second time (content the repository has).
    expect(second.bytesAdded).toBeLessThan(first.bytesAdded);
  });

  it('puts the container back and removes the snapshot image and staging when restic fails', async () => {
    restic.failOn = 'backup';
    const { ctx } = runContext();
    const err = await resticBackup(fake, opts, ctx).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResticError);
    expect(fake.containerByName('app')!.status).toBe('running');
    expect(fake.methods(['pause', 'unpause'])).toEqual(['pause', 'unpause']);
    expect([...fake.images.values()].some((i) => i.repoTags.some((r) => r.startsWith('ferry/')))).toBe(false);
    expect(await readdir(stageRoot)).toEqual([]);
  });

  it('refuses a container with a hook label rather than back it up without its hook', async () => {
    fake.containerByName('app')!.config.Labels = { 'ferry.pre-exec': 'pg_dump ...' };
    const { ctx } = runContext();
    await expect(resticBackup(fake, opts, ctx)).rejects.toThrow(/ferry.pre-exec/);
    expect(fake.methods(['pause', 'commit'])).toEqual([]);
    expect(restic.snapshots).toHaveLength(0);
  });

  it('refuses before pausing anything when restic is too old', async () => {
    restic.version = 'restic 0.12.0 compiled with go1.16 on linux/amd64';
    const { ctx } = runContext();
    await expect(resticBackup(fake, opts, ctx)).rejects.toBeInstanceOf(ResticUnavailableError);
    expect(fake.methods(['pause', 'commit'])).toEqual([]);
  });

  it('restores a snapshot as a bundle: the same volume, image and container settings', async () => {
    const { ctx } = runContext();
    const src = fake.volumes.get('appdata')!.root;
    await resticBackup(fake, opts, ctx);
    await mkdir(stageRoot, { recursive: true });
    const snap = await openResticSnapshot(restic, { repo: '/repo', container: 'app' }, silentProgress);
    expect(snap.snapshot.id).toBe(restic.snapshots[0]!.meta.id);
    const target = new FakeEngine({ endpoint: 'tcp://target:2375' });
    await target.ensureHolderImage();
    const res = await restore(target, snap.transport, { start: true, dryRun: false, onConflict: 'fail' }, ctx);
    expect(res.containers.map((c) => [c.name, c.started])).toEqual([['app', true]]);
    expect(target.volumeFiles('appdata')).toEqual(APP_FILES);
    expect(target.volumes.get('appdata')!.root).toEqual(src);
    const app = target.containerByName('app')!;
    expect(app.config.Env).toEqual(['MODE=prod', 'PATH=/usr/bin']);
    expect(Object.keys(app.networks)).toEqual(['appnet']);
    // The image restored is the committed one, with every layer.
    expect(target.images.get(app.image)!.repoTags[0]).toMatch(/^ferry\/app:/);
    // A snapshot can be read again (restore --trust and --on-conflict replace read it twice),
    // and comes out byte for byte the same each time (what a signature over it needs).
    const again = [
      await collect((await snap.transport.openBundle()).stream),
      await collect((await snap.transport.openBundle()).stream),
    ];
    expect(again[0]!.length).toBeGreaterThan(0);
    expect(again[1]!.equals(again[0]!)).toBe(true);
    await rm(stageRoot, { recursive: true, force: true });
  });

  it('a volume the source writes itself is an empty placeholder in the bundle; where it cannot, its archive goes instead, with why', async () => {
    const { ctx } = runContext();
    await resticBackup(fake, opts, ctx);
    await mkdir(stageRoot, { recursive: true });
    const snap = await openResticSnapshot(restic, { repo: '/repo', container: 'app' }, silentProgress);
    const id = snap.snapshot.id;
    const member = 'volumes/appdata.tar';
    const placeholders = new Set([member]);
    const bundle = () =>
      snapshotBundle(restic, '/repo', id, snap.manifest, snap.layout, silentProgress, { placeholders });
    // The bundle without the volume: a valid one, whose member is an empty archive.
    const dumps = () => restic.calls.filter((c) => c.args.includes('dump') && c.args.includes(`/${member}`)).length;
    const before = dumps();
    const raw = await collect(bundle());
    expect(dumps()).toBe(before); // not read from the repository
    expect(raw.length).toBeGreaterThan(0);
    let wrote = 0;
    let archives = 0;
    const direct: DirectSource = {
      take: async () => ({
        transport: { ...snap.transport, openBundle: async () => ({ stream: bundle(), location: 'restic:/repo' }) },
        volumes: new Map([
          [
            member,
            {
              path: 'restic-restore',
              sub: 'volumes/appdata',
              write: async () => void wrote++,
              archive: () => {
                archives++;
                return Readable.from([restic.snapshots[0]!.nodes.get(`/${member}`)!.data!]);
              },
            },
          ],
        ]),
      }),
    };
    const target = new FakeEngine({ endpoint: 'tcp://target:2375' });
    await target.ensureHolderImage();
    const res = await restore(target, snap.transport, { start: false, dryRun: false, onConflict: 'fail', direct }, ctx);
    // The fake engine's host is not reachable: the tree is not written there, its archive is
    // (through the engine: host-tar refused too, and the last refusal is the one recorded).
    expect(wrote).toBe(0);
    expect(archives).toBe(1);
    expect(target.volumeFiles('appdata')).toEqual(APP_FILES);
    expect(res.dataPaths.volumes).toEqual([
      { name: 'appdata', path: 'engine-archive', fallback: { from: 'host-tar', reason: expect.any(String) } },
    ]);

    // A source that writes none here: the whole bundle (its why is the fallback where the path
    // taken had no refusal of its own: e2e, engine over SSH).
    const none: DirectSource = {
      take: async () => ({ refused: 'the engine is elsewhere', members: [member], path: 'restic-restore' }),
    };
    const target2 = new FakeEngine({ endpoint: 'tcp://target2:2375' });
    await target2.ensureHolderImage();
    const res2 = await restore(
      target2,
      snap.transport,
      { start: false, dryRun: false, onConflict: 'fail', direct: none },
      ctx,
    );
    expect(target2.volumeFiles('appdata')).toEqual(APP_FILES);
    expect(res2.dataPaths.volumes).toEqual([
      { name: 'appdata', path: 'engine-archive', fallback: { from: 'host-tar', reason: expect.any(String) } },
    ]);
    await rm(stageRoot, { recursive: true, force: true });
  });

  it('--json of backup, ls, inspect, verify and prune of a repository fits the one schema (docs/json.md)', async () => {
    const { ctx } = runContext();
    const first = await resticBackup(fake, opts, ctx);
    const res = await resticBackup(fake, opts, ctx);
    await mkdir(stageRoot, { recursive: true });
    const b = schemaChecked(envelope('backup', { ok: true, ...resticBackupJson(res) }));
    expect(b).toMatchObject({
      command: 'backup',
      bundle: `restic:/repo#${res.snapshot}`,
      repository: '/repo',
      snapshot: res.snapshot,
      parent: restic.snapshots[0]!.meta.id,
      createdAt: res.manifest.createdAt,
      containers: ['app'],
      volumes: ['appdata'],
      volumeLayouts: [{ volume: 'appdata', layout: 'tar', reason: expect.any(String) }],
      addedBytes: res.bytesAdded,
      rawBytes: res.bytesProcessed,
    });
    // --all: each container's snapshot under results, as for bundles.
    const all = schemaChecked(
      envelope('backup', {
        ok: true,
        partial: false,
        containers: ['app'],
        results: [{ container: 'app', ok: true, result: resticBackupJson(res) }],
      }),
    );
    expect(all.results).toHaveLength(1);

    const list = restic.snapshots.map((s) => s.meta);
    const ls = schemaChecked(envelope('ls', { ok: true, ...resticLsJson('/repo', list) }));
    expect(ls).toMatchObject({ store: 'restic:/repo', repository: '/repo' });
    // Oldest first, as ls of a directory lists bundles; createdAt in UTC like a manifest's.
    expect((ls.bundles as { snapshot: string; createdAt: string }[]).map((x) => x.snapshot)).toEqual(
      list.map((s) => s.id),
    );
    expect((ls.bundles as { createdAt: string }[])[0]!.createdAt).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/);

    const snap = await openResticSnapshot(restic, { repo: '/repo', snapshot: first.snapshot }, silentProgress);
    const i = schemaChecked(envelope('inspect', resticInspectJson(`restic:/repo#${first.snapshot}`, snap)));
    expect(i).toMatchObject({
      bundle: `restic:/repo#${snap.snapshot.short_id}`,
      snapshot: snap.snapshot.id,
      containers: ['app'],
      createdAt: first.manifest.createdAt,
    });

    const v = await resticVerify(restic, { repo: '/repo' }, ctx);
    const vj = schemaChecked(envelope('verify', resticVerifyJson(v)));
    expect(vj).toMatchObject({ ok: true, store: 'restic:/repo', bundles: [{ ok: true }] });
    // A bad snapshot: ok false and a BUNDLE error (exit 7), its members listed.
    const damaged = { ...v, ok: false, snapshots: [{ ...v.snapshots[0]!, ok: false }] };
    damaged.snapshots[0]!.members = [{ name: 'volumes/appdata.tar', kind: 'volume', ok: false, problems: ['x'] }];
    expect(schemaChecked(envelope('verify', resticVerifyJson(damaged)))).toMatchObject({
      ok: false,
      error: { code: 'BUNDLE', exitCode: 7 },
      bundles: [{ ok: false, members: [{ ok: false }] }],
    });

    const p = await resticPrune(restic, '/repo', { policy: { last: 1 }, dryRun: true }, silentProgress);
    const pj = schemaChecked(envelope('prune', { ok: true, ...resticPruneJson(p) }));
    expect(pj).toMatchObject({ store: 'restic:/repo', dryRun: true, unreadable: [], failed: [] });
    expect((pj.removed as { snapshot: string; group: string }[]).map((x) => [x.snapshot, x.group])).toEqual([
      [restic.snapshots[0]!.meta.id, 'app'],
    ]);
    await rm(stageRoot, { recursive: true, force: true });
  });

  describe('signed (--sign-key)', () => {
    let keys: string;
    let trustA: Trust;
    let trustOther: Trust;
    const pub = (k: string) =>
      readFileSync(path.join(keys, `${k}.pub`), 'utf8')
        .trim()
        .split(' ')
        .slice(0, 2)
        .join(' ');
    beforeAll(async () => {
      keys = await tempDir('ferry-restic-keys-');
      for (const k of ['host-a', 'other'])
        execFileSync('ssh-keygen', ['-t', 'ed25519', '-q', '-N', '', '-C', k, '-f', path.join(keys, k)]);
      trustA = parseAllowedSigners(`host-a ${pub('host-a')}\n`, 'allowed_signers');
      trustOther = parseAllowedSigners(`other ${pub('other')}\n`, 'other_signers');
    });
    const sign = async (snapshot: string, key = 'host-a') =>
      signResticSnapshot(
        restic,
        { repo: '/repo', snapshot },
        await keyFileSigner(path.join(keys, key)),
        stageRoot,
        runContext().ctx,
      );

    it('reads the snapshot back, signs it, and keeps the signature in a snapshot of its own that ls and restore skip', async () => {
      const res = await resticBackup(fake, opts, runContext().ctx);
      const signed = await sign(res.snapshot);
      expect(signed.report.ok).toBe(true);
      const [data, sig] = restic.snapshots;
      expect(restic.snapshots).toHaveLength(2);
      expect(sig!.meta.tags).toEqual(['ferry-signature', `ferry-signs=${data!.meta.id}`]);
      expect([...sig!.nodes.keys()]).toEqual(['/SHA256SUMS.sig']);
      expect(sig!.nodes.get('/SHA256SUMS.sig')!.data!.toString()).toMatch(/^-----BEGIN SSH SIGNATURE-----/);
      // The data snapshot is the one chosen (the signature snapshot is not ferry's: no `ferry` tag).
      const snap = await openResticSnapshot(restic, { repo: '/repo' }, silentProgress);
      expect(snap.snapshot.id).toBe(data!.meta.id);
      expect(snap.manifest.signature?.key).toBe(pub('host-a'));
      expect(await readdir(stageRoot)).toEqual([]);
    });

    it('restores under --trust of its signer; refuses another signer, a changed manifest and an unsigned snapshot, creating nothing', async () => {
      const res = await resticBackup(fake, opts, runContext().ctx);
      await sign(res.snapshot);
      const target = async () => {
        const t = new FakeEngine({ endpoint: 'tcp://target:2375' });
        await t.ensureHolderImage();
        return t;
      };
      const open = () => openResticSnapshot(restic, { repo: '/repo', container: 'app' }, silentProgress);
      const restoreWith = async (trust: Trust, eng: FakeEngine) =>
        restore(
          eng,
          (await open()).transport,
          { start: true, dryRun: false, onConflict: 'fail' },
          { ...runContext().ctx, trust },
        );

      const good = await target();
      const ok = await restoreWith(trustA, good);
      expect(ok.containers.map((c) => c.name)).toEqual(['app']);
      expect(good.volumeFiles('appdata')).toEqual(APP_FILES);

      const other = await target();
      await expect(restoreWith(trustOther, other)).rejects.toBeInstanceOf(TrustError);
      expect(other.containerByName('app')).toBeUndefined();
      expect(other.volumes.has('appdata')).toBe(false);

      // One byte of the stored manifest changed: the rebuilt bundle no longer matches its signature.
      const node = restic.snapshots[0]!.nodes.get('/manifest.json')!;
      const genuine = node.data!;
      node.data = Buffer.from(genuine.toString().replace('"MODE=prod"', '"MODE=prxd"'));
      const changed = await target();
      await expect(restoreWith(trustA, changed)).rejects.toThrow(/the signature in SHA256SUMS.sig does not verify/);
      expect(changed.containerByName('app')).toBeUndefined();
      expect(changed.volumes.has('appdata')).toBe(false);
      node.data = genuine;

      // The signature snapshot forgotten: the snapshot reads as unsigned, which --trust refuses.
      restic.snapshots.splice(1, 1);
      const unsigned = await target();
      await expect(restoreWith(trustA, unsigned)).rejects.toThrow(/is not signed/);
      expect(unsigned.containerByName('app')).toBeUndefined();
    });

    it('a signature planted by another key for a genuine snapshot is refused under --trust', async () => {
      const res = await resticBackup(fake, opts, runContext().ctx);
      await sign(res.snapshot);
      await sign(res.snapshot, 'other'); // newer: the one a restore reads
      const snap = await openResticSnapshot(restic, { repo: '/repo' }, silentProgress);
      expect(snap.manifest.signature?.key).toBe(pub('other'));
      const t = new FakeEngine({ endpoint: 'tcp://target:2375' });
      await expect(
        restore(
          t,
          snap.transport,
          { start: true, dryRun: false, onConflict: 'fail' },
          { ...runContext().ctx, trust: trustA },
        ),
      ).rejects.toBeInstanceOf(TrustError);
      expect(t.containerByName('app')).toBeUndefined();
    });

    it('prune forgets the signature snapshots of the snapshots it removes, and keeps those of the kept', async () => {
      const first = await resticBackup(fake, opts, runContext().ctx);
      await sign(first.snapshot);
      const second = await resticBackup(fake, opts, runContext().ctx);
      await sign(second.snapshot);
      expect(restic.snapshots).toHaveLength(4);
      const keptId = restic.snapshots[2]!.meta.id;
      await resticPrune(restic, '/repo', { policy: { last: 1 }, dryRun: false }, silentProgress);
      expect(restic.snapshots.map((s) => s.meta.tags)).toEqual([
        ['ferry', 'ferry-set=app', 'ferry-container=app'],
        ['ferry-signature', `ferry-signs=${keptId}`],
      ]);
    });
  });
});

describe('prune of a restic repository', () => {
  const day = (d: number, h = 2) => new Date(Date.UTC(2026, 10, d, h)).toISOString();
  const id = (n: number, host: string) => `${host === 'h1' ? 'a' : 'b'}${String(n).padStart(7, '0')}`.padEnd(64, '0');
  const fill = (fake: FakeRestic) => {
    for (const host of ['h1', 'h2'])
      for (let d = 1; d <= 5; d++)
        fake.addSnapshot({ id: id(d, host), time: day(d), hostname: host, tags: snapshotTags(['web']) });
    fake.addSnapshot({ id: 'c'.repeat(64), time: day(1), hostname: 'h1', tags: ['someone-else'] });
  };

  it('builds restic forget --prune with checked ids', () => {
    expect(forgetArgs('/r', ['0a1b2c3d'])).toEqual(['-r', '/r', 'forget', '--prune', '--', '0a1b2c3d']);
    expect(() => forgetArgs('/r', [])).toThrow();
    expect(() => forgetArgs('/r', ['--keep-last'])).toThrow();
  });

  it('applies the rules per host and container set, the newest always kept', () => {
    const fake = new FakeRestic();
    fill(fake);
    const list = fake.snapshots.map((s) => s.meta).filter((s) => s.tags?.includes('ferry'));
    const r = resticRetention(list, { last: 2 });
    expect(r.kept.map((e) => [e.host, e.snapshot.slice(0, 8)])).toEqual(
      expect.arrayContaining([
        ['h1', id(5, 'h1').slice(0, 8)],
        ['h1', id(4, 'h1').slice(0, 8)],
        ['h2', id(5, 'h2').slice(0, 8)],
        ['h2', id(4, 'h2').slice(0, 8)],
      ]),
    );
    expect(r.kept).toHaveLength(4);
    expect(r.removed).toHaveLength(6);
  });

  it('a dry run forgets nothing; a real one forgets exactly what no rule keeps, and never others', async () => {
    const fake = new FakeRestic();
    fill(fake);
    const dry = await resticPrune(fake, '/r', { policy: { last: 1 }, dryRun: true }, silentProgress);
    expect(dry.removed).toHaveLength(8);
    expect(fake.calls.some((c) => c.args.includes('forget'))).toBe(false);
    expect(fake.snapshots).toHaveLength(11);
    const real = await resticPrune(fake, '/r', { policy: { last: 1 }, dryRun: false }, silentProgress);
    expect(real.removed.map((e) => e.snapshot).sort()).toEqual(dry.removed.map((e) => e.snapshot).sort());
    expect(fake.snapshots.map((s) => s.meta.id).sort()).toEqual([id(5, 'h1'), id(5, 'h2'), 'c'.repeat(64)].sort());
    await expect(resticPrune(fake, '/r', { policy: {}, dryRun: false }, silentProgress)).rejects.toBeInstanceOf(
      UsageError,
    );
  });
});
