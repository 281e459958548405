/**
 * A small JSON Schema (2020-12) checker for docs/json-schema.json: the keywords that file uses
 * ($ref to #/$defs, type, const, enum, required, properties, additionalProperties, items,
 * minimum, allOf, anyOf, not, if/then/else). An unknown keyword fails loudly, so the schema
 * cannot grow a rule this checker silently ignores.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

type Schema = Record<string, unknown> | boolean;

const KNOWN = new Set([
  '$schema',
  '$id',
  'title',
  'description',
  '$defs',
  '$ref',
  'type',
  'const',
  'enum',
  'required',
  'properties',
  'additionalProperties',
  'items',
  'minimum',
  'allOf',
  'anyOf',
  'not',
  'if',
  'then',
  'else',
]);

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

export function validate(root: Schema, value: unknown): string[] {
  const errors: string[] = [];
  const check = (s: Schema, v: unknown, at: string, out: string[]) => {
    if (s === true) return;
    if (s === false) return void out.push(`${at}: not allowed`);
    for (const k of Object.keys(s)) if (!KNOWN.has(k)) throw new Error(`json-schema checker: unknown keyword ${k}`);
    if (typeof s.$ref === 'string') {
      const name = /^#\/\$defs\/(.+)$/.exec(s.$ref)?.[1];
      const target = name && ((root as Record<string, unknown>).$defs as Record<string, Schema>)[name];
      if (target === undefined || !name) throw new Error(`json-schema checker: bad $ref ${s.$ref}`);
      check(target, v, at, out);
    }
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
      const t = typeOf(v);
      if (!types.includes(t) && !(t === 'integer' && types.includes('number')))
        return void out.push(`${at}: expected ${types.join('|')}, got ${t}`);
    }
    if ('const' in s && JSON.stringify(s.const) !== JSON.stringify(v))
      out.push(`${at}: expected ${JSON.stringify(s.const)}, got ${JSON.stringify(v)}`);
    if (Array.isArray(s.enum) && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v)))
      out.push(`${at}: ${JSON.stringify(v)} is not one of ${JSON.stringify(s.enum)}`);
    if (typeof s.minimum === 'number' && typeof v === 'number' && v < s.minimum)
      out.push(`${at}: ${v} is below ${s.minimum}`);
    if (typeOf(v) === 'object') {
      const o = v as Record<string, unknown>;
      for (const r of (s.required as string[] | undefined) ?? []) if (!(r in o)) out.push(`${at}: missing ${r}`);
      const props = (s.properties ?? {}) as Record<string, Schema>;
      for (const [k, x] of Object.entries(o)) {
        if (k in props) check(props[k]!, x, `${at}.${k}`, out);
        else if (s.additionalProperties !== undefined)
          check(s.additionalProperties as Schema, x, `${at}.${k} (not in the schema)`, out);
      }
    }
    if (Array.isArray(v) && s.items !== undefined) v.forEach((x, i) => check(s.items as Schema, x, `${at}[${i}]`, out));
    for (const sub of (s.allOf as Schema[] | undefined) ?? []) check(sub, v, at, out);
    if (Array.isArray(s.anyOf)) {
      const fits = (s.anyOf as Schema[]).some((sub) => {
        const e: string[] = [];
        check(sub, v, at, e);
        return e.length === 0;
      });
      if (!fits) out.push(`${at}: matches none of anyOf`);
    }
    if (s.not !== undefined) {
      const e: string[] = [];
      check(s.not as Schema, v, at, e);
      if (e.length === 0) out.push(`${at}: matches what "not" forbids`);
    }
    if (s.if !== undefined) {
      const e: string[] = [];
      check(s.if as Schema, v, at, e);
      if (e.length === 0 && s.then !== undefined) check(s.then as Schema, v, at, out);
      if (e.length > 0 && s.else !== undefined) check(s.else as Schema, v, at, out);
    }
  };
  check(root, value, '$', errors);
  return errors;
}

export const FERRY_JSON_SCHEMA = JSON.parse(
  readFileSync(path.join(import.meta.dirname, '../../docs/json-schema.json'), 'utf8'),
) as Schema;

/**
 * What a --json run printed on stdout, checked: exactly one line, one object, valid against the
 * schema. Returns the object.
 */
export function schemaChecked(stdout: string): Record<string, unknown> {
  const lines = stdout.split('\n').filter((l) => l.trim());
  if (lines.length !== 1) throw new Error(`expected one JSON line on stdout, got ${lines.length}:\n${stdout}`);
  const value = JSON.parse(lines[0]!) as Record<string, unknown>;
  const errors = validate(FERRY_JSON_SCHEMA, value);
  if (errors.length)
    throw new Error(`--json output does not fit docs/json-schema.json:\n${errors.join('\n')}\n${lines[0]}`);
  return value;
}
