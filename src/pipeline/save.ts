/** Stage 2, save: the committed image as a `docker save` archive stream (docker-archive format). */
import type { Readable } from 'node:stream';
import type { Engine } from '../engine/engine.js';

export function saveImage(engine: Engine, ref: string): Promise<Readable> {
  return engine.saveImages([ref]);
}
