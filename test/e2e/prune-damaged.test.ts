/**
 * `verify <store> && prune`: a bundle that verify found damaged is marked (`<bundle>.damaged`
 * beside it), and prune counts it towards no keep rule and never removes it, so the rules keep
 * that many good bundles. Real backups of a container on engine A into a directory, the newest
 * damaged by flipping bytes of its volume member; then the same bundles in S3 (the lab's RGW).
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ferry, memberOffset, s3Env, s3Url, uid } from '../helpers/lab.js';
import { s3Clean, s3Objects, s3Put } from '../helpers/s3.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-prune-damaged-'));
const store = path.join(dir, 'store');
const name = uid('pd');
const vol = `${name}-data`;
const S3_ROOT = uid('e2e-prune-damaged');
/** The bundles, oldest first (by the manifests' creation times). */
let bundles: string[] = [];
const tarsIn = (d: string) =>
  readdirSync(d)
    .filter((n) => n.endsWith('.tar'))
    .sort();

function flip(file: string, prefix: string, delta: number): void {
  const buf = readFileSync(file);
  const o = memberOffset(buf, prefix) + delta;
  buf[o] = buf[o]! ^ 0xff;
  writeFileSync(file, buf);
}

beforeAll(async () => {
  docker(['volume', 'create', vol]);
  docker(['run', '-d', '--name', name, '-v', `${vol}:/data`, BUSYBOX, 'sleep', '100000']);
  docker(['exec', name, 'sh', '-c', 'dd if=/dev/urandom of=/data/blob bs=1024 count=64 2>/dev/null']);
  for (let i = 0; i < 4; i++) {
    const r = await ferry(['--json', 'backup', name, '-o', store, '--mkdir']);
    expect(r.code, r.stderr).toBe(0);
  }
  const ls = await ferry(['--json', 'ls', store]);
  expect(ls.code, ls.stderr).toBe(0);
  bundles = (JSON.parse(ls.stdout).bundles as { bundle: string }[]).map((b) => b.bundle);
  expect(bundles).toHaveLength(4);
}, 120_000);

afterAll(async () => {
  cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
  rmSync(dir, { recursive: true, force: true });
  await s3Clean(S3_ROOT).catch(() => {});
});

describe('prune after verify found the newest bundle damaged', () => {
  const newest = () => bundles[3]!;
  const pristine = path.join(dir, 'newest-pristine.tar');

  it('verify <dir> exits 7 and leaves a damage mark beside the damaged bundle only', async () => {
    copyFileSync(newest(), pristine);
    flip(newest(), `volumes/${vol}`, 300);
    const r = await ferry(['--json', 'verify', store]);
    expect(r.code, r.stderr).toBe(7);
    const j = JSON.parse(r.stdout);
    const byName = new Map(
      (j.bundles as { bundle: string; ok: boolean; damageMark?: string }[]).map((b) => [b.bundle, b]),
    );
    expect(byName.get(newest())).toMatchObject({ ok: false, damageMark: 'recorded' });
    for (const b of bundles.slice(0, 3)) expect(byName.get(b)).toMatchObject({ ok: true });
    expect(existsSync(`${newest()}.damaged`)).toBe(true);
    const mark = JSON.parse(readFileSync(`${newest()}.damaged`, 'utf8'));
    expect(mark.reason).toContain(`volumes/${vol}`);
    expect(Date.parse(mark.at)).toBeGreaterThan(Date.now() - 600_000);
    for (const b of bundles.slice(0, 3)) expect(existsSync(`${b}.damaged`)).toBe(false);
    // the mark is no bundle: ls lists the four bundles and nothing else, the newest as damaged
    const ls = await ferry(['--json', 'ls', store]);
    const listed = JSON.parse(ls.stdout).bundles as { bundle: string; damaged?: { reason: string } }[];
    expect(listed.map((b) => b.bundle)).toEqual(bundles);
    expect(listed.filter((b) => b.damaged).map((b) => b.bundle)).toEqual([newest()]);
    expect((await ferry(['ls', store])).stdout).toMatch(new RegExp(`${path.basename(newest())}  !! damaged`));
  });

  it('prune --keep-last 2 keeps two good bundles and the damaged one; only the oldest goes', async () => {
    const dry = await ferry(['--json', 'prune', store, '--keep-last', '2', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    const d = JSON.parse(dry.stdout);
    expect(d.damaged.map((x: { bundle: string }) => x.bundle)).toEqual([newest()]);
    expect(d.damaged[0].damage.reason).toContain(`volumes/${vol}`);
    expect(d.removed.map((x: { bundle: string }) => x.bundle)).toEqual([bundles[0]]);
    expect(tarsIn(store)).toHaveLength(4); // a dry run

    const text = await ferry(['prune', store, '--keep-last', '2', '--dry-run']);
    expect(text.stdout).toMatch(new RegExp(`DAMAGED .*${path.basename(newest())}`));

    const r = await ferry(['--json', 'prune', store, '--keep-last', '2']);
    expect(r.code, r.stderr).toBe(0);
    const p = JSON.parse(r.stdout);
    expect(p.kept.map((x: { bundle: string }) => x.bundle).sort()).toEqual([bundles[1], bundles[2]].sort());
    expect(p.damaged.map((x: { bundle: string }) => x.bundle)).toEqual([newest()]);
    expect(p.removed.map((x: { bundle: string }) => x.bundle)).toEqual([bundles[0]]);
    expect(tarsIn(store)).toEqual(
      bundles
        .slice(1)
        .map((b) => path.basename(b))
        .sort(),
    );
    expect(existsSync(`${newest()}.damaged`)).toBe(true);
    // the two good ones that are left verify
    for (const b of bundles.slice(1, 3)) expect((await ferry(['verify', b])).code).toBe(0);

    // pruned again: nothing more goes (two good ones is what the rule asks for)
    const again = JSON.parse((await ferry(['--json', 'prune', store, '--keep-last', '2'])).stdout);
    expect(again.removed).toEqual([]);
  });

  it('a verify that finds it whole again removes the mark, and prune counts it again', async () => {
    copyFileSync(pristine, newest());
    const r = await ferry(['--json', 'verify', newest()]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).damageMark).toBe('cleared');
    expect(existsSync(`${newest()}.damaged`)).toBe(false);
    const dry = JSON.parse((await ferry(['--json', 'prune', store, '--keep-last', '2', '--dry-run'])).stdout);
    expect(dry.damaged).toEqual([]);
    expect(dry.removed.map((x: { bundle: string }) => x.bundle)).toEqual([bundles[1]]);
  });
});

describe('the same in S3', () => {
  const prefix = `${S3_ROOT}/store`;
  const url = s3Url(prefix);
  const env = s3Env();

  it('verify marks the damaged object, prune keeps it and two good ones', async () => {
    // the three bundles left above, the newest damaged again, uploaded as they are
    const names = tarsIn(store);
    expect(names).toHaveLength(3);
    for (const n of names) await s3Put(`${prefix}/${n}`, readFileSync(path.join(store, n)));
    const damaged = path.basename(bundles[3]!);
    expect(names).toContain(damaged);
    const buf = readFileSync(path.join(store, damaged));
    const o = memberOffset(buf, `volumes/${vol}`) + 300;
    buf[o] = buf[o]! ^ 0xff;
    await s3Put(`${prefix}/${damaged}`, buf);

    const v = await ferry(['--json', 'verify', url], { env });
    expect(v.code, v.stderr).toBe(7);
    expect((await s3Objects(prefix)).sort()).toEqual([...names, `${damaged}.damaged`].sort());

    const ls = await ferry(['--json', 'ls', url], { env });
    expect(JSON.parse(ls.stdout).bundles).toHaveLength(3);

    const p = await ferry(['--json', 'prune', url, '--keep-last', '1'], { env });
    expect(p.code, p.stderr).toBe(0);
    const j = JSON.parse(p.stdout);
    expect(j.damaged.map((x: { bundle: string }) => x.bundle)).toEqual([`${url}/${damaged}`]);
    // keep-last 1 keeps the newest good one; the older good one goes; the damaged one stays
    expect(j.kept.map((x: { bundle: string }) => x.bundle)).toEqual([`${url}/${path.basename(bundles[2]!)}`]);
    expect(j.removed.map((x: { bundle: string }) => x.bundle)).toEqual([`${url}/${path.basename(bundles[1]!)}`]);
    expect((await s3Objects(prefix)).sort()).toEqual(
      [path.basename(bundles[2]!), damaged, `${damaged}.damaged`].sort(),
    );
  });
});
