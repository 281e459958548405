/**
 * A real database: PostgreSQL written to continuously while it is backed up (paused snapshot),
 * restored after container and volume are gone, and counted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, docker, ENGINE_A, ferry, inspect, POSTGRES, uid, waitFor } from '../helpers/lab.js';

function psql(name: string, sql: string): string {
  return docker(['exec', name, 'psql', '-U', 'postgres', '-tAc', sql]);
}

function count(name: string): number {
  return Number(psql(name, 'select count(*) from t'));
}

describe('PostgreSQL under write load', () => {
  const name = uid('pg');
  const vol = `${name}-data`;
  const dir = mkdtempSync(path.join(tmpdir(), 'ferry-pg-'));

  beforeAll(async () => {
    docker([
      'run',
      '-d',
      '--name',
      name,
      '-e',
      'POSTGRES_DB_HINT=ferry',
      '-v',
      `${vol}:/var/lib/postgresql/data`,
      POSTGRES,
    ]);
    await waitFor(
      'postgres to accept connections',
      () => {
        psql(name, 'select 1');
        return true;
      },
      120_000,
    );
    psql(name, 'create table t (id serial primary key, v text not null)');
    psql(name, "insert into t (v) select 'row ' || g from generate_series(1, 5000) g");
  });

  afterAll(() => {
    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    rmSync(dir, { recursive: true, force: true });
  });

  it('restores a consistent database taken while rows were being written', async () => {
    // A writer inside the container inserts rows as fast as it can during the backup.
    docker([
      'exec',
      '-d',
      name,
      'sh',
      '-c',
      'while :; do psql -U postgres -qc "insert into t (v) values (\'live\')" >/dev/null 2>&1; done',
    ]);
    await waitFor('the writer to start', () => count(name) > 5010);
    const n1 = count(name);
    const volumesBefore = docker(['volume', 'ls', '-q']).split('\n').sort();
    const r = await ferry(['backup', name, '-o', path.join(dir, 'pg.tar')]);
    expect(r.code, r.stderr).toBe(0);
    // The helper that read the volume was made from this image, whose VOLUME line gave it an
    // anonymous volume of its own: gone with it, not left behind at every backup.
    expect(docker(['volume', 'ls', '-q']).split('\n').sort()).toEqual(volumesBefore);
    const n2 = count(name);
    expect(n2).toBeGreaterThan(n1); // writes went on around the backup
    expect(inspect('container', name).State.Running).toBe(true);

    cleanup(ENGINE_A, { containers: [name], volumes: [vol] });
    const rr = await ferry(['restore', path.join(dir, 'pg.tar')]);
    expect(rr.code, rr.stderr).toBe(0);
    // The same volumes as before: the data volume back, nothing left by the helpers that filled it.
    expect(docker(['volume', 'ls', '-q']).split('\n').sort()).toEqual(volumesBefore);
    await waitFor(
      'restored postgres to accept connections',
      () => {
        psql(name, 'select 1');
        return true;
      },
      120_000,
    );
    const n = count(name);
    expect(n).toBeGreaterThanOrEqual(n1);
    expect(n).toBeLessThanOrEqual(n2);
    // every row is whole and ids are unique: the table is consistent
    expect(Number(psql(name, 'select count(distinct id) from t'))).toBe(n);
    expect(Number(psql(name, "select count(*) from t where v like 'row %'"))).toBe(5000);
    // the data directory kept its owner and 0700 mode (PostgreSQL refuses anything else)
    const st = docker(['exec', name, 'stat', '-c', '%U %a', '/var/lib/postgresql/data']);
    expect(st).toBe('postgres 700');
  });
});
