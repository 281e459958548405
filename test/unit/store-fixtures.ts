/** Fixtures of the local store for the conformance tests (not a test file itself). */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openStore } from '../../src/store/registry.js';
import type { StoreFixture } from './store-conformance.js';

/** Write a lock of a run that died (a pid that is gone, on this host) into `dir`. */
export async function plantDeadLock(dir: string): Promise<void> {
  const dead = spawnSync('true').pid!;
  const info = { pid: dead, hostname: os.hostname(), token: 'dead', since: new Date(0).toISOString() };
  await fs.writeFile(path.join(dir, '.ferry.lock'), JSON.stringify(info) + '\n');
}

export async function localFixture(): Promise<StoreFixture & { dir: string }> {
  const parent = await fs.mkdtemp(path.join(process.env.FERRY_TEST_DIRECT_DIR ?? os.tmpdir(), 'ferry-store-'));
  const dir = path.join(parent, 'store'); // not there yet: the first create() makes it
  return {
    dir,
    store: openStore(dir),
    residue: () => fs.readdir(dir),
    plantStaleLock: () => plantDeadLock(dir),
    cleanup: () => fs.rm(parent, { recursive: true, force: true }),
  };
}

export const LOCAL_CAPABILITIES = {
  seekable: true,
  rangeReads: true,
  rereadable: true,
  rewindable: true,
  lockable: true,
  listable: true,
  atomicCommit: true,
  durableCommit: true,
};
