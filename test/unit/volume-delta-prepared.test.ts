/**
 * prepareVolumeDelta (data/volumes.ts): the target's side of a pre-copy's frozen pass opened before
 * the delta is known (the helper, the removal's and the extraction's shells on the host, vetted
 * and waiting), so that a cutover's downtime holds only the listing and the data. Checked on this
 * machine's disk (root): nothing is changed before apply(); apply() removes, then extracts; what
 * was never used changes nothing; close() removes the helper in every case.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { quirksFor } from '../../src/engine/quirks.js';
import type { Engine } from '../../src/engine/engine.js';
import { createRunIdentity } from '../../src/engine/run.js';
import { localShell, type HostShell } from '../../src/hostaccess/shell.js';
import { hostAccess } from '../../src/hostaccess/access.js';
import { prepareVolumeDelta } from '../../src/data/volumes.js';
import { isRefused } from '../../src/data/paths.js';

/** What the engine reports for a container's mount point of dir: Go FileMode bits, RFC 3339 nanoseconds. */
function engineStat(dir: string) {
  const st = fs.statSync(dir, { bigint: true });
  const ns = st.mtimeNs % 1_000_000_000n;
  const iso = new Date(Number(st.mtimeNs / 1_000_000n)).toISOString().replace(/\.\d{3}Z$/, '');
  return { mode: 2 ** 31 + Number(st.mode & 0o777n), mtime: `${iso}.${ns.toString().padStart(9, '0')}Z` };
}

/** An engine whose volume lives in `dir` on this host, counting the shells run there and its helpers. */
function engineOn(dir: string) {
  const runs: string[][] = [];
  const shell: HostShell = {
    where: 'this host',
    run(argv) {
      runs.push(argv);
      return localShell.run(argv);
    },
  };
  const holders = new Set<string>();
  const engine = {
    facts: { podman: false, remapped: false, endpoint: 'unix:///test.sock' },
    quirks: quirksFor({ podman: false }),
    host: shell,
    run: createRunIdentity(),
    inspectVolume: async () => ({ Driver: 'local', Options: null, Mountpoint: dir }),
    createContainer: async (name: string) => (holders.add(name), name),
    statPath: async () => engineStat(dir),
    inspectContainer: async () => ({ Mounts: [] }),
    removeContainer: async (id: string) => void holders.delete(id),
  } as unknown as Engine;
  return { engine, runs, holders, access: hostAccess(engine as never, {}) };
}

/** The shells that did the work (not hostAccess's tar --version). */
const work = (runs: string[][]) => runs.filter((r) => !/tar --version/.test(r.join(' ')));

const tree = (dir: string): string[] =>
  fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .map((e) => `${path.relative(dir, path.join(e.parentPath, e.name))}${e.isDirectory() ? '/' : ''}`)
    .sort();

describe.skipIf(process.getuid?.() !== 0)('prepareVolumeDelta: opened before the delta is known (root)', () => {
  let root: string;
  let vol: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-prepared-'));
    vol = path.join(root, 'vol');
    fs.mkdirSync(path.join(vol, 'gone', 'deep'), { recursive: true });
    fs.writeFileSync(path.join(vol, 'gone', 'deep', 'f'), 'old\n');
    fs.mkdirSync(path.join(vol, 'became-file'));
    fs.writeFileSync(path.join(vol, 'became-file', 'x'), 'dir content\n');
    fs.writeFileSync(path.join(vol, 'kept'), 'kept\n');
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('changes nothing until applied; then removes first and extracts over what is there', async () => {
    const { engine, runs, holders, access } = engineOn(vol);
    const before = tree(vol);
    const ready = await prepareVolumeDelta(engine, 'holder:1', 'data', access);
    if (isRefused(ready)) throw new Error(ready.refused);
    // Both shells are open (and the helper made) before anything is known of the delta.
    expect(work(runs)).toHaveLength(2);
    expect(holders.size).toBe(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(tree(vol)).toEqual(before);

    // The delta: a directory that is a file now (removed first, or tar could not put the file
    // there), a directory that went away, a new file.
    const src = path.join(root, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'became-file'), 'a file now\n');
    fs.writeFileSync(path.join(src, 'new'), 'new\n');
    const tar = execFileSync('tar', ['-C', src, '-cf', '-', './became-file', './new']);
    const w = await ready.apply(['./became-file', './gone'], Readable.from([tar]));
    expect(w).toEqual({});
    await ready.close();
    expect(tree(vol)).toEqual(['became-file', 'kept', 'new']);
    expect(fs.readFileSync(path.join(vol, 'became-file'), 'utf8')).toBe('a file now\n');
    expect(work(runs)).toHaveLength(2); // nothing more was run for it
    expect(holders.size).toBe(0);
    await expect(ready.apply([], undefined)).rejects.toThrow(/once/);
  });

  it('closed without being applied (a failure before the freeze, or nothing changed): nothing is touched', async () => {
    const { engine, holders, access } = engineOn(vol);
    const before = tree(vol);
    const ready = await prepareVolumeDelta(engine, 'holder:1', 'data', access);
    if (isRefused(ready)) throw new Error(ready.refused);
    await ready.close();
    expect(holders.size).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(tree(vol)).toEqual(before);
  });

  it('applied with only removals: the extraction shell is ended unused, the rest kept', async () => {
    const { engine, holders, access } = engineOn(vol);
    const ready = await prepareVolumeDelta(engine, 'holder:1', 'data', access);
    if (isRefused(ready)) throw new Error(ready.refused);
    expect(await ready.apply(['./gone'], undefined)).toEqual({});
    await ready.close();
    expect(tree(vol)).toEqual(['became-file/', 'became-file/x', 'kept']);
    expect(holders.size).toBe(0);
  });
});
