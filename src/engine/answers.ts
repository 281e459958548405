/**
 * What dockerode hands back, checked instead of cast. @types/dockerode types many answers as
 * `any`, every stream as a `NodeJS.ReadableStream` (docker-modem resolves with the HTTP response,
 * or the socket for a hijacked call: both a stream.Readable), and leaves out `getImages`. Each
 * helper here turns such an answer into the type ferry uses, failing loudly if dockerode ever
 * answers something else. Only engine/ uses this module.
 */
import { Readable } from 'node:stream';
import { EngineError } from '../errors.js';

/** The fields of a failed dockerode call that ferry reads (docker-modem's errors, or a socket's). */
export interface DockerErr {
  /** The HTTP status the engine answered. */
  statusCode?: number;
  /** A system error code of the connection (ECONNREFUSED, ...). */
  code?: string;
  /** The engine's answer, parsed: `{ message }`, or a string. */
  json?: unknown;
  message?: string;
}

/** A failed call's fields, each one only where it has the type ferry expects. */
export function dockerErr(err: unknown): DockerErr {
  if (typeof err !== 'object' || err === null) return {};
  const statusCode: unknown = Reflect.get(err, 'statusCode');
  const code: unknown = Reflect.get(err, 'code');
  const message: unknown = Reflect.get(err, 'message');
  const json: unknown = Reflect.get(err, 'json');
  return {
    ...(typeof statusCode === 'number' ? { statusCode } : {}),
    ...(typeof code === 'string' ? { code } : {}),
    json,
    ...(typeof message === 'string' ? { message } : {}),
  };
}

/** The HTTP status of a failed engine call, if the engine answered one. */
export function statusOf(err: unknown): number | undefined {
  return dockerErr(err).statusCode;
}

/** A stream dockerode resolved with, as the stream.Readable it is. */
export function readable(v: unknown, what: string): Readable {
  if (v instanceof Readable) return v;
  throw new EngineError(`${what}: internal: dockerode answered ${typeof v}, not a stream`);
}

/**
 * A field of an answer (GET /info, a commit's answer, an HTTP response's `headers`, ...), read as
 * a property, so that getters count (IncomingMessage.headers is one); undefined for a non-object.
 */
export function field(v: unknown, key: string): unknown {
  if (typeof v !== 'object' || v === null) return undefined;
  const x: unknown = Reflect.get(v, key);
  return x;
}

/** The keys of an object field (GET /info's Runtimes), none for anything else. */
export function keysOf(v: unknown): string[] {
  return typeof v === 'object' && v !== null ? Object.keys(v) : [];
}

/** A string field of an answer, if it is one. */
export function stringField(v: unknown, key: string): string | undefined {
  const x = field(v, key);
  return typeof x === 'string' ? x : undefined;
}

/** A number field of an answer, if it is one. */
export function numberField(v: unknown, key: string): number | undefined {
  const x = field(v, key);
  return typeof x === 'number' ? x : undefined;
}

/** A string array field of an answer (its non-string items dropped); undefined if absent or null. */
export function stringsField(v: unknown, key: string): string[] | undefined {
  const x = field(v, key);
  return Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : undefined;
}

/**
 * Call a dockerode method that @types/dockerode leaves out (`getImages`), checking that it is
 * there: a dockerode that drops it fails here, by name, rather than with "not a function".
 */
export function untypedCall(target: object, method: string, args: unknown[]): unknown {
  const fn: unknown = Reflect.get(target, method);
  if (typeof fn !== 'function') throw new EngineError(`internal: dockerode has no ${method}()`);
  const answer: unknown = Reflect.apply(fn, target, args);
  return answer;
}
