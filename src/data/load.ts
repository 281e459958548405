/** Stage 4, load: an image archive stream into the engine; fails on errors reported in-band. */
import type { Readable } from 'node:stream';
import type { Engine } from '../engine/engine.js';
import { EngineError } from '../errors.js';
import { splitRef } from '../model/refs.js';
import { faultPoint } from '../util/fault.js';

export async function loadImage(engine: Engine, data: Readable, expectRef: string): Promise<string> {
  await faultPoint('image-load');
  const loaded = await engine.loadImage(data);
  // Podman qualifies short names on load (lab/app:1 -> localhost/lab/app:1): tag it back.
  if (!(await engine.imageExists(expectRef)) && (await engine.imageExists(`localhost/${expectRef}`))) {
    await engine.tagImage(`localhost/${expectRef}`, ...splitRef(expectRef));
  }
  if (!(await engine.imageExists(expectRef)))
    throw new EngineError(`the engine loaded ${loaded.join(', ') || 'nothing'} but not ${expectRef}`, {
      hint: 'the image archive in the bundle does not hold the image the manifest names',
    });
  return expectRef;
}
