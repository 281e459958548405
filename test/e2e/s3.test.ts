/**
 * S3 as a store, through the real CLI, against the lab's S3 server (Ceph RadosGW): back up to
 * s3+http://, list, inspect, verify (one bundle and the whole prefix), restore (checked with
 * docker inspect and the data), drill, prune; the store lock between runs; and an interrupted
 * upload leaves nothing: no object, no multipart upload in progress, nothing listed.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AWKWARD_DATA,
  BIN,
  BUSYBOX,
  cleanup,
  docker,
  ENGINE_A,
  ENGINE_B,
  ferry,
  ferryEnv,
  inspect,
  S3,
  s3Env,
  s3Url,
  uid,
  volumeListing,
} from '../helpers/lab.js';
import { s3Admin, s3Clean, s3Delete, s3Objects, s3Put, s3Uploads } from '../helpers/s3.js';

const ROOT = uid('e2e-s3');
const name = uid('s3');
const vol = `${name}-data`;
const env = s3Env();
let listing = '';

beforeAll(() => {
  docker(['run', '-d', '--name', name, '-e', 'X=1', '-v', `${vol}:/data`, BUSYBOX, 'sleep', '100000']);
  docker(['exec', name, 'sh', '-c', AWKWARD_DATA]);
  listing = volumeListing(vol);
});

afterAll(async () => {
  cleanup(ENGINE_A, { containers: [name, `${name}-2`, `${name}-big`], volumes: [vol, `${name}-big`] });
  await s3Clean(ROOT);
});

describe('s3 store through the CLI', () => {
  const prefix = `${ROOT}/main`;
  const store = s3Url(prefix);
  let bundle = '';

  it('backs up to s3+http://host/bucket/prefix (read back and verified there), and lists it', async () => {
    const r = await ferry(['backup', name, '-o', store, '--verify', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/warning|NodeVersionSupport/i);
    const res = JSON.parse(r.stdout);
    expect(res.verified).toBe(true);
    bundle = res.bundle;
    expect(bundle.startsWith(`${store}/`)).toBe(true);
    expect(bundle.slice(store.length + 1)).toMatch(new RegExp(`^ferry-${name}-\\d{8}T\\d{6}Z\\.tar$`));
    const key = bundle.slice(store.length + 1);
    expect(await s3Objects(prefix)).toEqual([key]); // no lock, no probe, nothing else left
    expect(await s3Uploads(prefix)).toEqual([]);

    const ls = await ferry(['ls', store, '--json'], { env });
    expect(ls.code, ls.stderr).toBe(0);
    const listed = JSON.parse(ls.stdout).bundles;
    expect(listed).toHaveLength(1);
    expect(listed[0].bundle).toBe(bundle);
    expect(listed[0].containers).toEqual([name]);
  });

  it('s3://bucket/prefix with --s3-endpoint, and with AWS_ENDPOINT_URL_S3, reach the same store', async () => {
    const viaFlag = await ferry(['--s3-endpoint', S3.endpoint, 'ls', `s3://${S3.bucket}/${prefix}`, '--json'], { env });
    expect(viaFlag.code, viaFlag.stderr).toBe(0);
    expect(JSON.parse(viaFlag.stdout).bundles.map((b: { containers: string[] }) => b.containers)).toEqual([[name]]);
    const viaEnv = await ferry(['ls', `s3://${S3.bucket}/${prefix}`, '--json'], {
      env: { ...env, AWS_ENDPOINT_URL_S3: S3.endpoint },
    });
    expect(viaEnv.code, viaEnv.stderr).toBe(0);
    expect(JSON.parse(viaEnv.stdout).bundles).toHaveLength(1);
  });

  it('inspects and verifies the bundle there, and the whole prefix', async () => {
    const ins = await ferry(['inspect', bundle, '--json'], { env });
    expect(ins.code, ins.stderr).toBe(0);
    expect(ins.stdout).toContain(name);
    const one = await ferry(['verify', bundle, '--json'], { env });
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout).ok).toBe(true);
    const all = await ferry(['verify', store, '--json'], { env });
    expect(all.code, all.stderr).toBe(0);
    const rep = JSON.parse(all.stdout);
    expect(rep.ok).toBe(true);
    expect(rep.bundles).toHaveLength(1);
  });

  it('restores from s3: the container and its data are back', async () => {
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const r = await ferry(['restore', bundle], { env });
    expect(r.code, r.stderr).toBe(0);
    const c = inspect('container', name);
    expect(c.Config.Env).toContain('X=1');
    expect(c.State.Running).toBe(true);
    expect(volumeListing(vol)).toBe(listing);
  });

  it('a DR restore on another engine (B) from the same s3 bundle', async () => {
    try {
      const r = await ferry(['-H', ENGINE_B, 'restore', bundle, '--no-start'], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(inspect('container', name, ENGINE_B).Config.Env).toContain('X=1');
      expect(volumeListing(vol, ENGINE_B)).toBe(listing);
    } finally {
      cleanup(ENGINE_B, { containers: [name], volumes: [vol] });
    }
  });

  it('a damaged bundle there fails verify (exit 7), by bundle and by prefix', async () => {
    const bad = `${prefix}/ferry-${name}-19990101T000000Z.tar`;
    await s3Put(bad, Buffer.alloc(4096, 1));
    try {
      const one = await ferry(['verify', s3Url(bad)], { env });
      expect(one.code).toBe(7);
      const all = await ferry(['verify', store], { env });
      expect(all.code).toBe(7);
      // the verdict is recorded beside it, for prune (docs/commands.md, "Damaged bundles")
      expect(await s3Objects(prefix)).toContain(`${bad.slice(prefix.length + 1)}.damaged`);
    } finally {
      await s3Delete(bad);
      await s3Delete(`${bad}.damaged`);
    }
  });

  it('prune keeps what the rules say and removes the rest', async () => {
    for (let i = 0; i < 2; i++) {
      await new Promise((r) => setTimeout(r, 1100)); // bundle names carry the second
      const r = await ferry(['backup', name, '-o', store], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    const before = JSON.parse((await ferry(['ls', store, '--json'], { env })).stdout).bundles;
    expect(before).toHaveLength(3);
    const p = await ferry(['prune', store, '--keep-last', '1', '--json'], { env });
    expect(p.code, p.stderr).toBe(0);
    const after = JSON.parse((await ferry(['ls', store, '--json'], { env })).stdout).bundles;
    expect(after).toHaveLength(1);
    expect(after[0].bundle).toBe(
      before
        .map((b: { bundle: string }) => b.bundle)
        .sort()
        .at(-1),
    );
    expect((await s3Objects(prefix)).filter((k) => !k.endsWith('.tar'))).toEqual([]);
  });

  it('errors: no bucket (5), refused keys (8), no rights (8), each saying what to do', async () => {
    const nb = await ferry(['ls', `s3+http://127.0.0.1:7480/no-such-bucket-${uid('b')}/x`], { env });
    expect(nb.code).toBe(5);
    expect(nb.stderr).toMatch(/no bucket/);
    const bad = await ferry(['ls', store], { env: { ...env, AWS_SECRET_ACCESS_KEY: 'wrong' } });
    expect(bad.code).toBe(8);
    expect(bad.stderr).toMatch(/credentials/);
    expect(bad.stderr).toMatch(/hint: .*AWS_ACCESS_KEY_ID/);
    const other = await ferry(['backup', name, '-o', store], {
      env: { ...env, AWS_ACCESS_KEY_ID: S3.other.accessKeyId, AWS_SECRET_ACCESS_KEY: S3.other.secretAccessKey },
    });
    expect(other.code).toBe(8);
    expect(other.stderr).toMatch(/access denied/);
    expect(inspect('container', name).State.Running).toBe(true);
  });
});

describe('the store lock on s3', () => {
  it('a lock held by a run on another host makes a backup wait, then fail with exit 6', async () => {
    const prefix = `${ROOT}/locked`;
    const info = { pid: 1, hostname: 'other-host.example', token: 'x', since: new Date().toISOString() };
    await s3Put(`${prefix}/.ferry.lock`, JSON.stringify(info) + '\n');
    const r = await ferry(['backup', name, '-o', s3Url(prefix), '--lock-timeout', '1'], { env });
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toMatch(/locked by another ferry run: pid 1 on other-host\.example/);
    expect(await s3Objects(prefix)).toEqual(['.ferry.lock']); // nothing written
    expect(await s3Uploads(prefix)).toEqual([]);
    expect(inspect('container', name).State.Running).toBe(true);
  });

  it('two backups into one prefix at once both succeed, under different names', async () => {
    const prefix = `${ROOT}/two`;
    const second = `${name}-2`;
    docker(['run', '-d', '--name', second, BUSYBOX, 'sleep', '100000']);
    const [a, b] = await Promise.all([
      ferry(['backup', name, '-o', s3Url(prefix), '--json'], { env }),
      ferry(['backup', second, '-o', s3Url(prefix), '--json'], { env }),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(a.stdout).bundle).not.toBe(JSON.parse(b.stdout).bundle);
    expect((await s3Objects(prefix)).sort()).toHaveLength(2);
  });
});

describe('drill and encryption on s3', () => {
  const web = `${name}-web`;
  const www = `${web}-www`;
  const drilled = () => ({
    containers: docker(['ps', '-a', '-q', '--filter', 'label=io.ferry.drill']),
    volumes: docker(['volume', 'ls', '-q', '--filter', 'label=io.ferry.drill']),
    networks: docker(['network', 'ls', '-q', '--filter', 'label=io.ferry.drill']),
  });
  beforeAll(() => {
    docker(['run', '-d', '--name', web, '-v', `${www}:/www`, BUSYBOX, 'httpd', '-f', '-p', '8080', '-h', '/www']);
    docker(['exec', web, 'sh', '-c', 'echo s3-drill-expected-content > /www/index.html']);
  });
  afterAll(() => cleanup(ENGINE_A, { containers: [web], volumes: [www] }));

  it('drills the newest bundle in s3: the copy serves the data, and nothing is left', async () => {
    const prefix = `${ROOT}/drill`;
    const b = await ferry(['backup', web, '-o', s3Url(prefix), '--json'], { env });
    expect(b.code, b.stderr).toBe(0);
    const bundle = JSON.parse(b.stdout).bundle as string;
    const before = drilled();
    const r = await ferry(
      [
        '--json',
        'drill',
        bundle,
        '--probe',
        'wget -q -O - http://127.0.0.1:8080/ | grep s3-drill-expected-content',
        '--timeout',
        '60',
      ],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res).toMatchObject({ ok: true, bundle, leftovers: [] });
    expect(res.probe.output).toContain('s3-drill-expected-content');
    expect(drilled()).toEqual(before);
    expect(inspect('container', web).State.Running).toBe(true);
  });

  it('--encrypt: the object holds no plaintext; ls needs the passphrase for more than that; restore decrypts', async () => {
    const prefix = `${ROOT}/enc`;
    const encEnv = { ...env, FERRY_PASSPHRASE: 's3-secret-passphrase' };
    const b = await ferry(['backup', web, '-o', s3Url(prefix), '--encrypt', '--compress', 'none', '--json'], {
      env: encEnv,
    });
    expect(b.code, b.stderr).toBe(0);
    const bundle = JSON.parse(b.stdout).bundle as string;
    const key = `${prefix}/${bundle.slice(s3Url(prefix).length + 1)}`;
    const { GetObjectCommand } = await import('@aws-sdk/client-s3');
    const obj = await s3Admin().send(new GetObjectCommand({ Bucket: S3.bucket, Key: key }));
    const bytes = Buffer.from(await obj.Body!.transformToByteArray());
    expect(bytes.length).toBeGreaterThan(1000);
    expect(bytes.includes('s3-drill-expected-content')).toBe(false);
    expect(bytes.includes('manifest.json')).toBe(false);
    // An age file to a passphrase holds nothing in the clear beside its scrypt stanza (age allows
    // no other): without the passphrase ls knows it is encrypted, with it ls reads its containers.
    const ls = await ferry(['ls', s3Url(prefix), '--json'], { env });
    expect(ls.code, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout).bundles[0]).toMatchObject({ encrypted: true, error: { code: 'PASSPHRASE' } });
    const ls2 = await ferry(['ls', s3Url(prefix), '--json'], { env: encEnv });
    expect(ls2.code, ls2.stderr).toBe(0);
    expect(JSON.parse(ls2.stdout).bundles[0]).toMatchObject({ containers: [web], encrypted: true });
    cleanup(ENGINE_A, { containers: [web], volumes: [www] });
    const wrong = await ferry(['restore', bundle], { env: { ...env, FERRY_PASSPHRASE: 'wrong' } });
    expect(wrong.code).toBe(2);
    const r = await ferry(['restore', bundle], { env: encEnv });
    expect(r.code, r.stderr).toBe(0);
    expect(inspect('container', web).State.Running).toBe(true);
    expect(docker(['exec', web, 'cat', '/www/index.html'])).toBe('s3-drill-expected-content');
  });
});

describe('an interrupted upload to s3 leaves nothing', () => {
  const big = `${name}-big`;
  beforeAll(() => {
    docker(['run', '-d', '--name', big, '-v', `${big}:/v`, BUSYBOX, 'sleep', '100000']);
    docker(['exec', big, 'sh', '-c', 'dd if=/dev/urandom of=/v/blob bs=1M count=400 2>/dev/null']);
  });

  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    it(`${sig} while parts are being uploaded: exit ${sig === 'SIGINT' ? 130 : 143}, no upload, no object, nothing listed`, async () => {
      const prefix = `${ROOT}/int-${sig}`;
      await s3Put(`${prefix}/keep.txt`, 'so that the store exists');
      const child = spawn(BIN, ['backup', big, '-o', s3Url(prefix)], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: ferryEnv(env),
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
      // wait until the upload is under way (it is listed as in progress), then stop the run
      const t0 = Date.now();
      while ((await s3Uploads(prefix)).length === 0 && Date.now() - t0 < 60_000)
        await new Promise((r) => setTimeout(r, 100));
      expect(await s3Uploads(prefix)).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 1500)); // some parts sent
      child.kill(sig);
      const code = await closed;
      expect(code, stderr).toBe(sig === 'SIGINT' ? 130 : 143);
      expect(stderr).toContain(`interrupted by ${sig}`);
      expect(await s3Uploads(prefix)).toEqual([]);
      expect(await s3Objects(prefix)).toEqual(['keep.txt']);
      const ls = await ferry(['ls', s3Url(prefix), '--json'], { env });
      expect(ls.code, ls.stderr).toBe(0);
      expect(JSON.parse(ls.stdout).bundles).toEqual([]);
      expect(inspect('container', big).State.Running).toBe(true);
      expect(inspect('container', big).State.Paused).toBe(false);
    });
  }
});
