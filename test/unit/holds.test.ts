/** One ferry run at a time per container (src/util/state.ts ContainerHolds). */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ContainerHolds } from '../../src/util/state.js';

let dir = '';
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'ferry-holds-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const web = { engine: 'unix:///var/run/docker.sock', containerId: 'abc123', name: 'web' };

describe('ContainerHolds', () => {
  it('a second take finds the first run holding it, until that run releases it', () => {
    const holds = new ContainerHolds(dir);
    expect(holds.take(web)).toBeUndefined();
    expect(holds.take(web)).toMatchObject({ name: 'web', pid: process.pid, host: hostname() });
    // another container, or the same id on another engine, is free
    expect(holds.take({ ...web, containerId: 'def456' })).toBeUndefined();
    expect(holds.take({ ...web, engine: 'unix:///var/run/docker-b.sock' })).toBeUndefined();
    holds.release(web.engine, web.containerId);
    expect(holds.take(web)).toBeUndefined();
  });

  it("takes over a hold whose run is gone, and never releases another run's", () => {
    const holds = new ContainerHolds(dir);
    expect(holds.take(web)).toBeUndefined();
    const [file] = readdirSync(dir);
    const dead = { ...web, pid: 4_194_305, host: hostname(), at: '2026-12-07T00:00:00Z' };
    writeFileSync(path.join(dir, file!), JSON.stringify(dead));
    expect(holds.take(web)).toBeUndefined(); // taken over
    const alive = { ...web, pid: 1, host: hostname(), at: '2026-12-07T00:00:00Z' }; // pid 1 always runs
    writeFileSync(path.join(dir, file!), JSON.stringify(alive));
    holds.release(web.engine, web.containerId); // not this run's: stays
    expect(holds.take(web)).toMatchObject({ pid: 1 });
  });

  it('a state directory that cannot be made leaves the run unheld, not failed', () => {
    const blocker = path.join(dir, 'not-a-dir');
    writeFileSync(blocker, 'x');
    expect(new ContainerHolds(path.join(blocker, 'holds')).take(web)).toBeUndefined();
  });
});
