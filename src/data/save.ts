/**
 * Stage 2, save: the committed image as a docker-archive stream (what `docker save` gives and
 * `docker load` takes: manifest.json, the image config, one layer.tar per layer, each byte for
 * byte the layer whose diff ID the config names; from the containerd image store, its OCI layout).
 *
 * Where ferry can read the engine host's layer store (root there, overlay2, Docker's own image
 * store: host-image.ts) and the caller can start the archive over should it fail half-way
 * (`rewritable`: a bundle in a local file), the archive is built from the layer store, every
 * layer's digest checked as it streams; on the containerd image store, from its content store
 * (content-image.ts), every blob checked likewise; otherwise it is the engine's save. The engine's save of
 * an image costs the engine CPU for re-tarring every layer and, on Docker 20.10, a staged copy on
 * its disk before the first byte; the layer store's files cost a `cat` (docs/performance.md, The
 * backup's image from the layer store).
 *
 * Whatever the path, the archive is checked as it streams (image-complete.ts): one that lacks a
 * file the image needs (the engine's save of a multi-platform image the containerd store holds
 * only part of) fails as its path's own failure, never a member that only looks whole.
 */
import type { Readable } from 'node:stream';
import type { MemberAgain } from '../bundle/writer.js';
import type { Engine } from '../engine/engine.js';
import type { Progress } from '../context.js';
import { LayerStoreMismatch, openHostImageArchive, type HostImageArchive } from './host-image.js';
import { ContentStoreMismatch, openContentImageArchive, type ContentImageArchive } from './content-image.js';
import { checkedImageArchive, enginePlatform, engineSave, ImageIncompleteError } from './image-complete.js';
import { firstOpen, redoWith, refused, type Carried, type PathOption, type Routing } from './paths.js';
import { chainIds } from './ship.js';

export interface SavedImage {
  stream: Readable;
  /**
   * Set when the stream comes from the host's store (layer or content store): whether a failure of
   * it is that store's (then the engine's save gives the image instead), and that save; the bundle
   * writer's `again`.
   */
  fallback?: MemberAgain;
  /** Which path carries the image (layer-store, content-store or engine-save); updated should `fallback` be taken. */
  carried: Carried;
}

export async function saveImage(
  engine: Engine,
  ref: string,
  progress: Progress,
  opts: { rewritable: boolean },
  via: Routing,
): Promise<SavedImage> {
  const what = `image ${ref} from ${engine.facts.endpoint}`;
  const platform = enginePlatform(engine);
  const checked = (s: Readable, by: string) => checkedImageArchive(s, `${what} (${by})`, { platform });
  const save = {
    path: 'engine-save' as const,
    open: async () =>
      checked(await engineSave(() => engine.saveImages([ref], { platform }), what, platform), "the engine's save"),
  };
  const noStream = refused('the bundle is written to a stream, which cannot be rewound should the store fail');
  // The host's store of the engine's kind: Docker's overlay2 layer store, or containerd's content store.
  const fromHost: PathOption<HostImageArchive | ContentImageArchive> = engine.facts.containerdStore
    ? {
        path: 'content-store',
        open: async () => {
          if (!opts.rewritable) return noStream;
          const img = await engine.inspectImage(ref);
          return openContentImageArchive(engine, img, ref, () => false, progress, via.access);
        },
      }
    : {
        path: 'layer-store',
        open: async () => {
          if (!opts.rewritable) return noStream;
          const img = await engine.inspectImage(ref);
          const diffIds = img.RootFS?.Layers ?? [];
          return openHostImageArchive(
            engine,
            img,
            ref,
            { chains: chainIds(diffIds), missing: diffIds.map((_, i) => i) },
            progress,
            via.access,
          );
        },
      };
  const { value, carried } = await firstOpen<Readable | HostImageArchive | ContentImageArchive>(
    what,
    [fromHost, save],
    via.debug,
  );
  if (carried.path === 'engine-save') return { stream: value as Readable, carried };
  const host = value as HostImageArchive | ContentImageArchive;
  return {
    stream: checked(host.stream, `the ${carried.path}`),
    carried,
    fallback: redoWith(
      what,
      carried,
      (err) =>
        err instanceof LayerStoreMismatch ||
        err instanceof ContentStoreMismatch ||
        err instanceof ImageIncompleteError ||
        host.mismatch() !== undefined
          ? (host.mismatch() ?? (err as Error)).message
          : undefined,
      save,
      {
        debug: via.debug,
        note: (why) => progress.warn(`image ${ref} on ${host.where}: ${why}; writing it again with the engine's save`),
      },
    ),
  };
}
