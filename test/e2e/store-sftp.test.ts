/**
 * The SFTP store (ssh://host/dir) passes the store conformance suite, against the lab's sshd
 * (which runs on this machine: the "remote" directory is visible here too).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SshPool } from '../../src/ssh/client.js';
import { openBundleAt, openStore } from '../../src/store/registry.js';
import { SftpStore } from '../../src/store/sftp.js';
import { describeStoreConformance, readAll, writeBundle } from '../unit/store-conformance.js';
import { plantDeadLock } from '../unit/store-fixtures.js';
import { sshHome } from '../helpers/lab.js';

const root = mkdtempSync(path.join(tmpdir(), 'ferry-store-sftp-'));
const { home } = sshHome(root);
const SECRET = 'hunter2-not-used';

afterAll(() => rmSync(root, { recursive: true, force: true }));

async function sftpFixture() {
  const parent = await fs.mkdtemp(path.join(root, 's-'));
  const dir = path.join(parent, 'store'); // not there yet: the first create() makes it
  const pool = new SshPool({ home, env: { ...process.env, HOME: home } });
  return {
    dir,
    pool,
    // A password in the URL is never used (keys are), and never shown.
    store: openStore(`ssh://root:${SECRET}@newhost${dir}`, { ssh: () => pool }),
    secret: SECRET,
    residue: () => fs.readdir(dir),
    plantStaleLock: () => plantDeadLock(dir),
    cleanup: async () => {
      await pool.closeAll();
      await fs.rm(parent, { recursive: true, force: true });
    },
  };
}

describeStoreConformance('sftp', sftpFixture, {
  capabilities: {
    seekable: true,
    rangeReads: true,
    rereadable: true,
    rewindable: false,
    lockable: true,
    listable: true,
    atomicCommit: true,
    durableCommit: false,
  },
});

describe('sftp store', () => {
  it('the registry opens ssh:// as an SFTP store; a bundle URL splits into its directory and name', async () => {
    const f = await sftpFixture();
    try {
      expect(f.store).toBeInstanceOf(SftpStore);
      expect(f.store.describe()).toBe(`ssh://root@newhost${f.dir}`);
      await writeBundle(await f.store.create('a.tar'), Buffer.from('bundle bytes'));
      const at = openBundleAt(`ssh://newhost${f.dir}/a.tar`, { ssh: () => f.pool });
      expect(at.name).toBe('a.tar');
      expect(at.store.describe()).toBe(`ssh://newhost${f.dir}`);
      expect((await readAll((await at.store.open(at.name)).stream)).toString()).toBe('bundle bytes');
      expect((await fs.stat(path.join(f.dir, 'a.tar'))).mode & 0o777).toBe(0o600);
    } finally {
      await f.cleanup();
    }
  });

  it('ssh:// without a directory, or without an SSH session, is a usage error', () => {
    expect(() => openStore('ssh://newhost/', {})).toThrow(/names no directory or file/);
    expect(() => openStore('ssh://newhost/srv', {})).toThrow(/ssh stores need an SSH session/);
  });
});
