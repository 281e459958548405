/**
 * Running ferry from cron and reading its stores back: several backups into one store (two at
 * the same time), ls, inspect (environment names only), verify (whole, flipped bytes, hostile
 * member contents), prune with every keep rule on bundles with chosen timestamps, the store lock
 * (waiting, timing out, taking over a stale one) and backup --verify; prune and the lock on a
 * store on another host (ssh://, over SFTP to the lab's sshd).
 *
 * Bundles with chosen timestamps or hostile contents are written with ferry's own BundleWriter:
 * they are real bundles, whole by every outer check, so only what is under test is wrong.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest, MemberPlan } from '../../src/bundle/manifest.js';
import { BundleWriter } from '../../src/bundle/writer.js';
import type { ContainerSpec } from '../../src/model/spec.js';
import { silentProgress } from '../../src/context.js';
import { verifyOrQuarantine } from '../../src/ops/verify.js';
import { LocalTransport } from '../../src/store/local.js';
import { acquireStoreLock } from '../../src/store/lock.js';
import { SshPool } from '../../src/ssh/client.js';
import {
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ferry,
  freePort,
  inspect,
  memberOffset,
  sshHome,
  uid,
} from '../helpers/lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-catalog-'));
const store = path.join(dir, 'store');
const web = uid('cw');
const worker = uid('ck');
const cache = uid('cc');
const vol = `${web}-data`;
const net = `${web}-net`;
const SECRET = `s3cr3t-${randomBytes(8).toString('hex')}`;
let port = 0;
/** The bundles written by the backups of the first describe block. */
const written: Record<string, string> = {};

const tarList = (file: string) => execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n');
const tarsIn = (d: string) =>
  readdirSync(d)
    .filter((n) => n.endsWith('.tar'))
    .sort();
const noTrace = (s: string) => expect(s).not.toMatch(/at .*\.js:\d+/);

beforeAll(async () => {
  port = await freePort();
  docker(['network', 'create', net]);
  docker(['volume', 'create', vol]);
  docker([
    'run',
    '-d',
    '--name',
    web,
    '--network',
    net,
    '--network-alias',
    `${web}-alias`,
    '-e',
    `DB_PASSWORD=${SECRET}`,
    '-e',
    'MODE=prod',
    '-l',
    'com.example.role=frontend',
    '-p',
    `127.0.0.1:${port}:80`,
    '--restart',
    'unless-stopped',
    '-v',
    `${vol}:/data`,
    BUSYBOX,
    'sleep',
    '100000',
  ]);
  docker([
    'exec',
    web,
    'sh',
    '-c',
    'echo hello > /data/greeting; dd if=/dev/urandom of=/data/blob bs=1024 count=512 2>/dev/null',
  ]);
  docker(['run', '-d', '--name', worker, BUSYBOX, 'sleep', '100000']);
  docker(['run', '-d', '--name', cache, BUSYBOX, 'sleep', '100000']);
});

afterAll(() => {
  cleanup(ENGINE_A, { containers: [web, worker, cache], volumes: [vol], networks: [net] });
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Crafted bundles
// ---------------------------------------------------------------------------------------------

interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'link' | 'symlink';
  linkname?: string;
  data?: string | Buffer;
}

async function tarOf(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    await new Promise<void>((resolve, reject) =>
      pack.entry(
        { name: e.name, type, linkname: e.linkname, mode: type === 'directory' ? 0o755 : 0o644 },
        type === 'file' ? (e.data ?? '') : undefined,
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** A minimal `docker save` archive: manifest.json, the image config, one layer. */
async function dockerArchive(opts: { omitLayer?: boolean } = {}): Promise<Buffer> {
  const layer = await tarOf([{ name: 'hello.txt', data: 'hello\n' }]);
  const entries: TarEntry[] = [
    {
      name: 'manifest.json',
      data: JSON.stringify([{ Config: 'cafe.json', RepoTags: ['ferry/x:1'], Layers: ['l1/layer.tar'] }]),
    },
    {
      name: 'cafe.json',
      data: JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }),
    },
    { name: 'l1', type: 'directory' },
  ];
  if (!opts.omitLayer) entries.push({ name: 'l1/layer.tar', data: layer });
  return tarOf(entries);
}

function spec(name: string): ContainerSpec {
  return {
    name,
    sourceId: randomBytes(32).toString('hex'),
    state: { running: true, paused: false },
    baseImage: { ref: BUSYBOX, id: `sha256:${'0'.repeat(64)}` },
    config: { Env: ['TOKEN=crafted'] },
    hostConfig: {},
    endpoints: [{ network: 'bridge' }],
    mounts: [],
  };
}

/** Write a bundle with ferry's BundleWriter: one image member per container, the given volumes. */
async function craftBundle(
  file: string,
  o: { createdAt: string; containers: string[]; volumes?: Record<string, Buffer>; images?: Record<string, Buffer> },
) {
  const members: MemberPlan[] = [];
  const data = new Map<string, Buffer>();
  const volumes = Object.entries(
    o.volumes ?? {
      [`${o.containers[0]}-data`]: await tarOf([
        { name: './', type: 'directory' },
        { name: './f', data: 'x' },
      ]),
    },
  );
  for (const [name, buf] of volumes) {
    members.push({ name: `volumes/${name}.tar`, kind: 'volume', codec: 'none' });
    data.set(`volumes/${name}.tar`, buf);
  }
  for (const c of o.containers) {
    members.push({ name: `images/${c}.tar`, kind: 'image', codec: 'none' });
    data.set(`images/${c}.tar`, o.images?.[c] ?? (await dockerArchive()));
  }
  const manifest: Manifest = {
    format: 'ferry-bundle',
    formatVersion: 1,
    ferryVersion: '0.1.0',
    createdAt: o.createdAt,
    source: {
      engine: ENGINE_A,
      serverVersion: '20.10.24',
      apiVersion: '1.41',
      os: 'linux',
      arch: 'amd64',
      hostname: 'crafted',
    },
    containers: o.containers.map((c, i) => ({
      spec: spec(c),
      image: { ref: `ferry/${c}:crafted`, member: `images/${c}.tar` },
      volumes: i === 0 ? volumes.map(([n]) => n) : [],
      binds: [],
      consistency: 'pause' as const,
    })),
    volumes: volumes.map(([name]) => ({ name, anonymous: false, driver: 'local', member: `volumes/${name}.tar` })),
    networks: [],
    members,
  };
  const sink = await new LocalTransport(file).createBundle(path.basename(file));
  const w = new BundleWriter(sink, manifest);
  await w.begin();
  for (const m of members) await w.addMember(m.name, Readable.from([data.get(m.name)!]), 'none');
  await w.finish();
}

const stamp = (iso: string) => iso.replace(/[-:]/g, '').replace(/\.\d+Z$|Z$/, 'Z');

function flipped(src: string, dest: string, ...at: [string, number][]): string {
  const buf = readFileSync(src);
  for (const [prefix, delta] of at) {
    const o = memberOffset(buf, prefix) + delta;
    buf[o] = buf[o]! ^ 0xff;
  }
  writeFileSync(dest, buf);
  return dest;
}

// ---------------------------------------------------------------------------------------------

describe('several backups into one store, two of them at the same time', () => {
  it('a first backup, then two concurrent ones: all finish with whole, separately named bundles', async () => {
    const r0 = await ferry(['--json', 'backup', web, '-o', store, '--mkdir']);
    expect(r0.code, r0.stderr).toBe(0);
    written.web = JSON.parse(r0.stdout).bundle;
    const [r1, r2] = await Promise.all([
      ferry(['--json', 'backup', worker, '-o', store, '--mkdir']),
      ferry(['--json', 'backup', cache, '-o', store, '--mkdir']),
    ]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r2.code, r2.stderr).toBe(0);
    written.worker = JSON.parse(r1.stdout).bundle;
    written.cache = JSON.parse(r2.stdout).bundle;
    expect(new Set(Object.values(written)).size).toBe(3);
    expect(tarsIn(store)).toEqual(
      Object.values(written)
        .map((p) => path.basename(p))
        .sort(),
    );
    // nothing left behind: no temporaries, no lock
    expect(readdirSync(store).filter((n) => n.startsWith('.'))).toEqual([]);
    for (const b of [written.worker!, written.cache!]) {
      const v = await ferry(['verify', b]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      expect(v.stdout).toMatch(/whole/);
    }
  });

  it('names taken (or being written) in the same second get -2, -3 ... and nothing is clobbered', async () => {
    const d = path.join(dir, 'names');
    const t = new LocalTransport(d);
    const name = 'ferry-x-20240101T000000Z.tar';
    // three at once in one store: the lock serialises the choice of names
    const sinks = await Promise.all([t.createBundle(name), t.createBundle(name), t.createBundle(name)]);
    expect(sinks.map((s) => path.basename(s.location)).sort()).toEqual([
      'ferry-x-20240101T000000Z-2.tar',
      'ferry-x-20240101T000000Z-3.tar',
      name,
    ]);
    for (const s of sinks) await s.abort();
    // an existing bundle of that name is not replaced
    writeFileSync(path.join(d, name), 'old bundle');
    const s = await t.createBundle(name);
    expect(path.basename(s.location)).toBe('ferry-x-20240101T000000Z-2.tar');
    await s.abort();
    expect(readFileSync(path.join(d, name), 'utf8')).toBe('old bundle');
  });

  it('a real backup whose generated name exists already gets a -2 name', async () => {
    const d = path.join(dir, 'taken');
    mkdirSync(d);
    // occupy the names of the next seconds
    const now = Date.now();
    for (let s = -2; s <= 30; s++)
      writeFileSync(path.join(d, `ferry-${cache}-${stamp(new Date(now + s * 1000).toISOString())}.tar`), 'occupied');
    const r = await ferry(['--json', 'backup', cache, '-o', d]);
    expect(r.code, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout).bundle as string;
    expect(b).toMatch(new RegExp(`ferry-${cache}-\\d{8}T\\d{6}Z-2\\.tar$`));
    expect((await ferry(['verify', b])).code).toBe(0);
    expect(readFileSync(b.replace(/-2\.tar$/, '.tar'), 'utf8')).toBe('occupied');
  });
});

describe('ls', () => {
  beforeAll(() => {
    writeFileSync(path.join(store, 'junk.tar'), 'this is not a bundle\n'.repeat(50));
    // a bundle cut in half: ls reads only its manifest, so it lists it normally
    const whole = readFileSync(written.web!);
    writeFileSync(path.join(store, 'half.tar'), whole.subarray(0, Math.floor(whole.length / 2)));
    // temporaries of running backups and other files are not bundles
    writeFileSync(path.join(store, `.ferry-999999-ferry-x.tar.partial`), 'partial');
    writeFileSync(path.join(store, 'notes.txt'), 'hello');
  });

  it('--json: one object per bundle, oldest first; an unreadable file has an error and does not stop the listing', async () => {
    const r = await ferry(['--json', 'ls', store]);
    expect(r.code, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout).bundles as any[];
    expect(list.map((e) => path.basename(e.bundle)).sort()).toEqual(
      [...Object.values(written).map((p) => path.basename(p)), 'half.tar', 'junk.tar'].sort(),
    );
    const byName = Object.fromEntries(list.map((e) => [path.basename(e.bundle), e]));
    for (const [c, b] of Object.entries({ [web]: written.web!, [worker]: written.worker!, [cache]: written.cache! })) {
      const e = byName[path.basename(b)];
      expect(e.bundle).toBe(b);
      expect(e.containers).toEqual([c]);
      expect(e.fileBytes).toBe(statSync(b).size);
      expect(new Date(e.createdAt).toISOString()).toBe(e.createdAt);
      // the codec of the volume members; of the image member for a container without volumes
      expect(e.compression).toBe(c === web ? 'zstd' : 'gzip');
      expect(e.imageMode).toBe('archive');
      expect(e.encrypted).toBe(false);
      expect(e.error).toBeUndefined();
    }
    expect(byName['half.tar'].containers).toEqual([web]);
    expect(byName['junk.tar'].error).toMatchObject({ code: 'BUNDLE', exitCode: 7 });
    expect(byName['junk.tar'].error.message).toMatch(/not a ferry bundle/);
    expect(byName['junk.tar'].fileBytes).toBe(statSync(path.join(store, 'junk.tar')).size);
    // sorted by creation time
    const created = list.filter((e) => e.createdAt).map((e) => Date.parse(e.createdAt));
    expect(created).toEqual([...created].sort((a, b) => a - b));
  });

  it('the table: one line per bundle, unreadable ones marked', async () => {
    const r = await ferry(['ls', store]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/CREATED.*CONTAINERS.*SIZE.*IMAGES.*COMPRESSION.*ENCRYPTED.*BUNDLE/);
    expect(lines).toHaveLength(1 + 5);
    const line = (name: string) => lines.find((l) => l.includes(name))!;
    expect(line(path.basename(written.web!))).toMatch(
      new RegExp(
        `\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+${web}\\s+[\\d.]+ (KiB|MiB)\\s+archive\\s+zstd\\s+no\\s`,
      ),
    );
    expect(line('junk.tar')).toMatch(/!! unreadable: .*not a ferry bundle/);
    expect(r.stdout).not.toMatch(/partial|notes\.txt/);
    // the order is by time: web was backed up first
    expect(lines.findIndex((l) => l.includes(path.basename(written.web!)))).toBeLessThan(
      lines.findIndex((l) => l.includes(path.basename(written.worker!))),
    );
  });

  it('a store that does not exist is "not found"', async () => {
    const r = await ferry(['ls', path.join(dir, 'nope')]);
    expect(r.code).toBe(5);
    noTrace(r.stderr);
  });
});

describe('inspect', () => {
  it('the bundle does hold the secret (so hiding it matters)', () => {
    const manifest = execFileSync('tar', ['-xOf', written.web!, 'manifest.json'], { encoding: 'utf8' });
    expect(manifest).toContain(SECRET);
  });

  it('shows the manifest in human form, with environment variable names only', async () => {
    const r = await ferry(['inspect', written.web!]);
    expect(r.code, r.stderr).toBe(0);
    const o = r.stdout;
    expect(o).not.toContain(SECRET);
    expect(r.stderr).not.toContain(SECRET);
    expect(o).toMatch(
      new RegExp(
        `source\\s+engine ${ENGINE_A.replace(/[./]/g, '\\$&')} \\(Docker \\S+, API [\\d.]+, linux/\\w+\\), ferry ran on host \\S+`,
      ),
    );
    expect(o).toMatch(/ferry\s+0\.1\.0, bundle format 1/);
    expect(o).toContain(`container ${web}`);
    expect(o).toMatch(new RegExp(`image\\s+ferry/${web}:\\d{8}T\\d{6}Z \\(member images/${web}\\.tar\\.gz\\)`));
    expect(o).toMatch(new RegExp(`base image\\s+${BUSYBOX.replace(/[/.]/g, '\\$&')} \\(sha256:`));
    expect(o).toMatch(/state\s+running/);
    expect(o).toMatch(new RegExp(`ports\\s+127\\.0\\.0\\.1:${port} -> 80/tcp`));
    expect(o).toMatch(new RegExp(`volumes\\s+${vol} -> /data, data in volumes/${vol}\\.tar\\.zst`));
    expect(o).toMatch(new RegExp(`networks\\s+${net} \\(aliases [^)]*${web}-alias`));
    expect(o).toMatch(/restart\s+unless-stopped/);
    expect(o).toMatch(/env \(names\)\s+DB_PASSWORD, MODE/);
    expect(o).toMatch(/labels\s+com\.example\.role=frontend/);
    expect(o).toMatch(new RegExp(`\\n  ${net}: driver bridge, subnet `));
    expect(o).toMatch(new RegExp(`volumes/${vol}\\.tar\\.zst\\s+volume\\s+zstd`));
    expect(o).toMatch(new RegExp(`images/${web}\\.tar\\.gz\\s+image\\s+gzip`));
  });

  it('--json: the manifest with every Env entry reduced to its name', async () => {
    const r = await ferry(['--json', 'inspect', written.web!]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain(SECRET);
    const j = JSON.parse(r.stdout);
    expect(j.ports).toEqual([{ container: web, hostIp: '127.0.0.1', hostPort: String(port), containerPort: '80/tcp' }]);
    const m = j.manifest;
    expect(m.format).toBe('ferry-bundle');
    const c = m.containers.find((x: any) => x.spec.name === web);
    expect(c.spec.config.Env.sort()).toEqual(['DB_PASSWORD', 'MODE']);
    expect(c.spec.hostConfig.PortBindings['80/tcp']).toEqual([{ HostIp: '127.0.0.1', HostPort: String(port) }]);
    expect(m.volumes.map((v: any) => v.name)).toEqual([vol]);
    expect(m.members.map((x: any) => x.name)).toEqual([`volumes/${vol}.tar.zst`, `images/${web}.tar.gz`]);
  });

  it('reads only the manifest: a bundle cut in half inspects fine', async () => {
    const r = await ferry(['inspect', path.join(store, 'half.tar')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`container ${web}`);
  });

  it('a file that is not a bundle: exit 7', async () => {
    const r = await ferry(['inspect', path.join(store, 'junk.tar')]);
    expect(r.code).toBe(7);
    noTrace(r.stderr);
  });
});

describe('verify', () => {
  const bad = path.join(dir, 'bad');
  beforeAll(() => mkdirSync(bad));

  it('a whole bundle: exit 0, every member ok', async () => {
    const r = await ferry(['verify', written.web!]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`ok +volumes/${vol}\\.tar\\.zst`));
    expect(r.stdout).toMatch(new RegExp(`ok +images/${web}\\.tar\\.gz`));
    const j = await ferry(['--json', 'verify', written.web!]);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: true, bundle: written.web });
  });

  it('a flipped byte in a volume member: exit 7, naming the member', async () => {
    const p = flipped(written.web!, path.join(bad, 'flip.tar'), [`volumes/${vol}`, 300]);
    const r = await ferry(['verify', p]);
    expect(r.code).toBe(7);
    expect(r.stdout).toMatch(new RegExp(`BAD +volumes/${vol}\\.tar\\.zst: `));
    expect(r.stdout).toMatch(new RegExp(`ok +images/${web}\\.tar\\.gz`));
    expect(r.stderr).toMatch(new RegExp(`not whole: bad member volumes/${vol}\\.tar\\.zst`));
    noTrace(r.stderr);
  });

  it('flipped bytes in two members whose contents still parse: both named, from their checksums', async () => {
    const b = path.join(bad, 'plain.tar');
    const filler = (c: string) =>
      tarOf([
        { name: './', type: 'directory' },
        { name: './f', data: c.repeat(4096) },
      ]);
    await craftBundle(b, {
      createdAt: new Date().toISOString(),
      containers: ['app'],
      volumes: { one: await filler('a'), two: await filler('b'), three: await filler('c') },
    });
    expect((await ferry(['verify', b])).code).toBe(0);
    // inside the data of ./f (the third 512-byte block of each member): the tars stay well-formed
    const p = flipped(b, path.join(bad, 'flip2.tar'), ['volumes/one', 1500], ['volumes/three', 1500]);
    const r = await ferry(['--json', 'verify', p]);
    expect(r.code).toBe(7);
    const rep = JSON.parse(r.stdout);
    expect(rep.ok).toBe(false);
    const badOnes = rep.members.filter((m: any) => !m.ok);
    expect(badOnes.map((m: any) => m.name)).toEqual(['volumes/one.tar', 'volumes/three.tar']);
    for (const m of badOnes) expect(m.problems.join()).toMatch(/sha256 does not match/);
    expect(r.stderr).toMatch(/bad members volumes\/one\.tar, volumes\/three\.tar/);
  });

  it('a volume member holding ../evil, a hard link out of the archive, or an entry written through its own symlink: exit 7, naming each; a device node is content', async () => {
    const p = path.join(bad, 'evil.tar');
    await craftBundle(p, {
      createdAt: new Date().toISOString(),
      containers: ['app'],
      volumes: {
        good: await tarOf([
          { name: './', type: 'directory' },
          { name: './ok', data: 'fine' },
        ]),
        evil: await tarOf([
          { name: './', type: 'directory' },
          { name: '../evil', data: 'gotcha' },
        ]),
        hardlink: await tarOf([
          { name: './a', data: 'x' },
          { name: './passwd', type: 'link', linkname: '../../etc/passwd' },
        ]),
        absolute: await tarOf([{ name: '/etc/cron.d/evil', data: 'x' }]),
        through: await tarOf([
          { name: './', type: 'directory' },
          { name: './etc', type: 'symlink', linkname: '/etc' },
          { name: './etc/cron.d/evil', data: 'x' },
        ]),
        device: await tarOf([
          { name: './', type: 'directory' },
          { name: './sda', type: 'block-device' },
        ]),
      },
    });
    // the outer bundle is whole: the writer checksummed what it was given
    const r = await ferry(['verify', p]);
    expect(r.code).toBe(7);
    expect(r.stdout).toMatch(/ok +volumes\/good\.tar/);
    expect(r.stdout).toMatch(/BAD +volumes\/evil\.tar: entry "\.\.\/evil" climbs out/);
    expect(r.stdout).toMatch(
      /BAD +volumes\/hardlink\.tar: hard link "\.\/passwd" -> "\.\.\/\.\.\/etc\/passwd" points outside/,
    );
    expect(r.stdout).toMatch(/BAD +volumes\/absolute\.tar: entry "\/etc\/cron\.d\/evil" is an absolute path/);
    expect(r.stdout).toMatch(
      /BAD +volumes\/through\.tar: entry "\.\/etc\/cron\.d\/evil" is written through the symlink "etc"/,
    );
    // backup writes device nodes and restore makes them again: verify does not call them damage
    expect(r.stdout).toMatch(/ok +volumes\/device\.tar/);
    expect(r.stdout).toMatch(/ok +images\/app\.tar/);
    expect(r.stderr).toMatch(
      /bad members volumes\/evil\.tar, volumes\/hardlink\.tar, volumes\/absolute\.tar, volumes\/through\.tar$/m,
    );
  });

  it('an image member that is not a whole docker image archive, and a volume member that is not a tar: exit 7', async () => {
    const p = path.join(bad, 'noimage.tar');
    await craftBundle(p, {
      createdAt: new Date().toISOString(),
      containers: ['app', 'side'],
      volumes: { notar: Buffer.from('plain text, not a tar archive at all'.repeat(40)) },
      images: {
        app: await dockerArchive({ omitLayer: true }),
        side: await tarOf([{ name: 'x', data: 'no manifest' }]),
      },
    });
    const r = await ferry(['verify', p]);
    expect(r.code).toBe(7);
    expect(r.stdout).toMatch(/BAD +volumes\/notar\.tar: not a well-formed tar archive/);
    expect(r.stdout).toMatch(
      /BAD +images\/app\.tar: manifest\.json entry 0: its layer l1\/layer\.tar is not in the archive/,
    );
    expect(r.stdout).toMatch(/BAD +images\/side\.tar: not a docker image archive: it has no manifest\.json/);
    // and the crafted archive with its layer passes: the check is not simply failing everything
    const good = path.join(bad, 'goodcraft.tar');
    await craftBundle(good, { createdAt: new Date().toISOString(), containers: ['app'] });
    expect((await ferry(['verify', good])).code).toBe(0);
  });

  it('truncated, and not a bundle at all: exit 7', async () => {
    const r1 = await ferry(['verify', path.join(store, 'half.tar')]);
    expect(r1.code).toBe(7);
    expect(r1.stdout).toMatch(/BAD/);
    const r2 = await ferry(['verify', path.join(store, 'junk.tar')]);
    expect(r2.code).toBe(7);
    expect(r2.stdout + r2.stderr).toMatch(/not a ferry bundle/);
    noTrace(r2.stderr);
  });
});

describe('backup --verify', () => {
  it('verifies the written bundle before reporting success', async () => {
    const d = path.join(dir, 'verified');
    const r = await ferry(['backup', worker, '-o', d, '--mkdir', '--verify']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/, verified\n/);
    expect(r.stderr).toMatch(new RegExp(`verify images/${worker}\\.tar\\.gz`));
    const j = await ferry(['--json', 'backup', worker, '-o', path.join(d, 'x.tar'), '--verify']);
    expect(j.code, j.stderr).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: true, verified: true });
  });

  it('to stdout: a warning that it cannot be verified', async () => {
    const out = path.join(dir, 'stdout.tar');
    const r = await ferry(['backup', worker, '-o', '-', '--verify'], { stdoutFile: out });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: --verify: a bundle written to stdout cannot be verified/);
    expect((await ferry(['verify', out])).code).toBe(0);
  });

  it('a bundle that fails verification is renamed to .corrupt, not deleted', async () => {
    const d = path.join(dir, 'quarantine');
    mkdirSync(d);
    const p = flipped(written.web!, path.join(d, 'web.tar'), [`images/${web}`, 2000]);
    const res = await verifyOrQuarantine(p, { progress: silentProgress, signal: new AbortController().signal });
    expect(res.report.ok).toBe(false);
    expect(res.report.members.filter((m) => !m.ok).map((m) => m.name)).toEqual([`images/${web}.tar.gz`]);
    expect(res.quarantined).toBe(`${p}.corrupt`);
    expect(existsSync(p)).toBe(false);
    expect(statSync(`${p}.corrupt`).size).toBe(statSync(written.web!).size);
    // a whole one stays where it is
    copyFileSync(written.web!, path.join(d, 'good.tar'));
    const ok = await verifyOrQuarantine(path.join(d, 'good.tar'), {
      progress: silentProgress,
      signal: new AbortController().signal,
    });
    expect(ok.report.ok).toBe(true);
    expect(ok.quarantined).toBeUndefined();
    expect(tarsIn(d)).toEqual(['good.tar']);
  });
});

describe('ferry verify <store>', () => {
  it('checks every bundle of a directory, here or over SFTP, names the bad ones (exit 7), changes no bundle and marks the bad ones', async () => {
    const { home } = sshHome(path.join(dir, 'verify-store'));
    const d = path.join(dir, 'whole-store');
    mkdirSync(d);
    copyFileSync(written.web!, path.join(d, 'a-good.tar'));
    flipped(written.web!, path.join(d, 'b-flipped.tar'), [`images/${web}`, 2000]);
    writeFileSync(path.join(d, 'c-junk.tar'), 'not a bundle');
    writeFileSync(path.join(d, '.ferry-1-x.tar.partial'), 'a temporary'); // never looked at
    const before = readdirSync(d).sort();
    for (const where of [d, `ssh://newhost${d}`]) {
      const r = await ferry(['verify', where], { env: { HOME: home } });
      expect(r.code, r.stderr).toBe(7);
      expect(r.stdout).toMatch(/^ok   a-good\.tar  \(\d+ members\)$/m);
      expect(r.stdout).toMatch(new RegExp(`^BAD  b-flipped\\.tar: images/${web}\\.tar\\.gz: `, 'm'));
      expect(r.stdout).toMatch(/^BAD  c-junk\.tar: manifest\.json: .*not a ferry bundle/m);
      expect(r.stdout).toContain(': 3 bundles, 1 whole, 2 bad');
      expect(r.stderr).toMatch(/2 of 3 bundles in .* are not whole: b-flipped\.tar, c-junk\.tar/);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      const j = await ferry(['--json', 'verify', where], { env: { HOME: home } });
      expect(j.code).toBe(7);
      const res = JSON.parse(j.stdout);
      expect(res.ok).toBe(false);
      expect(res.bundles.map((b: any) => [path.basename(b.bundle), b.ok])).toEqual([
        ['a-good.tar', true],
        ['b-flipped.tar', false],
        ['c-junk.tar', false],
      ]);
      expect(res.bundles.map((b: any) => b.damageMark ?? null)).toEqual([null, 'recorded', 'recorded']);
      // no bundle renamed or removed; a damage mark beside each bad one (prune reads them)
      expect(readdirSync(d).sort()).toEqual([...before, 'b-flipped.tar.damaged', 'c-junk.tar.damaged'].sort());
    }
    rmSync(path.join(d, 'b-flipped.tar'));
    rmSync(path.join(d, 'c-junk.tar'));
    const ok = await ferry(['verify', d]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(': 1 bundle, 1 whole, 0 bad');
    // an encrypted bundle without its passphrase: a usage error (exit 2), not a damaged store
    const enc = await ferry(['backup', cache, '-o', d, '--encrypt'], { env: { FERRY_PASSPHRASE: 'store-secret' } });
    expect(enc.code, enc.stderr).toBe(0);
    const without = await ferry(['verify', d], { env: { FERRY_PASSPHRASE: undefined } });
    expect(without.code, without.stderr).toBe(2);
    expect(without.stderr).toMatch(/passphrase/i);
    expect(without.stdout).toMatch(/^NOT VERIFIED  ferry-.*\.tar: .*no passphrase was given$/m);
    // the bundles it could check are still checked, and damage is the worst (exit 7)
    flipped(written.web!, path.join(d, 'b-flipped.tar'), [`images/${web}`, 2000]);
    const both = await ferry(['verify', d], { env: { FERRY_PASSPHRASE: undefined } });
    expect(both.code, both.stderr).toBe(7);
    expect(both.stdout).toMatch(new RegExp(`^BAD  b-flipped\\.tar: images/${web}\\.tar\\.gz: `, 'm'));
    expect(both.stdout).toContain(': 3 bundles, 1 whole, 1 bad, 1 not verified');
    rmSync(path.join(d, 'b-flipped.tar'));
    const withIt = await ferry(['verify', d], { env: { FERRY_PASSPHRASE: 'store-secret' } });
    expect(withIt.code, withIt.stderr).toBe(0);
    expect(withIt.stdout).toContain(': 2 bundles, 2 whole, 0 bad');
  });

  it('a store with no bundle (an empty or wrong directory) is not a pass: exit 5', async () => {
    const empty = path.join(dir, 'empty-store');
    mkdirSync(empty);
    const r = await ferry(['verify', empty]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toContain(`no bundles in ${empty}: nothing was verified`);
  });
});

describe('--verify on an ssh:// store', () => {
  it('a bundle there that fails verification is renamed to .corrupt over SFTP, a whole one stays', async () => {
    const { home } = sshHome(path.join(dir, 'ssh-verify'));
    const d = path.join(dir, 'ssh-quarantine');
    mkdirSync(d);
    const p = flipped(written.web!, path.join(d, 'web.tar'), [`images/${web}`, 2000]);
    copyFileSync(written.web!, path.join(d, 'good.tar'));
    const pool = new SshPool({ home, env: { ...process.env, HOME: home } });
    try {
      const ctx = { progress: silentProgress, signal: new AbortController().signal };
      const res = await verifyOrQuarantine(`ssh://newhost${p}`, ctx, { ssh: () => pool });
      expect(res.report.ok).toBe(false);
      expect(res.report.members.filter((m) => !m.ok).map((m) => m.name)).toEqual([`images/${web}.tar.gz`]);
      expect(res.quarantined).toBe(`ssh://newhost${p}.corrupt`);
      expect(existsSync(p)).toBe(false);
      expect(statSync(`${p}.corrupt`).size).toBe(statSync(written.web!).size);
      const ok = await verifyOrQuarantine(`ssh://newhost${d}/good.tar`, ctx, { ssh: () => pool });
      expect(ok.report.ok).toBe(true);
      expect(ok.quarantined).toBeUndefined();
      expect(tarsIn(d)).toEqual(['good.tar']);
    } finally {
      await pool.closeAll();
    }
  });
});

describe('prune', () => {
  /** A store with bundles of `web` created at the given times, plus junk and an old bundle of another set. */
  async function makeStore(name: string, times: string[]): Promise<string> {
    const d = path.join(dir, 'prune', name);
    mkdirSync(d, { recursive: true });
    for (const t of times)
      await craftBundle(path.join(d, `ferry-web-${stamp(t)}.tar`), { createdAt: t, containers: ['web'] });
    await craftBundle(path.join(d, 'ferry-db+1-20200101T000000Z.tar'), {
      createdAt: '2020-01-01T00:00:00.000Z',
      containers: ['db', 'web'],
    });
    writeFileSync(path.join(d, 'junk.tar'), 'not a bundle');
    return d;
  }
  const names = (times: string[]) => times.map((t) => `ferry-web-${stamp(t)}.tar`);
  const always = ['ferry-db+1-20200101T000000Z.tar', 'junk.tar'];

  const cases: { rule: string; n: number; times: string[]; keep: string[] }[] = [
    {
      rule: 'last',
      n: 2,
      times: [
        '2024-03-05T10:00:00.000Z',
        '2024-03-04T10:00:00.000Z',
        '2024-03-03T10:00:00.000Z',
        '2024-03-02T10:00:00.000Z',
      ],
      keep: ['2024-03-05T10:00:00.000Z', '2024-03-04T10:00:00.000Z'],
    },
    {
      rule: 'hourly',
      n: 2,
      times: [
        '2024-03-01T10:50:00.000Z',
        '2024-03-01T10:05:00.000Z',
        '2024-03-01T08:59:59.000Z',
        '2024-03-01T08:00:00.000Z',
        '2024-03-01T05:30:00.000Z',
      ],
      keep: ['2024-03-01T10:50:00.000Z', '2024-03-01T08:59:59.000Z'],
    },
    {
      rule: 'daily',
      n: 2,
      times: [
        '2024-03-10T23:00:00.000Z',
        '2024-03-10T10:00:00.000Z',
        '2024-03-09T12:00:00.000Z',
        '2024-03-08T12:00:00.000Z',
      ],
      keep: ['2024-03-10T23:00:00.000Z', '2024-03-09T12:00:00.000Z'],
    },
    {
      rule: 'weekly',
      n: 2,
      times: [
        '2025-01-01T10:00:00.000Z',
        '2024-12-30T10:00:00.000Z',
        '2024-12-29T10:00:00.000Z',
        '2024-12-23T10:00:00.000Z',
        '2024-12-10T10:00:00.000Z',
      ],
      keep: ['2025-01-01T10:00:00.000Z', '2024-12-29T10:00:00.000Z'],
    },
    {
      rule: 'monthly',
      n: 2,
      times: [
        '2024-03-31T23:59:59.000Z',
        '2024-03-01T00:00:00.000Z',
        '2024-02-15T00:00:00.000Z',
        '2023-12-31T23:00:00.000Z',
      ],
      keep: ['2024-03-31T23:59:59.000Z', '2024-02-15T00:00:00.000Z'],
    },
    {
      rule: 'yearly',
      n: 2,
      times: [
        '2024-03-31T00:00:00.000Z',
        '2023-12-31T23:00:00.000Z',
        '2023-06-01T00:00:00.000Z',
        '2022-01-01T00:00:00.000Z',
      ],
      keep: ['2024-03-31T00:00:00.000Z', '2023-12-31T23:00:00.000Z'],
    },
  ];

  for (const c of cases) {
    it(`--keep-${c.rule} ${c.n}`, async () => {
      const d = await makeStore(c.rule, c.times);
      const r = await ferry(['prune', d, `--keep-${c.rule}`, String(c.n)]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(tarsIn(d)).toEqual([...names(c.keep), ...always].sort());
      expect(r.stdout).toMatch(new RegExp(`${c.times.length - c.keep.length} bundles removed`));
      expect(r.stdout).toMatch(/junk\.tar: .*not a ferry bundle/);
      expect(readdirSync(d).filter((n) => n.startsWith('.'))).toEqual([]);
    });
  }

  it('combined rules keep the union; --dry-run shows what would go and why the rest stays, removing nothing', async () => {
    const times = [
      '2024-03-10T23:00:00.000Z',
      '2024-03-10T10:00:00.000Z',
      '2024-03-09T12:00:00.000Z',
      '2024-02-08T12:00:00.000Z',
      '2024-01-05T12:00:00.000Z',
    ];
    const d = await makeStore('dry', times);
    const before = tarsIn(d);
    const r = await ferry(['prune', d, '--keep-last', '1', '--keep-daily', '2', '--keep-monthly', '2', '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(tarsIn(d)).toEqual(before);
    expect(r.stdout).toMatch(/^dry run: nothing was removed/);
    expect(r.stdout).toMatch(
      /keep +2024-03-10 23:00:00Z +ferry-web-20240310T230000Z\.tar +\S+ \S+ +newest of its group, last 1, daily 2024-03-10, monthly 2024-03/,
    );
    expect(r.stdout).toMatch(/would remove +2024-03-10 10:00:00Z +ferry-web-20240310T100000Z\.tar/);
    expect(r.stdout).toMatch(/keep +2024-03-09 12:00:00Z +ferry-web-20240309T120000Z\.tar +\S+ \S+ +daily 2024-03-09/);
    expect(r.stdout).toMatch(/keep +2024-02-08 12:00:00Z +ferry-web-20240208T120000Z\.tar +\S+ \S+ +monthly 2024-02/);
    expect(r.stdout).toMatch(/would remove +2024-01-05 12:00:00Z +ferry-web-20240105T120000Z\.tar/);
    expect(r.stdout).toMatch(
      /keep +2020-01-01 00:00:00Z +ferry-db\+1-20200101T000000Z\.tar +\S+ \S+ +newest of its group/,
    );
    expect(r.stdout).toMatch(/2 bundles would be removed/);
    const j = await ferry([
      '--json',
      'prune',
      d,
      '--keep-last',
      '1',
      '--keep-daily',
      '2',
      '--keep-monthly',
      '2',
      '--dry-run',
    ]);
    expect(j.code).toBe(0);
    const res = JSON.parse(j.stdout);
    expect(res.dryRun).toBe(true);
    expect(res.removed.map((x: any) => path.basename(x.bundle)).sort()).toEqual([
      'ferry-web-20240105T120000Z.tar',
      'ferry-web-20240310T100000Z.tar',
    ]);
    expect(res.unreadable.map((x: any) => path.basename(x.bundle))).toEqual(['junk.tar']);
    expect(tarsIn(d)).toEqual(before);
    // and for real: exactly what the dry run announced
    const real = await ferry(['--json', 'prune', d, '--keep-last', '1', '--keep-daily', '2', '--keep-monthly', '2']);
    expect(real.code, real.stderr).toBe(0);
    expect(
      JSON.parse(real.stdout)
        .removed.map((x: any) => x.bundle)
        .sort(),
    ).toEqual(res.removed.map((x: any) => x.bundle).sort());
    expect(tarsIn(d)).toEqual(
      before.filter((n) => !['ferry-web-20240105T120000Z.tar', 'ferry-web-20240310T100000Z.tar'].includes(n)),
    );
  });

  it('--keep-within keeps what was made within that long before the newest bundle (not before now); a bad duration is a usage error', async () => {
    const times = [
      '2024-03-10T12:00:00.000Z',
      '2024-03-04T12:00:00.000Z',
      '2024-03-03T11:00:00.000Z',
      '2024-02-20T00:00:00.000Z',
    ];
    const d = await makeStore('within', times);
    const r = await ferry(['prune', d, '--keep-within', '1w']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // years after the bundles were made: still measured from the newest one
    expect(tarsIn(d)).toEqual([...names(times.slice(0, 2)), ...always].sort());
    expect(r.stdout).toMatch(/keep +2024-03-04 12:00:00Z +ferry-web-20240304T120000Z\.tar +\S+ \S+ +within 1w/);
    const bad = await ferry(['prune', d, '--keep-within', '30 days']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--keep-within.*expected a duration such as 30d/);
    expect(tarsIn(d)).toEqual([...names(times.slice(0, 2)), ...always].sort());
  });

  it('never deletes the newest bundle of a set, nor a file it cannot parse, even with the tightest rule', async () => {
    const d = await makeStore('tight', ['2024-03-02T00:00:00.000Z', '2024-03-01T00:00:00.000Z']);
    // an unreadable file, whose modification time is older than everything
    writeFileSync(path.join(d, 'aaa-unreadable.tar'), Buffer.alloc(4096));
    const r = await ferry(['prune', d, '--keep-last', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(tarsIn(d)).toEqual([
      'aaa-unreadable.tar',
      'ferry-db+1-20200101T000000Z.tar',
      'ferry-web-20240302T000000Z.tar',
      'junk.tar',
    ]);
  });

  it('refuses to run without a keep rule (usage error, nothing removed)', async () => {
    const d = await makeStore('norule', ['2024-03-02T00:00:00.000Z', '2024-03-01T00:00:00.000Z']);
    const before = tarsIn(d);
    for (const args of [[], ['--keep-daily', '0'], ['--dry-run'], ['--keep-last', 'two']]) {
      const r = await ferry(['prune', d, ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      noTrace(r.stderr);
    }
    expect(tarsIn(d)).toEqual(before);
  });
});

describe('prune on an ssh:// store', () => {
  // The lab's sshd runs on this machine: the "remote" directory is visible here too.
  const { home } = sshHome(path.join(dir, 'ssh-prune'));
  const env = { HOME: home };
  const url = (d: string) => `ssh://newhost${d}`;
  const lockOf = (pid: number, hostname = os.hostname()) =>
    JSON.stringify({ pid, hostname, token: 'test', since: new Date().toISOString(), purpose: 'test' });
  async function remoteStore(name: string, times: string[]): Promise<string> {
    const d = path.join(dir, 'ssh-prune', name);
    mkdirSync(d, { recursive: true });
    for (const t of times)
      await craftBundle(path.join(d, `ferry-web-${stamp(t)}.tar`), { createdAt: t, containers: ['web'] });
    await craftBundle(path.join(d, 'ferry-db+1-20200101T000000Z.tar'), {
      createdAt: '2020-01-01T00:00:00.000Z',
      containers: ['db', 'web'],
    });
    writeFileSync(path.join(d, 'junk.tar'), 'not a bundle');
    return d;
  }
  const times = [
    '2024-03-10T23:00:00.000Z',
    '2024-03-10T10:00:00.000Z',
    '2024-03-09T12:00:00.000Z',
    '2024-02-08T12:00:00.000Z',
  ];

  it('applies the rules over SFTP exactly as on a local store; --dry-run removes nothing', async () => {
    const d = await remoteStore('rules', times);
    const before = tarsIn(d);
    const dry = await ferry(['--json', 'prune', url(d), '--keep-daily', '2', '--dry-run'], { env });
    expect(dry.code, dry.stderr).toBe(0);
    const planned = JSON.parse(dry.stdout);
    expect(planned.store).toBe(url(d));
    expect(planned.removed.map((x: any) => x.bundle).sort()).toEqual([
      url(`${d}/ferry-web-20240208T120000Z.tar`),
      url(`${d}/ferry-web-20240310T100000Z.tar`),
    ]);
    expect(planned.unreadable.map((x: any) => x.bundle)).toEqual([url(`${d}/junk.tar`)]);
    expect(tarsIn(d)).toEqual(before);

    const r = await ferry(['prune', url(d), '--keep-daily', '2'], { env });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/2 bundles removed/);
    expect(r.stdout).toMatch(/junk\.tar: .*not a ferry bundle/);
    expect(tarsIn(d)).toEqual([
      'ferry-db+1-20200101T000000Z.tar',
      'ferry-web-20240309T120000Z.tar',
      'ferry-web-20240310T230000Z.tar',
      'junk.tar',
    ]);
    expect(readdirSync(d).filter((n) => n.startsWith('.'))).toEqual([]); // the lock is released
    // the same listing as a local prune of the same store gives
    const local = await ferry(['--json', 'prune', d, '--keep-daily', '2', '--dry-run']);
    expect(JSON.parse(local.stdout).kept.map((x: any) => path.basename(x.bundle))).toEqual(
      JSON.parse((await ferry(['--json', 'prune', url(d), '--keep-daily', '2', '--dry-run'], { env })).stdout).kept.map(
        (x: any) => path.basename(x.bundle),
      ),
    );
  });

  it("waits for the remote store's lock, gives up after --lock-timeout, and takes over a stale one", async () => {
    const d = await remoteStore('locked', times.slice(0, 2));
    writeFileSync(path.join(d, '.ferry.lock'), lockOf(process.pid)); // this test process: alive
    const started = Date.now();
    const r = await ferry(['prune', url(d), '--keep-last', '1', '--lock-timeout', '1'], { env });
    expect(r.code).toBe(6);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(r.stderr).toMatch(
      new RegExp(
        `the store ${url(d).replace(/[.+]/g, '\\$&')} is locked by another ferry run: pid ${process.pid} on ${os.hostname()}`,
      ),
    );
    noTrace(r.stderr);
    expect(tarsIn(d)).toHaveLength(4);
    // its owner is gone: taken over, and released after
    writeFileSync(path.join(d, '.ferry.lock'), lockOf(spawnSync('true').pid!));
    const r2 = await ferry(['prune', url(d), '--keep-last', '1', '--lock-timeout', '0'], { env });
    expect(r2.code, r2.stderr).toBe(0);
    expect(tarsIn(d)).toEqual(['ferry-db+1-20200101T000000Z.tar', 'ferry-web-20240310T230000Z.tar', 'junk.tar']);
    expect(existsSync(path.join(d, '.ferry.lock'))).toBe(false);
  });

  it('a store with more bundles than sshd allows sessions on one connection (MaxSessions 10) is listed and pruned', async () => {
    const many = Array.from({ length: 14 }, (_, i) => `2024-04-${String(i + 1).padStart(2, '0')}T12:00:00.000Z`);
    const d = await remoteStore('many', many);
    const ls = await ferry(['--json', 'ls', url(d)], { env });
    expect(ls.code, ls.stderr).toBe(0);
    const listed = JSON.parse(ls.stdout).bundles;
    expect(listed).toHaveLength(16);
    expect(listed.filter((e: any) => e.error).map((e: any) => path.basename(e.bundle))).toEqual(['junk.tar']);
    const r = await ferry(['prune', url(d), '--keep-last', '3'], { env });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/11 bundles removed/);
    expect(tarsIn(d)).toEqual(
      ['ferry-db+1-20200101T000000Z.tar', ...many.slice(-3).map((t) => `ferry-web-${stamp(t)}.tar`), 'junk.tar'].sort(),
    );
  });

  it('a missing store or a file is refused, not a crash', async () => {
    const missing = await ferry(['prune', url(path.join(dir, 'ssh-prune', 'nope')), '--keep-last', '1'], { env });
    expect(missing.code).toBe(5);
    expect(missing.stderr).toMatch(/no store at ssh:\/\/newhost\//);
    noTrace(missing.stderr);
    const d = await remoteStore('file', times.slice(0, 1));
    const file = await ferry(['prune', url(path.join(d, 'junk.tar')), '--keep-last', '1'], { env });
    expect(file.code).toBe(2);
    expect(file.stderr).toMatch(/is not a directory/);
  });
});

describe('the store lock', () => {
  const lockOf = (pid: number, hostname = os.hostname()) =>
    JSON.stringify({ pid, hostname, token: 'test', since: new Date().toISOString(), purpose: 'test' });

  it('prune waits for a held lock and gives up after --lock-timeout, removing nothing', async () => {
    const d = path.join(dir, 'locked-prune');
    mkdirSync(d);
    for (const t of ['2024-03-02T00:00:00.000Z', '2024-03-01T00:00:00.000Z'])
      await craftBundle(path.join(d, `ferry-web-${stamp(t)}.tar`), { createdAt: t, containers: ['web'] });
    writeFileSync(path.join(d, '.ferry.lock'), lockOf(process.pid)); // this test process: alive
    const started = Date.now();
    const r = await ferry(['prune', d, '--keep-last', '1', '--lock-timeout', '1']);
    expect(r.code).toBe(6);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(r.stderr).toMatch(new RegExp(`locked by another ferry run: pid ${process.pid} on ${os.hostname()}`));
    expect(tarsIn(d)).toHaveLength(2);
    // a lock from another host is never taken over: its pid means nothing here
    writeFileSync(path.join(d, '.ferry.lock'), lockOf(1, 'some-other-host'));
    const r2 = await ferry(['prune', d, '--keep-last', '1', '--lock-timeout', '0']);
    expect(r2.code).toBe(6);
    expect(r2.stderr).toMatch(/if no ferry runs on some-other-host any more, remove .*\.ferry\.lock/);
    expect(tarsIn(d)).toHaveLength(2);
  });

  it('a lock of another host that nobody touched for 15 minutes is taken over; one its holder keeps touching is not', async () => {
    const d = path.join(dir, 'foreign');
    mkdirSync(d);
    for (const t of ['2024-03-02T00:00:00.000Z', '2024-03-01T00:00:00.000Z'])
      await craftBundle(path.join(d, `ferry-web-${stamp(t)}.tar`), { createdAt: t, containers: ['web'] });
    const lock = path.join(d, '.ferry.lock');
    writeFileSync(lock, lockOf(1, 'crashed-host'));
    const old = (Date.now() - 16 * 60_000) / 1000;
    utimesSync(lock, old, old);
    const r = await ferry(['prune', d, '--keep-last', '1', '--lock-timeout', '0']);
    expect(r.code, r.stderr).toBe(0);
    expect(tarsIn(d)).toEqual(['ferry-web-20240302T000000Z.tar']);
    expect(existsSync(lock)).toBe(false);

    // a held lock is touched while it is held, so it never looks like that
    const held = await acquireStoreLock(d, { timeoutMs: 0, refreshMs: 50 });
    try {
      utimesSync(lock, old, old);
      await new Promise((res) => setTimeout(res, 300));
      expect(Date.now() - statSync(lock).mtimeMs).toBeLessThan(5000);
    } finally {
      await held.release();
    }
    expect(existsSync(lock)).toBe(false);
  });

  it('a stale lock (its process is gone) is taken over', async () => {
    const d = path.join(dir, 'stale');
    mkdirSync(d);
    for (const t of ['2024-03-02T00:00:00.000Z', '2024-03-01T00:00:00.000Z'])
      await craftBundle(path.join(d, `ferry-web-${stamp(t)}.tar`), { createdAt: t, containers: ['web'] });
    const dead = spawnSync('true').pid!;
    writeFileSync(path.join(d, '.ferry.lock'), lockOf(dead));
    const r = await ferry(['prune', d, '--keep-last', '1', '--lock-timeout', '0']);
    expect(r.code, r.stderr).toBe(0);
    expect(tarsIn(d)).toEqual(['ferry-web-20240302T000000Z.tar']);
    expect(existsSync(path.join(d, '.ferry.lock'))).toBe(false);
    // the same for a backup
    writeFileSync(path.join(d, '.ferry.lock'), lockOf(dead));
    const b = await ferry(['backup', cache, '-o', d, '--lock-timeout', '0']);
    expect(b.code, b.stderr).toBe(0);
    expect(existsSync(path.join(d, '.ferry.lock'))).toBe(false);
  });

  it('a backup waits while the lock is held (prune running), then writes its bundle', async () => {
    const d = path.join(dir, 'wait');
    mkdirSync(d);
    const lock = path.join(d, '.ferry.lock');
    writeFileSync(lock, lockOf(process.pid));
    const run = ferry(['backup', cache, '-o', d, '--lock-timeout', '60']);
    await new Promise((r) => setTimeout(r, 2500));
    // still waiting: no bundle, no temporary, and the container is not paused
    expect(readdirSync(d)).toEqual(['.ferry.lock']);
    expect(inspect('container', cache).State.Paused).toBe(false);
    rmSync(lock);
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      new RegExp(`waiting for the lock of ${d.replace(/[.]/g, '\\.')}, held by pid ${process.pid}`),
    );
    expect(tarsIn(d)).toHaveLength(1);
  });

  it('a backup gives up after --lock-timeout, leaving nothing behind and the container running', async () => {
    const d = path.join(dir, 'timeout');
    mkdirSync(d);
    writeFileSync(path.join(d, '.ferry.lock'), lockOf(process.pid));
    const r = await ferry(['backup', cache, '-o', d, '--lock-timeout', '1']);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/locked by another ferry run/);
    noTrace(r.stderr);
    expect(readdirSync(d)).toEqual(['.ferry.lock']);
    const st = inspect('container', cache).State;
    expect(st.Running).toBe(true);
    expect(st.Paused).toBe(false);
  });
});
