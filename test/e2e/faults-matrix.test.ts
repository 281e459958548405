/**
 * The fault-injection matrix (issue 22): every way a run is stopped (SIGINT, SIGTERM, SIGHUP,
 * SIGKILL, a closed stderr, and for a bundle on stdout a closed stdout) at every step of every
 * operation. Each row stops ferry at an exact step: FERRY_FAULT=<point> makes the run announce
 * the point on stderr and wait there (src/util/fault.ts), and the stop is delivered then. After
 * each row:
 *
 * - the exit status is the documented one (128 + the signal's number; a closed pipe is SIGPIPE,
 *   141), and stderr names the interruption, never a later read's guess (damage, a host tar hint);
 * - the source container is as it was (running, not paused), or, with --stop-source and the
 *   move complete, stopped;
 * - no bundle that looks complete is left (no final name in the directory; what went to stdout
 *   does not verify);
 * - the target holds what it held before: no new container, volume or image; under
 *   --on-conflict replace the old container (same id) runs, with its data; or, stopped past the
 *   point of no return, the complete new service;
 * - nothing of ferry's is left: no helper container of that run, no snapshot image, no staging
 *   volume, no container set aside.
 *
 * After a SIGKILL nothing can be put back by the run itself: the next ferry run on each engine
 * does it (ops/steps/recover.ts), and the same checks apply after that run.
 *
 * A row is one line of ROWS: adding a point is adding it to an operation's `points`.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, BUSYBOX, ENGINE_A, ENGINE_B, ENGINE_KIND, ferry, ferryEnv, uid } from '../helpers/lab.js';
import type { FaultPoint } from '../../src/util/fault.js';

const run = promisify(execFile);
const dir = mkdtempSync(path.join(tmpdir(), 'ferry-matrix-'));
const stateDir = path.join(dir, 'state');
const tag = uid('fm');
/**
 * The bundles restored: the restore rows of one bundle run one after the other (they load its
 * one image, whose removal each checks), those of different bundles side by side.
 */
const SHARDS = 4;
const bases = Array.from({ length: SHARDS }, (_, k) => `${tag}-base${k}`);
const bundles: string[] = [];

type Stop = 'SIGINT' | 'SIGTERM' | 'SIGHUP' | 'SIGKILL' | 'close-stderr' | 'close-stdout';
type Op = 'backup' | 'backup-stdout' | 'restore' | 'restore-replace' | 'migrate' | 'migrate-stop' | 'migrate-replace';

const EXIT: Record<Exclude<Stop, 'SIGKILL'>, number> = {
  SIGINT: 130,
  SIGTERM: 143,
  SIGHUP: 129,
  'close-stderr': 141,
  'close-stdout': 141,
};
const CAUSE: Record<Exclude<Stop, 'SIGKILL' | 'close-stderr'>, string> = {
  SIGINT: 'interrupted by SIGINT',
  SIGTERM: 'interrupted by SIGTERM',
  SIGHUP: 'interrupted by SIGHUP',
  'close-stdout': 'interrupted by SIGPIPE (standard output was closed',
};

const STOPS: Stop[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGKILL', 'close-stderr'];
const BACKUP_POINTS: FaultPoint[] = ['quiesced', 'committed', 'volume-read', 'image-save', 'finish'];
const MIGRATE_POINTS: FaultPoint[] = [
  'quiesced',
  'committed',
  'volume-read',
  'volume-fill',
  'image-load',
  'create',
  'watch',
];

/**
 * Each operation: the points it passes, the stops tried there, and the points past its point of
 * no return (`done`): stopped there, the run finishes what it committed to, and the checks are
 * those of the complete result.
 */
const OPS: Record<Op, { points: FaultPoint[]; stops: Stop[]; done?: FaultPoint[] }> = {
  backup: { points: BACKUP_POINTS, stops: STOPS },
  'backup-stdout': { points: BACKUP_POINTS, stops: [...STOPS, 'close-stdout'] },
  restore: { points: ['volume-fill', 'image-load', 'create', 'watch'], stops: STOPS, done: ['watch'] },
  'restore-replace': {
    points: ['volume-fill', 'image-load', 'replace-aside', 'create', 'watch', 'replace-commit'],
    stops: STOPS,
    done: ['replace-commit'],
  },
  migrate: { points: MIGRATE_POINTS, stops: STOPS, done: ['watch'] },
  'migrate-stop': { points: MIGRATE_POINTS, stops: STOPS, done: ['watch'] },
  // the target has a service of that name, with data of its own, which the migration replaces
  'migrate-replace': {
    points: [...MIGRATE_POINTS.slice(0, -2), 'replace-aside', 'create', 'watch', 'replace-commit'],
    stops: STOPS,
    done: ['replace-commit'],
  },
};

const ROWS = (Object.keys(OPS) as Op[])
  .flatMap((op) =>
    OPS[op].points.flatMap((point) =>
      OPS[op].stops.map((stop) => ({ op, point, stop, done: !!OPS[op].done?.includes(point) })),
    ),
  )
  // migrate-replace replaces on engine B (20.10) whatever the source: its commit rows are the same
  // on every primary engine, so they run in the 20.10 run only; what the source engine changes
  // (capture, image, volumes) the migrate and migrate-stop rows cover on each engine kind.
  .filter((r) => r.op !== 'migrate-replace' || ENGINE_KIND === 'overlay2')
  .map((row, i) => ({ ...row, i }))
  // FERRY_MATRIX_ONLY=<regexp>: only the rows whose "op point stop" matches (to rerun a few).
  .filter((r) => new RegExp(process.env.FERRY_MATRIX_ONLY ?? '').test(`${r.op} ${r.point} ${r.stop}`));

/** docker, without blocking the event loop (rows run side by side). */
async function dk(args: string[], host = ENGINE_A, allowFail = false): Promise<string> {
  try {
    const r = await run('docker', ['-H', host, ...args], { maxBuffer: 16 << 20 });
    return r.stdout.trim();
  } catch (err) {
    if (allowFail) return '';
    throw new Error(`docker ${args.join(' ')} on ${host}: ${(err as { stderr?: string }).stderr ?? err}`);
  }
}

async function state(name: string, host = ENGINE_A): Promise<{ id: string; running: boolean; paused: boolean } | null> {
  const out = await dk(['inspect', '-f', '{{.Id}} {{.State.Running}} {{.State.Paused}}', name], host, true);
  if (!out) return null;
  const [id, running, paused] = out.split(' ');
  return { id: id!, running: running === 'true', paused: paused === 'true' };
}

const volumeExists = async (v: string, host = ENGINE_A) =>
  !!(await dk(['volume', 'inspect', '-f', '{{.Name}}', v], host, true));
/**
 * The marker file of volume `v`, '' when it cannot be read. A `docker run` that fails is tried
 * again: Docker 26 now and then fails one while other rows create and remove containers (seen
 * once in 175 rows), which says nothing of the volume. A marker that is not there still reads ''.
 */
async function marker(v: string, host = ENGINE_A): Promise<string> {
  for (let i = 0; ; i++) {
    const out = await dk(['run', '--rm', '-v', `${v}:/v:ro`, BUSYBOX, 'cat', '/v/marker'], host, true);
    if (out || i >= 2) return out;
    await new Promise((r) => setTimeout(r, 500));
  }
}
/**
 * Images whose reference starts with `prefix`. Docker 26 fails a listing that meets an image
 * another row is removing ("failed to calculate size of image"): asked again.
 */
async function images(prefix: string, host = ENGINE_A): Promise<string[]> {
  for (let i = 0; ; i++) {
    try {
      const out = await dk(['images', '--format', '{{.Repository}}:{{.Tag}}'], host);
      return out.split('\n').filter((r) => r.startsWith(prefix));
    } catch (err) {
      if (i >= 4) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
const names = async (kind: 'ps' | 'volume', needle: string, host = ENGINE_A) =>
  (await dk(kind === 'ps' ? ['ps', '-a', '--format', '{{.Names}}'] : ['volume', 'ls', '-q'], host))
    .split('\n')
    .filter((n) => n.includes(needle));
const helpersOf = async (pid: number, host: string) =>
  dk(['ps', '-a', '-q', '--filter', `label=io.ferry.owner=${hostname()}/${pid}`], host);

/**
 * A running busybox container with a volume of its own name holding `marker`; stopped in a
 * second (its shell ignores SIGTERM), as are the copies restored from its bundle.
 */
async function source(name: string, data: string, host = ENGINE_A): Promise<void> {
  await dk(
    [
      'run',
      '-d',
      '--stop-timeout',
      '1',
      '--name',
      name,
      '-v',
      `${name}:/v`,
      BUSYBOX,
      'sh',
      '-c',
      `echo ${data} > /v/marker; exec sleep 100000`,
    ],
    host,
  );
  const written = () => dk(['exec', name, 'cat', '/v/marker'], host, true);
  for (let i = 0; i < 50 && (await written()) !== data; i++) await new Promise((r) => setTimeout(r, 100));
}

async function remove(host: string, containers: string[], volumes: string[]): Promise<void> {
  for (const c of containers) await dk(['rm', '-f', '-v', c], host, true);
  for (const v of volumes) await dk(['volume', 'rm', '-f', v], host, true);
}

interface Stopped {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  pid: number;
  reached: boolean;
  stdout: Buffer;
}

/** Run ferry with FERRY_FAULT=point; once it says it is there, stop it the way `stop` says. */
function runAndStop(args: string[], point: FaultPoint, stop: Stop): Promise<Stopped> {
  const child = spawn(BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: ferryEnv({
      FERRY_FAULT: point,
      FERRY_STATE_DIR: stateDir,
      // a closed stdout is seen at the next write of the bundle: the run goes on after a moment
      ...(stop === 'close-stdout' ? { FERRY_FAULT_WAIT: '300' } : {}),
    }),
  });
  let stderr = '';
  let reached = false;
  const out: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => out.push(d));
  return new Promise((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (reached || !stderr.includes(`ferry: fault point ${point} `)) return;
      reached = true;
      if (stop === 'close-stderr') child.stderr.destroy();
      else if (stop === 'close-stdout') child.stdout.destroy();
      else child.kill(stop);
    });
    child.on('close', (code, signal) =>
      resolve({ code, signal, stderr, pid: child.pid!, reached, stdout: Buffer.concat(out) }),
    );
  });
}

/** After a SIGKILL: the next ferry run on `host` (any that reaches the engine) finishes the undo. */
async function nextRun(host: string): Promise<string> {
  const probe = `${tag}-probe`;
  const r = await ferry(
    ['-H', host, 'restore', bundles[0]!, '--dry-run', '--name', probe, '--map-volume', `${bases[0]}=${probe}`],
    { env: { FERRY_STATE_DIR: stateDir } },
  );
  expect(r.code, r.stderr).toBe(0);
  return r.stderr;
}

/** One row at a time per group that shares an object (the restore rows load one image). */
const chains = new Map<string, Promise<unknown>>();
function serial<T>(group: string, fn: () => Promise<T>): Promise<T> {
  const prev = chains.get(group) ?? Promise.resolve();
  const next = prev.catch(() => {}).then(fn);
  chains.set(group, next);
  return next;
}

beforeAll(async () => {
  mkdirSync(stateDir, { recursive: true });
  for (const base of bases) {
    await source(base, 'new');
    const out = path.join(dir, base);
    mkdirSync(out);
    const r = await ferry(['backup', base, '-o', out, '--compress', 'gzip'], { env: { FERRY_STATE_DIR: stateDir } });
    expect(r.code, r.stderr).toBe(0);
    bundles.push(path.join(out, readdirSync(out)[0]!));
  }
});

afterAll(async () => {
  await remove(ENGINE_A, bases, bases);
  for (const host of [ENGINE_A, ENGINE_B]) {
    const left = await images(`ferry/${tag}`, host);
    if (left.length) await dk(['rmi', '-f', ...left], host, true);
  }
  rmSync(dir, { recursive: true, force: true });
});

describe.concurrent('a run stopped at each step puts everything back', () => {
  it.each(ROWS)('$op stopped at $point by $stop', async ({ op, point, stop, done, i }) => {
    const name = `${tag}-${i}`;
    const base = bases[i % SHARDS]!;
    const bundle = bundles[i % SHARDS]!;
    const restoring = op === 'restore' || op === 'restore-replace';
    const body = async () => {
      if (op === 'restore-replace' || !restoring) await source(name, 'old');
      if (op === 'migrate-replace') await source(name, 'target', ENGINE_B);
      const before = await state(name);
      const beforeTarget = await state(name, ENGINE_B);
      const imagesBefore = await images(`ferry/${base}:`);
      const out = path.join(dir, name);
      mkdirSync(out);
      const args: Record<Op, string[]> = {
        backup: ['backup', name, '-o', out, '--compress', 'gzip'],
        'backup-stdout': ['backup', name, '-o', '-', '--compress', 'gzip'],
        restore: ['restore', bundle, '--name', name, '--map-volume', `${base}=${name}`],
        'restore-replace': [
          'restore',
          bundle,
          '--name',
          name,
          '--map-volume',
          `${base}=${name}`,
          '--on-conflict',
          'replace',
        ],
        migrate: ['migrate', name, '--to', ENGINE_B],
        'migrate-stop': ['migrate', name, '--to', ENGINE_B, '--stop-source', '--stop-timeout', '1'],
        'migrate-replace': ['migrate', name, '--to', ENGINE_B, '--on-conflict', 'replace'],
      };
      const r = await runAndStop(args[op], point, stop);
      const why = `${op} at ${point} by ${stop}:\n${r.stderr}`;
      try {
        expect(r.reached, why).toBe(true);
        let recovered = '';
        if (stop === 'SIGKILL') {
          expect(r.signal, why).toBe('SIGKILL');
          recovered = await nextRun(ENGINE_A);
          if (op.startsWith('migrate')) recovered += await nextRun(ENGINE_B);
        } else {
          expect(r.code, why).toBe(EXIT[stop]);
          if (stop !== 'close-stderr') expect(r.stderr, why).toContain(CAUSE[stop]);
          expect(r.stderr, why).not.toMatch(/damaged|not a complete bundle|FERRY_HOST_VOLUMES|at .*\.js:\d+/);
        }
        // nothing of that run's is left: helpers, snapshot images
        for (const host of [ENGINE_A, ENGINE_B])
          expect(await helpersOf(r.pid, host), `${why}\nhelpers on ${host}`).toBe('');
        expect(await images(`ferry/${name}:`), why).toEqual([]);

        if (op === 'backup' || op === 'backup-stdout') {
          expect(await state(name), why).toEqual(before);
          // no file that looks like a finished bundle (after a SIGKILL, only the hidden temporary)
          expect(
            readdirSync(out).filter((f) => !(stop === 'SIGKILL' && f.endsWith('.partial'))),
            why,
          ).toEqual([]);
          if (op === 'backup-stdout' && r.stdout.length) {
            const file = path.join(out, 'stdout.tar');
            writeFileSync(file, r.stdout);
            const v = await ferry(['verify', file]);
            expect(v.code, `${why}\nwhat went to stdout verifies:\n${v.stdout}${v.stderr}`).toBe(7);
          }
        } else if (op === 'restore') {
          if (done) {
            expect((await state(name))?.running, why).toBe(true);
            expect(await marker(name), why).toBe('new');
          } else {
            expect(await state(name), why).toBeNull();
            expect(await volumeExists(name), why).toBe(false);
            expect(await images(`ferry/${base}:`), why).toEqual(imagesBefore);
          }
        } else if (op === 'restore-replace' && done && stop === 'SIGKILL') {
          // Killed while committing (docs/commands.md, Exact replace): the next run finished the
          // commit: the new container runs on the real volume, with the new data, and nothing
          // of the replace is left (replace-rollforward.test.ts kills at every step of it).
          const now = await state(name);
          expect(now?.running, `${why}\n${recovered}`).toBe(true);
          expect(now?.id, why).not.toBe(before?.id);
          expect(await dk(['inspect', '-f', '{{range .Mounts}}{{.Name}}{{end}}', name]), why).toBe(name);
          expect(await marker(name), why).toBe('new');
          expect(await names('volume', `${name}-ferry-new-`), why).toEqual([]);
          expect(await names('ps', `${name}-ferry-old-`), why).toEqual([]);
          const journal = path.join(stateDir, 'replacing.json');
          const left = existsSync(journal) ? (JSON.parse(readFileSync(journal, 'utf8')) as { pid: number }[]) : [];
          expect(
            left.filter((x) => x.pid === r.pid),
            `${why}\n${recovered}`,
          ).toEqual([]);
        } else if (op === 'restore-replace') {
          const now = await state(name);
          if (done) {
            expect(now?.running, why).toBe(true);
            expect(await marker(name), why).toBe('new');
          } else {
            expect(now, why).toEqual(before); // the same container, running as it did
            expect(await marker(name), why).toBe('old');
          }
          expect(await names('volume', `${name}-ferry-new-`), why).toEqual([]);
          expect(await names('ps', `${name}-ferry-old-`), why).toEqual([]);
        } else {
          if (op === 'migrate-replace') {
            expect(await names('volume', `${name}-ferry-new-`, ENGINE_B), why).toEqual([]);
            expect(await names('ps', `${name}-ferry-old-`, ENGINE_B), why).toEqual([]);
          }
          const src = await state(name);
          if (done && op === 'migrate-stop') expect(src, why).toEqual({ ...before, running: false });
          else expect(src, why).toEqual(before);
          if (done) {
            expect((await state(name, ENGINE_B))?.running, why).toBe(true);
            expect(await marker(name, ENGINE_B), why).toBe('old');
            if (op === 'migrate-replace') expect((await state(name, ENGINE_B))?.id, why).not.toBe(beforeTarget?.id);
          } else if (op === 'migrate-replace') {
            // the target's own service (the same container) runs on, with its own data
            expect(await state(name, ENGINE_B), why).toEqual(beforeTarget);
            expect(await marker(name, ENGINE_B), why).toBe('target');
            expect(await images(`ferry/${name}:`, ENGINE_B), why).toEqual([]);
          } else {
            expect(await state(name, ENGINE_B), why).toBeNull();
            expect(await volumeExists(name, ENGINE_B), why).toBe(false);
            expect(await images(`ferry/${name}:`, ENGINE_B), why).toEqual([]);
          }
        }
      } finally {
        await remove(ENGINE_A, [name], [name, ...(await names('volume', `${name}-ferry-new-`))]);
        await remove(ENGINE_B, [name], [name, ...(await names('volume', `${name}-ferry-new-`, ENGINE_B))]);
        const left = await images(`ferry/${name}:`, ENGINE_B);
        if (left.length) await dk(['rmi', '-f', ...left], ENGINE_B, true);
      }
    };
    await (restoring ? serial(base, body) : body());
  });
});
