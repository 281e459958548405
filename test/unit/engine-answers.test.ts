import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  dockerErr,
  field,
  readable,
  statusOf,
  stringField,
  stringsField,
  untypedCall,
} from '../../src/engine/answers.js';
import { EngineError } from '../../src/errors.js';
import DockerClient from '../../src/engine/dockerode.js';

describe('engine answers, checked instead of cast', () => {
  it('reads a field through a getter, as an HTTP response has its headers', () => {
    const res = new IncomingMessage(new Socket());
    res.headers = { 'x-docker-container-path-stat': 'e30=' };
    expect(Object.keys(res)).not.toContain('headers'); // a getter: Object.entries would miss it
    expect(stringField(field(res, 'headers'), 'x-docker-container-path-stat')).toBe('e30=');
  });

  it('keeps each field only where it has the expected type', () => {
    expect(stringField({ Driver: 'overlay2' }, 'Driver')).toBe('overlay2');
    expect(stringField({ Driver: 2 }, 'Driver')).toBeUndefined();
    expect(stringsField({ SecurityOptions: ['name=seccomp', 3] }, 'SecurityOptions')).toEqual(['name=seccomp']);
    expect(stringsField({ SecurityOptions: null }, 'SecurityOptions')).toBeUndefined();
    expect(field(null, 'x')).toBeUndefined();
  });

  it("reads docker-modem's error fields, and nothing from a non-object", () => {
    const err = Object.assign(new Error('(HTTP code 404) no such container'), {
      statusCode: 404,
      json: { message: 'no such container' },
    });
    expect(dockerErr(err)).toEqual({ statusCode: 404, json: { message: 'no such container' }, message: err.message });
    expect(statusOf(err)).toBe(404);
    expect(statusOf(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBeUndefined();
    expect(dockerErr(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })).code).toBe('ECONNREFUSED');
    expect(dockerErr('boom')).toEqual({});
    expect(dockerErr(undefined)).toEqual({});
  });

  it('passes a stream through and refuses anything else, naming the call', () => {
    const s = new PassThrough();
    expect(readable(s, 'save image')).toBe(s);
    expect(() => readable(Buffer.from('x'), 'save image')).toThrow(EngineError);
    expect(() => readable(Buffer.from('x'), 'save image')).toThrow(/save image/);
  });

  it('calls a method the typings leave out, and fails by name when it is gone', () => {
    const target = {
      getImages(o: { names: string[] }) {
        return o.names.length;
      },
    };
    expect(untypedCall(target, 'getImages', [{ names: ['a', 'b'] }])).toBe(2);
    expect(() => untypedCall({}, 'getImages', [])).toThrow(/getImages/);
  });

  it('dockerode still has the getImages that its typings leave out (engine.saveImages calls it)', () => {
    expect(typeof Reflect.get(DockerClient.prototype, 'getImages')).toBe('function');
  });
});
