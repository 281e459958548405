/**
 * ferry prune: apply retention rules (retention.ts) to the bundles of a store (a local directory
 * or ssh://host/dir), holding the
 * store's lock so that no backup chooses a name meanwhile. Files that are not readable bundles are
 * never removed; the newest bundle of each container set is never removed; bundles being written
 * (hidden temporaries) are not even looked at. A bundle that `verify` marked damaged
 * (store/marks.ts) counts towards no keep rule and is never removed: it is listed as damaged.
 */
import path from 'node:path';
import { toFerryError, UsageError } from '../errors.js';
import type { LockOptions } from '../store/lock.js';
import { Catalog, type CatalogEntry } from '../store/catalog.js';
import { openStore, type StoreDeps } from '../store/registry.js';
import { readDamaged, type DamageMark } from '../store/marks.js';
import type { RunContext } from '../context.js';
import { applyRetention, hasKeepRule, RULES, type KeepPolicy } from '../plan/retention.js';

export interface PruneOptions {
  policy: KeepPolicy;
  dryRun: boolean;
  lock: Omit<LockOptions, 'signal' | 'purpose'>;
}

export interface PrunedBundle {
  bundle: string;
  created: string;
  containers: string[];
  bytes: number;
  group: string;
  /** Why it is kept (empty for removed bundles). */
  reasons: string[];
}

export interface DamagedBundle extends PrunedBundle {
  /** The damage mark verify left beside it. */
  mark: DamageMark;
}

export interface PruneResult {
  store: string;
  dryRun: boolean;
  policy: KeepPolicy;
  kept: PrunedBundle[];
  /** Removed (or, with dryRun, that would be). */
  removed: PrunedBundle[];
  /** Marked damaged by verify: counted towards no rule, never removed (an operator looks at them). */
  damaged: DamagedBundle[];
  /** Files that are not readable bundles: never removed. */
  unreadable: { bundle: string; bytes: number; error: string }[];
  /** Removals that failed (the bundle is still there). */
  failed: { bundle: string; error: string }[];
  freedBytes: number;
}

export function describePolicy(p: KeepPolicy): string {
  return [
    ...RULES.filter((r) => (p[r] ?? 0) > 0).map((r) => `--keep-${r} ${p[r]}`),
    ...(p.within ? [`--keep-within ${p.within}`] : []),
  ].join(' ');
}

/** Decide what a policy keeps in a listing (no I/O); `marks`: the damage marks, by bundle (entry.bundle). */
export function planPrune(
  entries: CatalogEntry[],
  policy: KeepPolicy,
  marks: ReadonlyMap<string, DamageMark> = new Map(),
): Pick<PruneResult, 'kept' | 'removed' | 'unreadable' | 'damaged'> {
  const unreadable: PruneResult['unreadable'] = [];
  const byId = new Map<string, CatalogEntry>();
  const snaps = [];
  for (const e of entries) {
    const t = e.created ? new Date(e.created) : undefined;
    if (e.error || !e.containers || !t || Number.isNaN(t.getTime())) {
      unreadable.push({
        bundle: e.bundle,
        bytes: e.bytes,
        error: e.error ?? 'its manifest has no valid creation time',
      });
      continue;
    }
    byId.set(e.bundle, e);
    snaps.push({ id: e.bundle, time: t, containers: e.containers, ...(marks.has(e.bundle) ? { damaged: true } : {}) });
  }
  const kept: PrunedBundle[] = [];
  const removed: PrunedBundle[] = [];
  const damaged: DamagedBundle[] = [];
  for (const d of applyRetention(snaps, policy)) {
    const e = byId.get(d.id)!;
    const pb: PrunedBundle = {
      bundle: e.bundle,
      created: e.created!,
      containers: e.containers!,
      bytes: e.bytes,
      group: d.group,
      reasons: d.reasons,
    };
    if (d.damaged) damaged.push({ ...pb, mark: marks.get(d.id)! });
    else (d.keep ? kept : removed).push(pb);
  }
  return { kept, removed, unreadable, damaged };
}

export async function prune(where: string, opts: PruneOptions, ctx: RunContext & StoreDeps): Promise<PruneResult> {
  if (!hasKeepRule(opts.policy))
    throw new UsageError(
      'prune needs at least one keep rule',
      'e.g. --keep-daily 7 --keep-weekly 4 (a bundle is kept when any rule keeps it)',
    );
  const store = openStore(where, ctx);
  await store.list(); // the store must exist and be a directory
  // A dry run changes nothing: it does not need the lock.
  const lock = opts.dryRun
    ? undefined
    : await store.lock({
        ...opts.lock,
        signal: ctx.signal,
        purpose: 'prune',
        onWait: opts.lock.onWait ?? ((m) => ctx.progress.info(m)),
      });
  try {
    const entries = await new Catalog(store, ctx.passphrase, ctx.identities).list();
    const names = new Map(entries.map((e) => [e.bundle, e.name]));
    // What verify found damaged: read before anything is removed, and a mark that cannot be read
    // stops the prune (counting a damaged bundle as good is what the marks are there to prevent).
    const marks = new Map<string, DamageMark>();
    for (const e of entries) {
      if (e.error) continue;
      const m = await readDamaged(store, e.name);
      if (m) marks.set(e.bundle, m);
    }
    const plan = planPrune(entries, opts.policy, marks);
    const result: PruneResult = {
      store: store.describe(),
      dryRun: opts.dryRun,
      policy: opts.policy,
      ...plan,
      removed: [],
      failed: [],
      freedBytes: 0,
    };
    for (const r of plan.removed) {
      if (opts.dryRun) {
        result.removed.push(r);
        result.freedBytes += r.bytes;
        continue;
      }
      try {
        await store.remove(names.get(r.bundle)!);
        result.removed.push(r);
        result.freedBytes += r.bytes;
        ctx.progress.step(`removed ${path.basename(r.bundle)}`);
      } catch (err) {
        result.failed.push({ bundle: r.bundle, error: toFerryError(err).message });
        ctx.progress.warn(`could not remove ${r.bundle}: ${toFerryError(err).message}`);
      }
    }
    return result;
  } finally {
    await lock?.release();
  }
}
