/**
 * Path excludes (--exclude-path, the ferry.exclude-paths label) on every data path that reads a
 * volume: GNU tar on the engine's host, the engine's archive (FERRY_HOST_VOLUMES=0), and a
 * migration's pre-copy. Restored (or migrated), the volume lacks exactly what was excluded; every
 * other entry is the same, byte for byte, as seen from inside the running container.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, ENGINE_B, ferry, removeSnapshots, uid } from '../helpers/lab.js';

const name = uid('ex');
const vol = `${name}-data`;
const names = [name, `${name}-h`, `${name}-e`];
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-excludes-'));

/**
 * Every entry under /data in a running container, as `docker exec` sees it: path, owner, mode,
 * mtime, type, and size and sha256 of files (no link counts: a directory that lost an excluded
 * subdirectory has one link fewer).
 */
function listing(container: string, host = ENGINE_A): string[] {
  const script =
    'cd /data && find . | LC_ALL=C sort | while IFS= read -r f; do ' +
    'st=$(stat -c "%u:%g %a %Y %F" "$f"); ' +
    'if [ -L "$f" ]; then x="-> $(readlink "$f")"; elif [ -f "$f" ]; then x="$(stat -c %s "$f") $(sha256sum < "$f" | cut -c1-16)"; else x=""; fi; ' +
    'echo "$f $st $x"; done';
  return docker(['exec', container, 'sh', '-c', script], { host }).split('\n');
}

/** What must be left out: the directory cache (with all it holds) and the file logs/app.log. */
const EXCLUDED = /^\.\/(cache(\/| )|logs\/app\.log )/;
const EXCLUDES = ['--exclude-path', 'cache', '--exclude-path', 'logs/*.log'];

function expectExcluded(got: string[], source: string[]) {
  expect(got).toEqual(source.filter((l) => !EXCLUDED.test(l)));
  // and the test's own premise: there was something to leave out, and something to keep
  expect(source.filter((l) => EXCLUDED.test(l)).length).toBe(5);
  expect(got.some((l) => l.startsWith('./logs/keep.txt '))).toBe(true);
}

function onlyBundle(d: string): string {
  const f = readdirSync(d).filter((x) => x.endsWith('.tar'));
  expect(f).toHaveLength(1);
  return path.join(d, f[0]!);
}

beforeAll(() => {
  docker(['run', '-d', '--name', name, '-v', `${vol}:/data`, BUSYBOX, 'sleep', '3600']);
  docker([
    'exec',
    name,
    'sh',
    '-c',
    [
      'cd /data',
      'mkdir -p cache/sub logs keep/cache',
      'head -c 200000 /dev/urandom > cache/big',
      'echo c > cache/sub/c',
      'echo a > logs/app.log && echo k > logs/keep.txt && echo x > logs/app.log.1',
      'echo nested > keep/cache/not-top-level',
      'head -c 50000 /dev/urandom > blob && chmod 640 blob && chown 1000:1000 blob',
      'ln -s keep/cache/not-top-level link',
    ].join(' && '),
  ]);
});

afterAll(() => {
  for (const h of [ENGINE_A, ENGINE_B]) cleanup(h, { containers: names, volumes: names.map((n) => `${n}-data`) });
  removeSnapshots(names);
  rmSync(dir, { recursive: true, force: true });
});

describe('backup --exclude-path, then restore', () => {
  for (const [suffix, env, dataPath] of [
    ['h', {}, 'host-tar'],
    ['e', { FERRY_HOST_VOLUMES: '0' }, 'engine-archive'],
  ] as const)
    it(`leaves out exactly the excluded dir and file on the ${dataPath} path`, async () => {
      const out = path.join(dir, suffix);
      const b = await ferry(['backup', name, '-o', out, '--mkdir', '--json', ...EXCLUDES], { env });
      expect(b.code, b.stderr).toBe(0);
      expect(JSON.parse(b.stdout).dataPaths.volumes).toEqual([expect.objectContaining({ name: vol, path: dataPath })]);
      const bundle = onlyBundle(out);

      const i = await ferry(['inspect', bundle, '--json']);
      expect(i.code, i.stderr).toBe(0);
      expect(JSON.parse(i.stdout).manifest.volumes[0].excludePaths).toEqual(['cache', 'logs/*.log']);
      const t = await ferry(['inspect', bundle]);
      expect(t.stdout).toContain('(without cache, logs/*.log)');
      const v = await ferry(['verify', bundle]);
      expect(v.code, v.stderr).toBe(0);

      const to = `${name}-${suffix}`;
      const r = await ferry(['restore', bundle, '--name', to, '--map-volume', `${vol}=${to}-data`], { env });
      expect(r.code, r.stderr).toBe(0);
      expectExcluded(listing(to), listing(name));
    });
});

describe('migrate --exclude-path and the ferry.exclude-paths label', () => {
  const m = `${name}-m`;
  beforeAll(() => {
    names.push(m);
    docker([
      'run',
      '-d',
      '--name',
      m,
      '--label',
      'ferry.exclude-paths=cache',
      '-v',
      `${m}-data:/data`,
      BUSYBOX,
      'sleep',
      '3600',
    ]);
    // the same content as the first volume
    const script = `cd /data && mkdir -p cache/sub logs keep/cache && head -c 200000 /dev/urandom > cache/big && echo c > cache/sub/c && echo a > logs/app.log && echo k > logs/keep.txt && echo x > logs/app.log.1 && echo nested > keep/cache/not-top-level`;
    docker(['exec', m, 'sh', '-c', script]);
  });

  it('the pre-copy never sends what is excluded; the target lacks exactly that', async () => {
    const r = await ferry(['migrate', m, '--to', ENGINE_B, '--json', '--exclude-path', 'logs/*.log']);
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    const v = res.dataPaths.volumes.find((x: { name: string }) => x.name === `${m}-data`);
    // the pre-copy carried it (host tar on both sides), not a one-pass copy
    expect(v, JSON.stringify(res.dataPaths)).toMatchObject({
      path: 'host-tar',
      precopy: { passes: expect.any(Number) },
    });
    const source = listing(m);
    const got = listing(m, ENGINE_B);
    expect(got).toEqual(source.filter((l) => !EXCLUDED.test(l)));
    expect(source.filter((l) => EXCLUDED.test(l)).length).toBe(5);
  });
});
