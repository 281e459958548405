/** Stage 4, load: an image archive stream into the engine; fails on errors reported in-band. */
import type { Readable } from 'node:stream';
import type { Engine } from '../engine/engine.js';
import { EngineError } from '../errors.js';

export async function loadImage(engine: Engine, data: Readable, expectRef: string): Promise<string> {
  const loaded = await engine.loadImage(data);
  if (!(await engine.imageExists(expectRef)))
    throw new EngineError(`the engine loaded ${loaded.join(', ') || 'nothing'} but not ${expectRef}`, {
      hint: 'the image archive in the bundle does not hold the image the manifest names',
    });
  return expectRef;
}
