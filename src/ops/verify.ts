/**
 * ferry verify: read a whole bundle, one pass, streaming, and say whether it is whole (the checks
 * themselves are bundle/check.ts); quarantine a bundle just written that is not.
 */
import { createReadStream } from 'node:fs';
import { verifyStream, type VerifyReport } from '../bundle/check.js';
import { openBundleAt, type StoreDeps } from '../store/registry.js';
import type { Store } from '../store/store.js';
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
  if (report.ok) return { report };
  await store.rename(name, `${name}${CORRUPT_SUFFIX}`);
  return { report, quarantined: store.describe(`${name}${CORRUPT_SUFFIX}`) };
}
