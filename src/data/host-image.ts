/**
 * An image archive for `docker load` built from the engine host's layer store, without the
 * engine's save. `docker save` re-tars every layer of the image, the base ones included, however
 * few of them the target lacks: for a second migration that is the whole image read and tarred
 * by the source engine (and parsed by ferry) to send a small top layer (docs/performance.md, The
 * image from the layer store).
 *
 * Docker keeps, for each layer, its tar-split (`tar-split.json.gz`: the tar's headers and padding
 * as raw bytes, and for each file its name and size) next to the layer's files (the overlay2
 * `diff` directory). Docker's own save re-assembles a layer's exact tar from those two, and so
 * does this: the headers from the tar-split, the contents read with `cat` on the engine's host, in
 * the tar's order. Only the layers the target lacks are put in the archive, with the image's
 * config as stored (its sha256 is the image ID, checked) and a manifest naming every layer
 * (docker load opens a layer's file only when it lacks that layer).
 *
 * Each layer's sha256 is checked against its diff ID while it streams; a mismatch fails the
 * archive before its manifest is sent, so the target loads nothing, and the image goes through
 * the engine's save instead. Used only where ferry is root on the engine's host (as for volume
 * data: a unix socket here, or ssh://), the engine is Docker with the overlay2 driver and its own
 * image store, and FERRY_HOST_LAYERS is not 0.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import readline from 'node:readline';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-stream';
import type { Engine, ImageInspect } from '../engine/engine.js';
import { captureBytes, type HostProcess, type HostShell } from '../hostaccess/shell.js';
import { EngineError } from '../errors.js';
import { keepText } from '../util/keep-text.js';
import type { Progress } from '../context.js';
import type { HostAccess } from '../hostaccess/access.js';
import { HOST_LAYERS_ENV } from '../hostaccess/refusals.js';
import { refused, type Refused } from './paths.js';

/** One line of a tar-split: raw tar bytes (a segment), or a file whose content follows. */
export type TarSplitEntry = { segment: Buffer } | { file: Buffer; size: number };

/**
 * Parse one line of a tar-split (vbatts/tar-split storage.Entry as JSON: type 1 a file, with
 * name or name_raw and size; type 2 a segment, payload base64). A file name that could reach
 * outside the layer's directory is refused. Pure; unit-tested.
 */
export function parseTarSplitLine(line: string): TarSplitEntry | undefined {
  if (!line.trim()) return undefined;
  const e = JSON.parse(line) as {
    type?: number;
    name?: string;
    name_raw?: string;
    size?: number;
    payload?: string | null;
  };
  if (e.type === 2) return { segment: Buffer.from(e.payload ?? '', 'base64') };
  if (e.type !== 1) throw new Error(`tar-split entry of unknown type ${String(e.type)}`);
  const name = e.name_raw ? Buffer.from(e.name_raw, 'base64') : Buffer.from(e.name ?? '', 'utf8');
  const size = e.size ?? 0;
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`tar-split entry with size ${String(e.size)}`);
  const parts = name.toString('latin1').split('/');
  if (name.length === 0 || name[0] === 0x2f || parts.includes('..') || name.includes(0))
    throw new Error(`tar-split file name ${JSON.stringify(name.toString())} is not inside the layer`);
  return { file: name, size };
}

/** The manifest.json of a docker-archive holding one image. Pure; unit-tested. */
export function archiveManifest(configFile: string, ref: string, layerFiles: string[]): string {
  return JSON.stringify([{ Config: configFile, RepoTags: [ref], Layers: layerFiles }]);
}

/**
 * The layer store said something other than what the image needs: the engine's save is used
 * instead (before the first byte; after the target refused a migration's archive; or, in a
 * backup into a file, for the member written again from its start). Typed, with a hint, should
 * it ever reach the user.
 */
export class LayerStoreMismatch extends EngineError {
  constructor(message: string) {
    super(`the image layer store did not give the image: ${message}`, {
      code: 'LAYER_STORE',
      hint: `the engine's image store may be damaged (docker image inspect); run again with ${HOST_LAYERS_ENV}=0 to export images with the engine's save`,
    });
  }
}

async function* tarSplit(shell: HostShell, file: string): AsyncGenerator<TarSplitEntry> {
  const p = await shell.run(['cat', '--', file]);
  p.stdin.end();
  const stderr = keepText(p.stderr);
  const gunzip = createGunzip();
  const piping = pipeline(p.stdout, gunzip);
  piping.catch(() => {});
  const lines = readline.createInterface({ input: gunzip, crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      const e = parseTarSplitLine(line);
      if (e) yield e;
    }
    await piping;
    const code = await p.exit;
    if (code !== 0) throw new LayerStoreMismatch(`cat ${file}: ${stderr().trim() || `exit ${code}`}`);
  } catch (err) {
    if (err instanceof LayerStoreMismatch) throw err;
    throw Object.assign(new LayerStoreMismatch(`${file}: ${(err as Error).message}`), { cause: err });
  } finally {
    lines.close();
    p.kill();
  }
}

/** The layer's files, read in a row, ended `missing` bytes before the tar-split's sizes did. */
class ShortFiles extends Error {
  constructor(readonly missing: number) {
    super(`the files ended ${missing} bytes early`);
  }
}

/** Reads exactly n bytes at a time from a byte stream, in the chunks it comes in. */
class ExactReader {
  private it: AsyncIterator<Buffer>;
  private rest: Buffer | undefined;
  constructor(stream: Readable) {
    this.it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }
  async *take(n: number): AsyncGenerator<Buffer> {
    while (n > 0) {
      let b = this.rest;
      this.rest = undefined;
      if (!b) {
        const r = await this.it.next();
        if (r.done) throw new ShortFiles(n);
        b = r.value;
      }
      if (b.length > n) {
        this.rest = b.subarray(n);
        b = b.subarray(0, n);
      }
      n -= b.length;
      yield b;
    }
  }
  async atEnd(): Promise<boolean> {
    if (this.rest?.length) return false;
    return (await this.it.next()).done === true;
  }
}

/** A tar entry being written (a streamx Writable) or any Node writable. */
export type Sink = NodeJS.EventEmitter & { write(b: Buffer): boolean; end(): void };

/** Write b, waiting for room; a sink torn down meanwhile (the archive's reader went away) throws. */
export async function write(w: Sink, b: Buffer): Promise<void> {
  if ((w as { destroyed?: boolean }).destroyed) throw new Error('the image archive was closed');
  if (w.write(b)) return;
  await new Promise<void>((resolve, reject) => {
    const settle = (err?: Error) => {
      w.off('drain', onDrain);
      w.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onClose = () => settle(new Error('the image archive was closed'));
    w.on('drain', onDrain);
    w.on('close', onClose);
  });
}

interface StoredLayer {
  index: number;
  chain: string;
  diffId: string;
  /** The layer's files on the host (overlay2 diff directory) and its tar-split. */
  dir: string;
  split: string;
}

/** Stream one layer's exact tar (as `docker save` has it) into w; its sha256 must be diffId. */
async function writeLayer(shell: HostShell, layer: StoredLayer, w: Sink): Promise<void> {
  const cat: HostProcess = await shell.run(['sh', '-c', 'cd -- "$1" && exec xargs -0 -r cat --', 'sh', layer.dir]);
  const catErr = keepText(cat.stderr);
  // The names go in on their own (a read of the tar-split of its own), so that cat's output is
  // never waited on behind them.
  const feeding = (async () => {
    for await (const e of tarSplit(shell, layer.split))
      if ('file' in e && e.size > 0) {
        if (!cat.stdin.write(Buffer.concat([e.file, Buffer.from([0])]))) await once(cat.stdin, 'drain');
      }
    cat.stdin.end();
  })();
  feeding.catch(() => cat.kill());
  const hash = createHash('sha256');
  const contents = new ExactReader(cat.stdout);
  try {
    for await (const e of tarSplit(shell, layer.split)) {
      if ('segment' in e) {
        hash.update(e.segment);
        await write(w, e.segment);
      } else
        for await (const b of contents.take(e.size)) {
          hash.update(b);
          await write(w, b);
        }
    }
    await feeding;
    if (!(await contents.atEnd()))
      throw new LayerStoreMismatch(
        `the files of layer ${layer.diffId.slice(7, 19)} are longer than its tar-split says`,
      );
    const code = await cat.exit;
    if (code !== 0)
      throw new LayerStoreMismatch(
        `reading the files of layer ${layer.diffId.slice(7, 19)}: ${catErr().trim().slice(0, 300) || `exit ${code}`}`,
      );
  } catch (err) {
    if (!(err instanceof ShortFiles)) throw err;
    // A file that came out short says nothing of why; what cat said (a file missing, unreadable) does.
    const code = await Promise.race([
      cat.exit,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000).unref()),
    ]);
    const said = catErr().trim().slice(0, 300);
    throw new LayerStoreMismatch(
      `layer ${layer.diffId.slice(7, 19)} in ${layer.dir}: a file of the layer ended ${err.missing} bytes early (cat ${said ? `said: ${said}` : code === undefined ? 'still running' : `exit ${code}, nothing on stderr`})`,
    );
  } finally {
    cat.kill();
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== layer.diffId)
    throw new LayerStoreMismatch(
      `layer ${layer.diffId.slice(7, 19)} re-assembled from ${layer.dir} has the digest ${got.slice(7, 19)}`,
    );
}

/** The tar's length: the segments' bytes and the files' sizes. */
async function layerSize(shell: HostShell, split: string): Promise<number> {
  let n = 0;
  for await (const e of tarSplit(shell, split)) n += 'segment' in e ? e.segment.length : e.size;
  return n;
}

export interface HostImageArchive {
  stream: Readable;
  /** Why the archive failed, when it was the layer store that did not hold what it should. */
  mismatch(): LayerStoreMismatch | undefined;
  /** Where the layers were read, for messages. */
  where: string;
}

/**
 * A docker-archive of `img` (tagged `ref`) holding only the layers at `missing` (indexes into its
 * diff IDs), built from the layer store of `engine`'s host; refused, with why, where that cannot
 * be used (`access`: what the host offers, decided once per engine).
 */
export async function openHostImageArchive(
  engine: Engine,
  img: ImageInspect,
  ref: string,
  layersOf: { chains: string[]; missing: number[] },
  progress: Progress,
  access: HostAccess | Promise<HostAccess>,
): Promise<HostImageArchive | Refused> {
  const a = await access;
  if (!a.layers.use || !a.shell) return refused(a.layers.reason);
  const f = engine.facts;
  const shell = a.shell;
  const idHex = /^sha256:([0-9a-f]{64})$/.exec(img.Id)?.[1];
  const diffIds = img.RootFS?.Layers ?? [];
  if (!idHex || !diffIds.length) return refused('the image has no layers, or no sha256 ID');
  const store = `${f.rootDir}/image/overlay2`;
  // The config as the engine stores it: its sha256 is the image ID.
  const config = await captureBytes(shell, ['cat', '--', `${store}/imagedb/content/sha256/${idHex}`]).catch(
    () => undefined,
  );
  if (config?.code !== 0 || `sha256:${createHash('sha256').update(config.stdout).digest('hex')}` !== img.Id)
    return refused(`the image's config in ${store} is missing or is not the image`);
  const { chains, missing } = layersOf;
  const layers: StoredLayer[] = [];
  for (const i of missing) {
    const chain = chains[i]!.slice(7);
    const at = `${store}/layerdb/sha256/${chain}`;
    const r = await captureBytes(shell, [
      'sh',
      '-c',
      'cat -- "$1/diff" && echo && cat -- "$1/cache-id"',
      'sh',
      at,
    ]).catch(() => undefined);
    const [diff, cacheId] = r?.code === 0 ? r.stdout.toString('utf8').split('\n') : [];
    if (diff?.trim() !== diffIds[i] || !/^[0-9a-f]{64}$/.test(cacheId?.trim() ?? ''))
      return refused(`layer ${diffIds[i]!.slice(7, 19)} is not in the layer store as the image says`);
    layers.push({
      index: i,
      chain,
      diffId: diffIds[i]!,
      dir: `${f.rootDir}/overlay2/${cacheId!.trim()}/diff`,
      split: `${at}/tar-split.json.gz`,
    });
  }
  const sizes: number[] = [];
  try {
    for (const l of layers) sizes.push(await layerSize(shell, l.split));
  } catch (err) {
    if (err instanceof LayerStoreMismatch) return refused(err.message);
    throw err;
  }
  progress.info(
    `image ${ref}: ${layers.length} of ${diffIds.length} layers read from the layer store in ${f.rootDir} on ${shell.where}`,
  );

  const layerFile = (i: number) => `${chains[i]!.slice(7)}/layer.tar`;
  const pack = tar.pack();
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let failed: LayerStoreMismatch | undefined;
  // An entry's failure reaches its callback; tar-stream also emits it as 'error' on the entry when
  // the pack is torn down (the reader went away), which must not be an uncaught exception.
  const quiet = <T extends NodeJS.EventEmitter>(e: T): T => e.on('error', () => {});
  const entry = (name: string, size: number, cb: (err?: Error | null) => void) =>
    quiet(pack.entry({ name, size, mode: 0o644, mtime: new Date(0) }, cb) as unknown as Sink);
  (async () => {
    const sending = pipeline(pack, out);
    sending.catch(() => {});
    for (const [k, l] of layers.entries()) {
      let w!: Sink;
      const done = new Promise<void>(
        (resolve, reject) => (w = entry(layerFile(l.index), sizes[k]!, (err) => (err ? reject(err) : resolve()))),
      );
      done.catch(() => {}); // a layer that fails half-way tears the entry down: that failure is reported
      await writeLayer(shell, l, w);
      w.end();
      await done;
    }
    quiet(pack.entry({ name: `${idHex}.json`, mode: 0o644, mtime: new Date(0) }, config.stdout));
    quiet(
      pack.entry(
        { name: 'manifest.json', mode: 0o644, mtime: new Date(0) },
        archiveManifest(
          `${idHex}.json`,
          ref,
          diffIds.map((_, i) => layerFile(i)),
        ),
      ),
    );
    pack.finalize();
    await sending;
  })().catch((err) => {
    if (err instanceof LayerStoreMismatch) failed = err;
    pack.destroy();
    out.destroy(err as Error);
  });
  return { stream: out, mismatch: () => failed, where: shell.where };
}
