import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { quirksFor } from '../../src/engine/quirks.js';
import type { Engine } from '../../src/engine/engine.js';
import { localShell } from '../../src/hostaccess/shell.js';
import { EngineError, EXIT } from '../../src/errors.js';
import {
  archiveManifest,
  openHostImageArchive,
  type HostImageArchive,
  parseTarSplitLine,
} from '../../src/data/host-image.js';
import { chainIds } from '../../src/data/ship.js';
import { hostAccess, type HostEnv } from '../../src/hostaccess/access.js';
import { HOST_LAYERS_ENV } from '../../src/hostaccess/refusals.js';
import { tarFiles } from '../helpers/tar.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const quiet = { step() {}, info() {}, warn() {}, bytes() {} } as never;

describe('parseTarSplitLine: one line of a layer tar-split', () => {
  it('a segment is raw tar bytes; a file has a name and a size', () => {
    expect(parseTarSplitLine('{"type":2,"payload":"AAEC","position":0}')).toEqual({ segment: Buffer.from([0, 1, 2]) });
    expect(parseTarSplitLine('{"type":2,"payload":"","position":9}')).toEqual({ segment: Buffer.alloc(0) });
    expect(
      parseTarSplitLine('{"type":1,"name":"./etc/issue","size":26,"payload":"rl0jdaq2B7I=","position":1}'),
    ).toEqual({ file: Buffer.from('./etc/issue'), size: 26 });
    expect(parseTarSplitLine('{"type":1,"name":"./","payload":null,"position":1}')).toEqual({
      file: Buffer.from('./'),
      size: 0,
    });
    expect(parseTarSplitLine('   ')).toBeUndefined();
  });
  it('a name that is not UTF-8 comes as name_raw', () => {
    const raw = Buffer.from([0x66, 0xe9, 0x2e, 0x74]); // "fé.t" in Latin-1
    expect(parseTarSplitLine(JSON.stringify({ type: 1, name_raw: raw.toString('base64'), size: 3 }))).toEqual({
      file: raw,
      size: 3,
    });
  });
  it('refuses names that could reach outside the layer, odd sizes and unknown types', () => {
    expect(() => parseTarSplitLine('{"type":1,"name":"../../etc/shadow","size":1}')).toThrow(/not inside the layer/);
    expect(() => parseTarSplitLine('{"type":1,"name":"a/../../b","size":1}')).toThrow(/not inside the layer/);
    expect(() => parseTarSplitLine('{"type":1,"name":"/etc/shadow","size":1}')).toThrow(/not inside the layer/);
    expect(() => parseTarSplitLine('{"type":1,"name":"","size":1}')).toThrow(/not inside the layer/);
    expect(() => parseTarSplitLine('{"type":1,"name":"a","size":-1}')).toThrow(/size/);
    expect(() => parseTarSplitLine('{"type":3}')).toThrow(/unknown type/);
    expect(() => parseTarSplitLine('{not json')).toThrow();
  });
});

describe('archiveManifest', () => {
  it('one image: its config, its tag, every layer in order', () => {
    expect(JSON.parse(archiveManifest('abc.json', 'ferry/web:1', ['a/layer.tar', 'b/layer.tar']))).toEqual([
      { Config: 'abc.json', RepoTags: ['ferry/web:1'], Layers: ['a/layer.tar', 'b/layer.tar'] },
    ]);
  });
});

/** A tar-split of a ustar archive of plain files and directories, as Docker stores it. */
function tarSplitOf(archive: Buffer): Buffer {
  const lines: string[] = [];
  let pos = 0;
  let seg: Buffer[] = [];
  const flush = () => {
    lines.push(JSON.stringify({ type: 2, payload: Buffer.concat(seg).toString('base64'), position: lines.length }));
    seg = [];
  };
  for (;;) {
    const h = archive.subarray(pos, pos + 512);
    if (h.length < 512 || h.every((b) => b === 0)) break;
    const name = h.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(h.subarray(124, 136).toString('ascii').replace(/\0.*$/s, '').trim() || '0', 8);
    seg.push(h);
    flush();
    lines.push(JSON.stringify({ type: 1, name, size, payload: null, position: lines.length }));
    pos += 512 + size;
    const pad = (512 - (size % 512)) % 512;
    seg.push(archive.subarray(pos, pos + pad));
    pos += pad;
  }
  seg.push(archive.subarray(pos));
  flush();
  return gzipSync(lines.join('\n') + '\n');
}

/** A fake engine root on this machine: an image of two layers in the overlay2 layout. */
function makeStore(root: string, toolBytes = 700) {
  const layers: { diffId: string; dir: string; archive: Buffer }[] = [];
  for (const [n, files] of [
    ['base', { 'etc/os-release': 'NAME=test\n', 'bin/tool': 'x'.repeat(toolBytes) }],
    ['top', { 'etc/issue': 'changed in the writable layer\n', empty: '' }],
  ] as const) {
    const cache = createHash('sha256').update(n).digest('hex');
    const dir = path.join(root, 'overlay2', cache, 'diff');
    for (const [f, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
      fs.writeFileSync(path.join(dir, f), text);
    }
    const archive = execFileSync(
      'tar',
      ['--format=ustar', '--sort=name', '--numeric-owner', '-C', dir, '-cf', '-', '.'],
      { maxBuffer: 64 << 20 },
    );
    layers.push({ diffId: sha(archive), dir, archive });
  }
  const diffIds = layers.map((l) => l.diffId);
  const chains = chainIds(diffIds);
  for (const [i, l] of layers.entries()) {
    const at = path.join(root, 'image', 'overlay2', 'layerdb', 'sha256', chains[i]!.slice(7));
    fs.mkdirSync(at, { recursive: true });
    fs.writeFileSync(path.join(at, 'diff'), l.diffId);
    fs.writeFileSync(path.join(at, 'cache-id'), path.basename(path.dirname(l.dir)));
    fs.writeFileSync(path.join(at, 'tar-split.json.gz'), tarSplitOf(l.archive));
  }
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } }),
  );
  const id = sha(config);
  const cdir = path.join(root, 'image', 'overlay2', 'imagedb', 'content', 'sha256');
  fs.mkdirSync(cdir, { recursive: true });
  fs.writeFileSync(path.join(cdir, id.slice(7)), config);
  const engine = {
    facts: { podman: false, remapped: false, containerdStore: false, storageDriver: 'overlay2', rootDir: root },
    quirks: quirksFor({ podman: false }),
    host: localShell,
  } as unknown as Engine;
  const img = { Id: id, RootFS: { Type: 'layers', Layers: diffIds } } as never;
  return { engine, img, layers, chains, config, id };
}

/** openHostImageArchive as a run calls it: what the engine's host offers, with these switches. */
async function openFromStore(
  engine: Engine,
  img: Parameters<typeof openHostImageArchive>[1],
  ref: string,
  layersOf: Parameters<typeof openHostImageArchive>[3],
  progress: Parameters<typeof openHostImageArchive>[4],
  env: HostEnv = {},
): Promise<HostImageArchive> {
  return (await openHostImageArchive(
    engine,
    img,
    ref,
    layersOf,
    progress,
    hostAccess(engine, env),
  )) as HostImageArchive;
}

describe.skipIf(process.getuid?.() !== 0)('openHostImageArchive: an image archive from the layer store (root)', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-layers-'));
  });
  afterEach(() => {
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('holds the missing layers byte for byte as the engine stored them, the config, and a manifest of every layer', async () => {
    const s = makeStore(root);
    const a = await openFromStore(s.engine, s.img, 'ferry/web:1', { chains: s.chains, missing: [1] }, quiet);
    expect(a).toHaveProperty('stream');
    const got = await tarFiles(a!.stream);
    const top = `${s.chains[1]!.slice(7)}/layer.tar`;
    expect([...got.keys()]).toEqual([top, `${s.id.slice(7)}.json`, 'manifest.json']);
    expect(got.get(top)!.equals(s.layers[1]!.archive)).toBe(true);
    expect(got.get(`${s.id.slice(7)}.json`)!.equals(s.config)).toBe(true);
    expect(JSON.parse(got.get('manifest.json')!.toString())).toEqual([
      {
        Config: `${s.id.slice(7)}.json`,
        RepoTags: ['ferry/web:1'],
        Layers: s.chains.map((c) => `${c.slice(7)}/layer.tar`),
      },
    ]);
    expect(a!.mismatch()).toBeUndefined();
  });

  it('every layer when the target has none', async () => {
    const s = makeStore(root);
    const a = await openFromStore(s.engine, s.img, 'ferry/web:1', { chains: s.chains, missing: [0, 1] }, quiet);
    const got = await tarFiles(a!.stream);
    for (const [i, l] of s.layers.entries())
      expect(got.get(`${s.chains[i]!.slice(7)}/layer.tar`)!.equals(l.archive)).toBe(true);
  });

  it('a file that is not what the layer holds (same size): the archive fails before its manifest, as a mismatch', async () => {
    const s = makeStore(root);
    fs.writeFileSync(path.join(s.layers[1]!.dir, 'etc/issue'), 'CHANGED in the writable layer\n');
    const a = await openFromStore(s.engine, s.img, 'ferry/web:1', { chains: s.chains, missing: [1] }, quiet);
    const seen: string[] = [];
    const ex = tar.extract();
    const err = await new Promise<Error>((resolve) => {
      a!.stream.on('error', resolve);
      ex.on('entry', (h, st, next) => {
        seen.push(h.name);
        st.resume();
        st.on('end', next);
      });
      a!.stream.pipe(ex);
    });
    expect(err.message).toMatch(/digest/);
    expect(a!.mismatch()).toBe(err);
    expect(seen).not.toContain('manifest.json');
    // Typed, should it reach the user: the engine's exit code, and the way out.
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).exitCode).toBe(EXIT.ENGINE);
    expect((err as EngineError).hint).toMatch(/FERRY_HOST_LAYERS=0/);
  });

  it('a file shorter than its tar-split says: a mismatch', async () => {
    const s = makeStore(root);
    fs.writeFileSync(path.join(s.layers[0]!.dir, 'bin/tool'), 'short');
    const a = await openFromStore(s.engine, s.img, 'ferry/web:1', { chains: s.chains, missing: [0, 1] }, quiet);
    await expect(tarFiles(a!.stream)).rejects.toThrow();
    expect(a!.mismatch()).toBeDefined();
  });

  it('a reader that goes away mid-layer tears the archive down: no uncaught error, not taken for a mismatch', async () => {
    const s = makeStore(root, 16 << 20);
    const a = await openFromStore(s.engine, s.img, 'ferry/web:1', { chains: s.chains, missing: [0, 1] }, quiet);
    const first = await new Promise<Buffer>((resolve) => a!.stream.once('data', resolve));
    expect(first.length).toBeGreaterThan(0);
    a!.stream.destroy(new Error('the ssh connection dropped'));
    // Time for the pack, its entry and the host cat to be torn down; an 'error' nobody listens
    // for would be an uncaught exception here and fail the run.
    await new Promise((r) => setTimeout(r, 500));
    expect(a!.stream.destroyed).toBe(true);
    expect(a!.mismatch()).toBeUndefined();
  });

  it('not used: a config that is not the image, a layer whose diff is not the image`s, another driver, FERRY_HOST_LAYERS=0', async () => {
    const s = makeStore(root);
    const args = ['ferry/web:1', { chains: s.chains, missing: [1] }, quiet] as const;
    expect(await openFromStore(s.engine, { ...(s.img as object), Id: sha('other') } as never, ...args)).toEqual({
      refused: expect.stringMatching(/config .* is missing or is not the image/),
    });
    const other = { ...(s.engine as object), facts: { ...s.engine.facts, storageDriver: 'vfs' } } as Engine;
    expect(await openFromStore(other, s.img, ...args)).toEqual({
      refused: expect.stringMatching(/not Docker's own overlay2 layer store \(storage driver vfs\)/),
    });
    const podman = {
      ...(s.engine as object),
      facts: { ...s.engine.facts, podman: true },
      quirks: quirksFor({ podman: true, containerdStore: false }),
    } as Engine;
    expect(await openFromStore(podman, s.img, ...args)).toEqual({
      refused: expect.stringMatching(/not Docker's own overlay2 layer store/),
    });
    const tcp = { ...(s.engine as object), host: undefined } as Engine;
    expect(await openFromStore(tcp, s.img, ...args)).toEqual({
      refused: 'no way onto the engine host (a TCP engine)',
    });
    expect(await openFromStore(s.engine, s.img, ...args, { [HOST_LAYERS_ENV]: '0' })).toEqual({
      refused: 'FERRY_HOST_LAYERS=0',
    });
    fs.writeFileSync(
      path.join(root, 'image', 'overlay2', 'layerdb', 'sha256', s.chains[1]!.slice(7), 'diff'),
      sha('another layer'),
    );
    expect(await openFromStore(s.engine, s.img, ...args)).toEqual({
      refused: expect.stringMatching(/^layer [0-9a-f]{12} is not in the layer store as the image says$/),
    });
  });
});
