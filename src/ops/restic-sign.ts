/**
 * Signing a backup in a restic repository (`ferry backup -o restic:<repo> --sign-key <key>`).
 *
 * A snapshot is not a bundle: restore rebuilds one from it (store/restic/snapshot.ts), the same bytes
 * every time. So the signature is made over that bundle: the snapshot just written is read back
 * with restic dump, rebuilt, checked member by member as `ferry verify` checks any bundle, and
 * its SHA256SUMS signed (SSHSIG, as for a bundle file). The signature is stored as a snapshot of
 * its own, `/SHA256SUMS.sig` tagged `ferry-signature` and `ferry-signs=<id>` (layout.ts): a
 * snapshot's id depends on its content, so the signature cannot go into the snapshot it signs.
 * A restore finds it, rebuilds the bundle with it, and the bundle reader checks it as any
 * signed bundle's (--trust: exit 11 when it fails).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Signer } from '../bundle/sshsig.js';
import { BundleError } from '../errors.js';
import type { RunContext } from '../context.js';
import {
  SIG_FILE,
  backupArgs,
  parseBackupSummary,
  signatureTags,
  type ResticLocation,
} from '../store/restic/layout.js';
import { resticText, type ResticRunner } from '../store/restic/runner.js';
import { openResticSnapshot, snapshotBundle } from '../store/restic/snapshot.js';
import { verifyStream, type VerifyReport } from './verify.js';

export interface ResticSignResult {
  /** The snapshot signed. */
  snapshot: string;
  /** The snapshot that holds its signature. */
  signatureSnapshot: string;
  /** The read-back check of the rebuilt, signed bundle. */
  report: VerifyReport;
}

export async function signResticSnapshot(
  runner: ResticRunner,
  loc: ResticLocation & { snapshot: string },
  signer: Signer,
  stageRoot: string,
  ctx: RunContext,
): Promise<ResticSignResult> {
  const { progress } = ctx;
  const snap = await openResticSnapshot(runner, loc, progress);
  // The manifest as the snapshot holds it: the writer declares the key where it always does.
  const manifest = { ...snap.manifest };
  delete manifest.signature;
  let text: string | undefined;
  progress.step(`read back restic snapshot ${snap.snapshot.short_id} and sign it`);
  const stream = snapshotBundle(runner, loc.repo, snap.snapshot.id, manifest, snap.layout, progress, {
    sign: { signer, onSigned: (t) => (text = t) },
  });
  const where = `restic:${loc.repo}#${snap.snapshot.short_id}`;
  const report = await verifyStream(stream, where, { ...ctx, trust: undefined });
  if (!report.ok || !text)
    throw new BundleError(
      `${where} did not check out when read back to be signed: ${report.members
        .filter((m) => !m.ok)
        .flatMap((m) => m.problems.map((p) => `${m.name}: ${p}`))
        .join('; ')}`,
      { hint: 'the snapshot is left unsigned; run ferry verify restic:<repo> and restic check' },
    );
  await mkdir(stageRoot, { recursive: true });
  const stage = await mkdtemp(path.join(stageRoot, 'ferry-restic-sig-'));
  try {
    await writeFile(path.join(stage, SIG_FILE), text);
    progress.step(`restic backup ${SIG_FILE} of ${snap.snapshot.short_id} -> ${loc.repo}`);
    const out = await resticText(runner, {
      args: backupArgs(loc.repo, {
        host: snap.snapshot.hostname,
        tags: signatureTags(snap.snapshot.id),
        paths: [SIG_FILE],
      }),
      cwd: stage,
    });
    const sum = parseBackupSummary(out);
    return { snapshot: snap.snapshot.id, signatureSnapshot: sum.snapshot_id, report };
  } finally {
    await rm(stage, { recursive: true, force: true }).catch(() => {});
  }
}
