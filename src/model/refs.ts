/** Image references. Pure. */

/**
 * `repo:tag` split at its last colon into `[repo, tag]`, for a ref that has a tag (ferry's own
 * snapshot and restore refs always do). A ref without one (or with a digest) is the engine's to
 * parse: see `pullImage` in engine/engine.ts.
 */
export function splitRef(ref: string): [string, string] {
  const i = ref.lastIndexOf(':');
  return [ref.slice(0, i), ref.slice(i + 1)];
}
