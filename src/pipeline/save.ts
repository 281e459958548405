/**
 * Stage 2, save: the committed image as a docker-archive stream.
 *
 * Where ferry can read the engine host's layer store (root there, overlay2, Docker's own image
 * store: host-image.ts), the archive is built from it, every layer's digest checked as it streams;
 * otherwise it is the engine's save. Both are archives `docker load` takes (manifest.json, the
 * image config, one layer.tar per layer, each byte for byte the layer whose diff ID the config
 * names). The engine's save of a 421 MB image costs the engine ~4 CPU seconds and, on Docker
 * 20.10, a staged copy on its disk before the first byte; the layer store's files cost a `cat`.
 * A layer that does not re-assemble to its digest fails the stream with LayerStoreMismatch (exit
 * 4, naming FERRY_HOST_LAYERS=0).
 */
import type { Readable } from 'node:stream';
import type { Engine } from '../engine/engine.js';
import type { Progress } from './context.js';
import { openHostImageArchive } from './host-image.js';
import { chainIds } from './ship.js';

export async function saveImage(engine: Engine, ref: string, progress: Progress): Promise<Readable> {
  const img = await engine.inspectImage(ref);
  const diffIds = (img.RootFS?.Layers as string[] | undefined) ?? [];
  const fromHost = await openHostImageArchive(engine, img, ref, { chains: chainIds(diffIds), missing: diffIds.map((_, i) => i) }, progress);
  return fromHost?.stream ?? engine.saveImages([ref]);
}
