/**
 * Path excludes for volume data (`--exclude-path`, the `ferry.exclude-paths` label): written
 * once, here, for every data path that reads a volume. GNU tar on the engine's host is given
 * excludeTarArgs(); what the engine's archive endpoint or a helper's tar gives goes through an
 * ExcludeFilter, which drops the same entries; a pre-copy's listing (delta.ts) leaves them out
 * with isExcluded(). One syntax, the subset of GNU tar's `--exclude` that these three agree on
 * (docs/commands.md, "Path excludes"):
 *
 *  - a pattern is a path relative to the volume's root (a leading `/` or `./` and a trailing `/`
 *    are dropped), matched against the whole path from the root (GNU tar's `--anchored`);
 *  - `*` is any run of characters but `/`, `?` one character but `/`, `[abc]`, `[a-z]`, `[!a]`
 *    (or `[^a]`) one character of (or not of) a set, never `/` (`--no-wildcards-match-slash`);
 *    `\` makes the next character literal; a leading `.` is matched by `*` (no hidden-file rule);
 *  - a match on a directory excludes it and everything under it;
 *  - `..` is refused, and so is an empty pattern.
 */
import { UsageError } from '../errors.js';
import { TarEntryFilter, type TarDecision, type TarEntry } from '../util/tar-filter.js';

/** The label that gives a container's excludes (comma- or newline-separated patterns). */
export const LABEL_EXCLUDE_PATHS = 'ferry.exclude-paths';

/**
 * One pattern as it is kept and recorded (the bundle's manifest), or a UsageError naming it and
 * `from` (the option or label it came from). Pure.
 */
export function normalizeExclude(pattern: string, from: string): string {
  const p = pattern
    .trim()
    .replace(/\/{2,}/g, '/')
    .replace(/^\/+/, '')
    .replace(/^(\.\/)+/, '')
    .replace(/\/+$/, '');
  const bad = (why: string) =>
    new UsageError(
      `${from}: the path exclude ${JSON.stringify(pattern)} ${why}`,
      'a pattern is a path relative to the volume root, e.g. cache, logs/*.log or tmp/[0-9]*',
    );
  if (!p || p === '.') throw bad('is empty (it would exclude nothing, or everything)');
  if (/[\0\n]/.test(p)) throw bad('holds a NUL or a newline');
  if (p.split('/').some((s) => s === '..' || s === '.')) throw bad('has a . or .. component');
  return p;
}

/** The patterns of `list`, normalized, each once, in their first order. Pure. */
export function excludeList(list: readonly string[], from: string): string[] {
  return [...new Set(list.map((p) => normalizeExclude(p, from)))];
}

/** The excludes of one volume: the command line's (`given`), then its container's label's, each once. Pure. */
export function volumeExcludes(given: readonly string[] | undefined, own: readonly string[] | undefined): string[] {
  return [...new Set([...(given ?? []), ...(own ?? [])])];
}

/** The patterns of a container's `ferry.exclude-paths` label (commas or newlines between them). Pure. */
export function labelExcludes(name: string, labels: Record<string, string>): string[] {
  const v = labels[LABEL_EXCLUDE_PATHS];
  if (v === undefined) return [];
  return excludeList(
    v.split(/[,\n]/).filter((s) => s.trim()),
    `${name}: its label ${LABEL_EXCLUDE_PATHS}`,
  );
}

/** One pattern as a regular expression source (no anchors), by GNU fnmatch's rules with FNM_PATHNAME. */
function patternSource(p: string): string {
  let out = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === '\\' && i + 1 < p.length) out += escapeRe(p[++i]!);
    else if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else if (c === '[') {
      // a set: up to the first `]` that is not its first character; unclosed, a literal `[`
      let j = i + 1;
      if (p[j] === '!' || p[j] === '^') j++;
      if (p[j] === ']') j++;
      while (j < p.length && p[j] !== ']') j++;
      if (j >= p.length) {
        out += '\\[';
        continue;
      }
      let body = p.slice(i + 1, j);
      const negate = body[0] === '!' || body[0] === '^';
      if (negate) body = body.slice(1);
      const set = body.replace(/\\(.)/g, '$1').replace(/[\\\]^[]/g, (m) => `\\${m}`);
      out += `(?!/)[${negate ? '^' : ''}${set}]`;
      i = j;
    } else out += escapeRe(c);
  }
  return out;
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/**
 * Whether a path (relative to the volume's root, `./` or not) is excluded by `patterns`: the path
 * itself or a directory above it matches one. The root itself never is. Pure; unit-tested
 * against GNU tar.
 */
export function excludeMatcher(patterns: readonly string[]): (path: string) => boolean {
  if (!patterns.length) return () => false;
  const re = new RegExp(`^(?:${patterns.map(patternSource).join('|')})(?:/.*)?$`, 's');
  return (path) => {
    const p = path
      .replace(/^(\.\/)+/, '')
      .replace(/^\/+/, '')
      .replace(/\/+$/, '');
    return p !== '' && p !== '.' && re.test(p);
  };
}

/**
 * The arguments that make GNU tar leave out what excludeMatcher excludes, for an archive of `.`
 * (member names `./...`): placed before the names it reads. Pure; unit-tested against GNU tar.
 */
export function excludeTarArgs(patterns: readonly string[]): string[] {
  if (!patterns.length) return [];
  return [
    '--anchored',
    '--wildcards',
    '--no-wildcards-match-slash',
    '--no-ignore-case',
    ...patterns.map((p) => `--exclude=./${p}`),
  ];
}

/**
 * A volume's archive (as the engine's archive endpoint or a tar gives it) without the entries
 * `patterns` exclude: every other block passes through untouched, in order; an excluded entry
 * goes with its PAX and long-name headers and its data. A hard link to an excluded file goes too
 * (its data is not in the archive). Nothing is buffered beyond one entry's headers.
 */
export class ExcludeFilter extends TarEntryFilter {
  /** How many entries were left out. */
  dropped = 0;
  private readonly excluded: (path: string) => boolean;

  constructor(patterns: readonly string[]) {
    super();
    this.excluded = excludeMatcher(patterns);
  }

  protected decide(e: TarEntry): TarDecision {
    if (!this.excluded(e.name) && !(e.type === '1' && this.excluded(e.linkname))) return 'pass';
    this.dropped++;
    return 'drop';
  }
}
