/**
 * Shared set-up for the op tests that run against FakeEngine: a source engine with one running
 * container ("app") on a user network, with one named volume holding a few files, and the
 * options and context the CLI would build.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type * as tar from 'tar-stream';
import { silentProgress, type Progress, type RunContext } from '../../src/context.js';
import { BundleReader } from '../../src/bundle/reader.js';
import type { Manifest, Trailer } from '../../src/bundle/manifest.js';
import { LocalTransport } from '../../src/store/local.js';
import { FakeEngine } from './engine-fake.js';
import { collect, tarEntries } from './tar.js';

export const APP_FILES = {
  'README.txt': 'hello from the volume\n',
  'db/records.txt': 'alpha\nbeta\ngamma\n',
  'db/index/keys.bin': 'k1 k2 k3',
};

/** A Docker 20.10 engine (`endpoint`) running "app" from shop/app:1, volume appdata at /data, network appnet. */
export async function sourceEngine(endpoint = 'tcp://source:2375', registry?: FakeEngine['registry']) {
  const fake = new FakeEngine({ endpoint, ...(registry ? { registry } : {}) });
  await fake.addImage('shop/app:1', [{ 'app/main.js': 'serve()\n' }, { 'etc/app.conf': 'port=80\n' }], {
    Cmd: ['node', '/app/main.js'],
    Env: ['PATH=/usr/bin'],
  });
  fake.addNetwork('appnet', '10.42.0.0/24');
  fake.addVolume('appdata', APP_FILES);
  fake.volumes.get('appdata')!.root = { mode: 0o700, uid: 999, gid: 999, mtime: new Date('2024-05-06T07:08:09Z') };
  fake.addContainer('app', {
    image: 'shop/app:1',
    volumes: { appdata: '/data' },
    networks: ['appnet'],
    env: ['MODE=prod'],
  });
  return fake;
}

/** A run context whose signal a test can abort. */
export function runContext(): { ctx: RunContext; abort: AbortController } {
  const abort = new AbortController();
  return { ctx: { progress: silentProgress, signal: abort.signal }, abort };
}

/** A Progress that records every byte count (label, bytes so far, total) and step. */
export function recordingProgress(): {
  progress: Progress;
  bytes: { label: string; n: number; total?: number }[];
  steps: string[];
} {
  const bytes: { label: string; n: number; total?: number }[] = [];
  const steps: string[] = [];
  return {
    progress: {
      ...silentProgress,
      step: (t) => steps.push(t),
      bytes: (label, n, total) => bytes.push({ label, n, total }),
    },
    bytes,
    steps,
  };
}

/** A fresh temp dir; the quiesce journal goes to one too (never the user's ~/.local/state). */
export async function tempDir(prefix = 'ferry-fake-'): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

export async function useTempStateDir(): Promise<() => Promise<void>> {
  const dir = await tempDir('ferry-state-');
  const before = process.env.FERRY_STATE_DIR;
  process.env.FERRY_STATE_DIR = dir;
  return async () => {
    if (before === undefined) delete process.env.FERRY_STATE_DIR;
    else process.env.FERRY_STATE_DIR = before;
    await rm(dir, { recursive: true, force: true });
  };
}

export async function listDir(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** Read a bundle with the real reader: manifest, each member's decoded bytes, the verified trailer. */
export async function readBundle(
  file: string,
): Promise<{ manifest: Manifest; members: Map<string, Buffer>; trailer: Trailer }> {
  const t = new LocalTransport(file);
  const src = await t.openBundle();
  const reader = await BundleReader.open(src.stream, src.location);
  const members = new Map<string, Buffer>();
  for await (const m of reader.members({ decode: true })) {
    members.set(m.plan.name, await collect(m.stream));
  }
  return { manifest: reader.manifest, members, trailer: reader.trailer };
}

/** The entries of a tar: name -> content (directories with an empty content), with their headers. */
export async function untar(buf: Buffer): Promise<Map<string, { header: tar.Header; data: Buffer }>> {
  return new Map((await tarEntries(buf)).map(({ data, ...header }) => [header.name, { header, data }]));
}
