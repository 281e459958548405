import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { FOREIGN_STALE_MS, isStale } from '../../src/store/lock.js';

describe('isStale', () => {
  const now = Date.parse('2026-12-02T03:00:00Z');
  const info = (pid: number, hostname: string) => ({ pid, hostname, token: 't', since: '2026-12-02T02:00:00Z' });

  it('a lock of this host: stale when its process is gone, whatever its age', () => {
    expect(isStale({ info: info(process.pid, os.hostname()), mtimeMs: now - 10 * FOREIGN_STALE_MS }, now)).toBe(false);
    expect(isStale({ info: info(spawnSync('true').pid!, os.hostname()), mtimeMs: now }, now)).toBe(true);
  });

  it('a lock of another host: stale only once nobody has touched it for FOREIGN_STALE_MS', () => {
    expect(isStale({ info: info(1, 'other-host'), mtimeMs: now - 60_000 }, now)).toBe(false);
    expect(isStale({ info: info(1, 'other-host'), mtimeMs: now - FOREIGN_STALE_MS - 1 }, now)).toBe(true);
  });

  it('an unreadable lock: stale after a few seconds (its writer died between creating and writing it)', () => {
    expect(isStale({ mtimeMs: now - 1000 }, now)).toBe(false);
    expect(isStale({ mtimeMs: now - 60_000 }, now)).toBe(true);
  });
});
