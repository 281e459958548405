/**
 * Damage marks: `ferry verify` records that a bundle of a store failed its checks in a small
 * sidecar object beside it, `<bundle>.damaged` (JSON: when, why, the bundle's size then), written
 * through the Store interface (so on a local directory, over SFTP and in S3 alike), and removes it
 * when a later verify finds the bundle whole. `prune` reads the marks: a marked bundle counts
 * towards no keep rule and is never removed (docs/commands.md, "ferry prune").
 *
 * A mark's name does not end in `.tar`, so no command takes it for a bundle (store.list() lists
 * `*.tar` only), and a backup never chooses the name of a bundle that has one (uniqueBundleName).
 */
import { toFerryError, type FerryError } from '../errors.js';
import { VERSION } from '../version.js';
import type { Store } from './store.js';

/** What a mark's name adds to its bundle's. */
export const DAMAGED_SUFFIX = '.damaged';

/** A mark's largest size: it is a few hundred bytes; anything much bigger is not one. */
const MAX_MARK_BYTES = 64 * 1024;

export interface DamageMark {
  /** When verify found the bundle damaged (ISO 8601, UTC). */
  at: string;
  /** Why: the bad members and their problems, as verify reported them. */
  reason: string;
  /** The bundle's size when it was found damaged (bytes), when known. */
  bytes?: number;
}

export function markName(bundle: string): string {
  return `${bundle}${DAMAGED_SUFFIX}`;
}

/** A mark's content: one JSON object, self-describing for an operator who finds it. */
export function markJson(mark: DamageMark): string {
  return (
    JSON.stringify({
      ferryDamageMark: 1,
      at: mark.at,
      reason: mark.reason,
      ...(mark.bytes !== undefined ? { bytes: mark.bytes } : {}),
      by: `ferry ${VERSION} verify`,
      note: 'ferry prune keeps this bundle and counts it towards no keep rule; a verify that finds it whole removes this file',
    }) + '\n'
  );
}

/** A mark's content read back; a file that does not parse is still a mark (its reason says so). */
export function parseMark(text: string, mtime?: Date): DamageMark {
  try {
    const j = JSON.parse(text) as Partial<Record<string, unknown>>;
    if (j && typeof j === 'object' && typeof j.at === 'string' && typeof j.reason === 'string')
      return { at: j.at, reason: j.reason, ...(typeof j.bytes === 'number' ? { bytes: j.bytes } : {}) };
  } catch {
    // below
  }
  return { at: (mtime ?? new Date(0)).toISOString(), reason: 'marked damaged (the mark could not be read)' };
}

/** Write (or replace) the mark of `bundle`. Throws the store's error when it cannot be written. */
export async function recordDamaged(store: Store, bundle: string, mark: DamageMark): Promise<void> {
  const sink = await store.create(markName(bundle), { replace: true });
  try {
    await sink.write(Buffer.from(markJson(mark), 'utf8'));
    await sink.commit();
  } catch (err) {
    await sink.abort().catch(() => {});
    throw err;
  }
}

/** Remove the mark of `bundle` if there is one. True when one was removed. */
export async function clearDamaged(store: Store, bundle: string): Promise<boolean> {
  if (!(await store.stat(markName(bundle)))) return false;
  await store.remove(markName(bundle));
  return true;
}

/** The mark of `bundle`, or undefined when it has none. */
export async function readDamaged(store: Store, bundle: string): Promise<DamageMark | undefined> {
  const st = await store.stat(markName(bundle));
  if (!st) return undefined;
  if (st.size > MAX_MARK_BYTES) return parseMark('', st.mtime);
  const { stream } = await store.open(markName(bundle));
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return parseMark(Buffer.concat(chunks).toString('utf8'), st.mtime);
}

/** What happened to a bundle's mark after it was verified. */
export type MarkOutcome =
  | { mark: 'recorded' | 'cleared' }
  | { mark: 'unwritable'; error: FerryError }
  | { mark?: undefined; error?: undefined };

/**
 * After verifying `bundle` of `store`: record the damage, or clear an old mark when it is whole.
 * Never throws: a store that cannot be written is reported in the outcome (verify goes on).
 */
export async function settleMark(
  store: Store,
  bundle: string,
  verdict: { ok: boolean; reason?: string; bytes?: number },
  now: Date = new Date(),
): Promise<MarkOutcome> {
  try {
    if (verdict.ok) return (await clearDamaged(store, bundle)) ? { mark: 'cleared' } : {};
    await recordDamaged(store, bundle, {
      at: now.toISOString(),
      reason: verdict.reason ?? 'verify found it damaged',
      ...(verdict.bytes !== undefined ? { bytes: verdict.bytes } : {}),
    });
    return { mark: 'recorded' };
  } catch (err) {
    return { mark: 'unwritable', error: toFerryError(err) };
  }
}
