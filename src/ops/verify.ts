/**
 * ferry verify: read a whole bundle, one pass, streaming, and say whether it is whole (the checks
 * themselves are bundle/check.ts); quarantine a bundle just written that is not.
 */
import { createReadStream } from 'node:fs';
import { verifyStream, type VerifyReport } from '../bundle/check.js';
import { openBundleAt, type StoreDeps } from '../store/registry.js';
import { isBundleName, type Store } from '../store/store.js';
import { settleMark, type MarkOutcome } from '../store/marks.js';
import type { RunContext } from '../context.js';

// The checks' entry points, for the commands that verify (their one home is bundle/check.ts).
export { badMembers, verifyStream, type MemberCheck, type VerifyReport } from '../bundle/check.js';

/** Verify a bundle file. */
export async function verifyFile(file: string, ctx: RunContext): Promise<VerifyReport> {
  const stream = createReadStream(file, { highWaterMark: 1 << 20 });
  return verifyStream(stream, file, ctx);
}

/** Suffix a bundle that failed verification after being written gets: kept for inspection, never deleted. */
export const CORRUPT_SUFFIX = '.corrupt';

/**
 * Verify a bundle just written (a bundle of a store, or a location: a local file or ssh:// URL)
 * by reading it back; if it is not whole, rename it to `<name>.corrupt` so that nothing (restore,
 * prune, ls) takes it for a good bundle.
 */
export async function verifyOrQuarantine(
  bundle: string | { store: Store; name: string },
  ctx: RunContext,
  deps: StoreDeps = {},
): Promise<{ report: VerifyReport; quarantined?: string }> {
  const { store, name } = typeof bundle === 'string' ? openBundleAt(bundle, deps) : bundle;
  const src = await store.open(name);
  const report = await verifyStream(src.stream, src.location, ctx);
  if (report.ok) {
    // A bundle written under a name that an older, damaged bundle had: its mark is not this one's.
    await settleMark(store, name, { ok: true });
    return { report };
  }
  await store.rename(name, `${name}${CORRUPT_SUFFIX}`);
  return { report, quarantined: store.describe(`${name}${CORRUPT_SUFFIX}`) };
}

/** Why verify calls a bundle damaged, in a line: its bad members and their first problems. */
export function damageReason(r: VerifyReport): string {
  const parts = r.members.filter((m) => !m.ok).map((m) => `${m.name}: ${m.problems[0] ?? 'bad'}`);
  const text = parts.length ? `bad ${parts.join('; ')}` : 'verify found it damaged';
  return text.length > 1000 ? `${text.slice(0, 997)}...` : text;
}

/**
 * Record a verdict beside a bundle of a store (store/marks.ts): a damage mark when it is damaged,
 * none when it is whole; nothing changes when it could not be verified (no passphrase, no
 * permission). Never throws: a store that cannot be written is in the outcome.
 */
export async function recordVerdict(
  store: Store,
  name: string,
  report: VerifyReport,
  bytes?: number,
): Promise<MarkOutcome> {
  if (report.unverified || !isBundleName(name) || !store.capabilities.listable) return {};
  return settleMark(store, name, {
    ok: report.ok,
    reason: damageReason(report),
    ...(bytes !== undefined ? { bytes } : {}),
  });
}
