import { describe, expect, it } from 'vitest';
import { mapEngineError } from '../../src/engine/engine.js';
import { StreamReportedError } from '../../src/engine/progress.js';
import { ConflictError, EngineError, NotFoundError } from '../../src/errors.js';

/** An error as docker-modem makes it: status code, the daemon's JSON, and its "(HTTP code N)" message. */
function modemError(statusCode: number, message: string): Error {
  return Object.assign(new Error(`(HTTP code ${statusCode}) unexpected - ${message} `), {
    statusCode,
    json: { message },
  });
}

describe('mapEngineError: by status code and error code, never by message text', () => {
  const ep = 'unix:///var/run/docker.sock';

  it('404 is not found, 409 a conflict, other codes an engine error, with the daemon`s own words', () => {
    const nf = mapEngineError(modemError(404, 'No such container: web'), 'inspect container web', ep);
    expect(nf).toBeInstanceOf(NotFoundError);
    expect(nf.message).toBe('inspect container web: No such container: web');
    const c = mapEngineError(modemError(409, 'name in use'), 'create container web', ep, { conflict: 'taken' });
    expect(c).toBeInstanceOf(ConflictError);
    expect(c.message).toBe('taken');
    const other = mapEngineError(modemError(500, 'driver failed'), 'start container web', ep);
    expect(other).toBeInstanceOf(EngineError);
    expect(other.message).toBe('start container web: the engine answered 500: driver failed');
  });

  it('a message that reads like not found or a conflict is not taken for one without its status code', () => {
    expect(mapEngineError(modemError(500, 'No such container: web'), 'x', ep)).not.toBeInstanceOf(NotFoundError);
    expect(mapEngineError(new Error('(HTTP code 404) no such image - x'), 'x', ep)).not.toBeInstanceOf(NotFoundError);
    expect(mapEngineError(new Error('Conflict. The container name is already in use'), 'x', ep)).not.toBeInstanceOf(
      ConflictError,
    );
  });

  it('a dropped connection names the engine; an in-band stream error and anything else is an engine error', () => {
    const lost = mapEngineError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'save image', ep);
    expect(lost.message).toBe(`save image: lost the connection to the engine at ${ep} (ECONNRESET)`);
    const inBand = mapEngineError(new StreamReportedError('unauthorized', []), 'push image a:1', ep);
    expect(inBand).toBeInstanceOf(EngineError);
    expect(inBand.message).toBe('push image a:1: unauthorized');
    expect(mapEngineError('odd', 'x', ep).message).toBe('x: odd');
    expect(mapEngineError(undefined, 'x', ep)).toBeInstanceOf(EngineError);
  });

  it('a FerryError passes through unchanged', () => {
    const e = new NotFoundError('no such volume: data');
    expect(mapEngineError(e, 'x', ep)).toBe(e);
  });
});
