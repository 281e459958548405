/**
 * `ferry clean` on a real engine: unused snapshot images of the named containers go (one that has
 * another name only loses its ferry/ tag), one a stopped container was created from stays, so
 * does a ferry/ name on an image containers run from, fresh ones stay under --min-age, helpers of
 * dead runs on this host go, a live run's stay. The
 * real removal is limited to this test's own snapshot repository (the engine is shared); the
 * whole-engine listing is checked with --dry-run only.
 */
import { hostname } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUSYBOX, cleanup, docker, ENGINE_A, exists, ferry, inspect, uid } from '../helpers/lab.js';
import { schemaChecked } from '../helpers/json-schema.js';

const name = uid('zzclean');
const repo = `ferry/${name}`;
const used = `${repo}:20200103T000000Z`; // the newest, and a stopped container's image
const fresh = `${repo}:20200102T000000Z`; // committed just now, used by nothing
const alias = `${repo}:20200101T000000Z`; // unused, and the image has another (non-ferry) name
const keep = `${name}-keep:1`; // that other name
const shared = `${repo}:20191231T000000Z`; // another name of busybox, which containers run from
const user = `${name}-user`;
const src = `${name}-src`;
const stray = `${name}-stray`;
const live = `${name}-live`;
const DEAD_PID = 4_194_305; // above Linux's pid_max
let freshId = '';
let aliasId = '';
let busyboxId = '';

interface Item {
  kind: string;
  name: string;
  id: string;
  reason: string;
}
interface CleanJson {
  ok: boolean;
  dryRun: boolean;
  removed: Item[];
  kept: Item[];
  failed: Item[];
}

beforeAll(() => {
  busyboxId = inspect('image', BUSYBOX).Id as string;
  docker(['run', '-d', '--name', src, BUSYBOX, 'sleep', '100000']);
  docker(['exec', src, 'sh', '-c', 'echo one > /f']);
  docker(['commit', src, used]);
  docker(['exec', src, 'sh', '-c', 'echo two > /f']);
  docker(['commit', src, fresh]);
  freshId = inspect('image', fresh).Id as string;
  docker(['exec', src, 'sh', '-c', 'echo three > /f']);
  docker(['commit', src, keep]);
  docker(['tag', keep, alias]);
  aliasId = inspect('image', alias).Id as string;
  docker(['rm', '-f', src]);
  docker(['tag', BUSYBOX, shared]);
  docker(['create', '--name', user, used, 'cat', '/f']);
  const helper = (n: string, owner: string) =>
    docker([
      'create',
      '--name',
      n,
      '--label',
      'io.ferry.role=holder',
      '--label',
      `io.ferry.owner=${owner}`,
      BUSYBOX,
      'true',
    ]);
  helper(stray, `${hostname()}/${DEAD_PID}`);
  helper(live, `${hostname()}/1`); // pid 1 always runs
}, 60_000);

afterAll(() => {
  cleanup(ENGINE_A, { containers: [user, src, stray, live], images: [used, fresh, alias, shared, keep] });
});

const mine = (items: Item[]) => items.filter((i) => i.name.startsWith(repo) || i.name.startsWith(name));
const byName = (items: Item[]) => Object.fromEntries(mine(items).map((i) => [i.name, i.reason]));

describe('ferry clean', () => {
  it('--dry-run lists what would go and what stays, touches nothing, and lists only ferry objects', async () => {
    const r = await ferry(['--json', 'clean', '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    const j = schemaChecked(r.stdout) as unknown as CleanJson;
    expect(j).toMatchObject({ ok: true, dryRun: true, failed: [] });
    // Only ferry's own: snapshot images, the holder image, containers with io.ferry.role.
    for (const i of [...j.removed, ...j.kept])
      if (i.kind === 'image') expect(i.name).toMatch(/^ferry\/[a-z0-9][a-z0-9_.-]*:\d{8}T\d{6}Z$|^ferry-holder:empty$/);
      else expect(inspect('container', i.id).Config.Labels['io.ferry.role'], i.name).toBeTruthy();
    expect(byName(j.removed)).toEqual({
      [stray]: expect.stringMatching(new RegExp(`pid ${DEAD_PID}.*no longer running`)),
    });
    expect(byName(j.kept)).toEqual({
      [used]: expect.stringContaining(user),
      [shared]: expect.stringMatching(new RegExp(`used by container .*${live}`)), // live runs busybox
      [fresh]: expect.stringMatching(/min ago, less than --min-age 3600s/),
      [alias]: expect.stringMatching(/min ago, less than --min-age 3600s/),
      [live]: expect.stringMatching(/pid 1\) is still running/),
    });
    for (const x of [used, fresh, alias, shared]) expect(exists('image', x), x).toBe(true);
    for (const x of [stray, live]) expect(exists('container', x), x).toBe(true);
    const text = await ferry(['clean', name, '--dry-run', '--min-age', '0']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`would remove\\s+image\\s+${alias}`));
    expect(text.stdout).toMatch(new RegExp(`would remove\\s+image\\s+${fresh}`));
    expect(text.stdout).toMatch(new RegExp(`kept\\s+image\\s+${used}`));
  });

  it("removes this repository's unused snapshots and the dead run's helper; keeps the rest", async () => {
    const r = await ferry(['--json', 'clean', name, '--min-age', '0']);
    expect(r.code, r.stderr).toBe(0);
    const j = schemaChecked(r.stdout) as unknown as CleanJson;
    expect(j).toMatchObject({ ok: true, dryRun: false, failed: [] });
    expect(Object.keys(byName(j.removed)).sort()).toEqual([alias, fresh, stray].sort());
    expect(Object.keys(byName(j.kept)).sort()).toEqual([live, shared, used].sort());
    // Only the names other than this repository's: nothing of anyone else was removed.
    expect(j.removed.filter((i) => i.kind === 'image').every((i) => i.name.startsWith(`${repo}:`))).toBe(true);
    // The fresh snapshot is gone for good; the alias only lost its tag (the image keeps its other
    // name); busybox, which containers run from, keeps its ferry/ name too.
    expect(exists('image', fresh)).toBe(false);
    expect(exists('image', freshId)).toBe(false);
    expect(exists('image', alias)).toBe(false);
    expect(inspect('image', keep).Id).toBe(aliasId);
    expect(inspect('image', shared).Id).toBe(busyboxId);
    expect(inspect('image', BUSYBOX).Id).toBe(busyboxId);
    // The stopped container's image stays, and the container still runs from it.
    expect(exists('image', used)).toBe(true);
    expect(docker(['start', '-a', user])).toBe('one');
    expect(exists('container', stray)).toBe(false);
    expect(exists('container', live)).toBe(true);
    // Again: nothing left to remove.
    const again = await ferry(['clean', name, '--min-age', '0']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/0 objects removed/);
  });
});
