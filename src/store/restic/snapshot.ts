/**
 * A restic snapshot of ferry's (store/restic/layout.ts) as a standard bundle stream: the
 * snapshot's manifest, then each member in the manifest's order, read with `restic dump` and
 * rebased into a member's archive (retar.ts), written by the bundle writer as onto a pipe (parts,
 * trailer, SHA256SUMS). restore, drill and verify read it as they read `ferry restore -`: nothing
 * of theirs knows about restic.
 */
import { PassThrough, Readable } from 'node:stream';
import { BundleWriter } from '../../bundle/writer.js';
import { parseManifest, type Manifest, type ManifestSignature } from '../../bundle/manifest.js';
import { fingerprint, parseSignature, publicKeyLine, type Signer } from '../../bundle/sshsig.js';
import { NotFoundError, UsageError } from '../../errors.js';
import type { Progress } from '../../context.js';
import { StreamStore } from '../stream.js';
import type { DirectSource, Transport } from '../transport.js';
import type { VolumeTree } from '../../data/volumes.js';
import type { HostAccess } from '../../hostaccess/access.js';
import { localShell } from '../../hostaccess/shell.js';
import {
  LAYOUT_FILE,
  MANIFEST_FILE,
  SIG_FILE,
  checkLayout,
  dumpArgs,
  lsArgs,
  newestFirst,
  parseSnapshots,
  restoreArgs,
  restoresSparse,
  signatureTags,
  signedSnapshot,
  snapshotsAndSignaturesArgs,
  selectSnapshot,
  snapshotsArgs,
  type Layout,
  type ResticLocation,
  type ResticSnapshot,
} from './layout.js';
import { NodeTimes, rebase } from './retar.js';
import { checkRestic, resticText, type ResticRunner } from './runner.js';

export interface ResticSnapshotBundle {
  snapshot: ResticSnapshot;
  /** The snapshot's manifest; with the signing key declared when the snapshot is signed. */
  manifest: Manifest;
  layout: Layout;
  /** The snapshot's signature (its signature snapshot), when it has one. */
  signature?: SnapshotSignature;
  /** The snapshot as a bundle location: each opening reads it again with restic dump. */
  transport: Transport;
  /** Its file-tree volumes written by `restic restore` on this host, where the target allows (restore). */
  direct: DirectSource;
}

/** A signed snapshot's SHA256SUMS.sig, and the key declaration the rebuilt manifest carries. */
export interface SnapshotSignature {
  declared: ManifestSignature;
  text: string;
}

/** Find the snapshot a location names and read its manifest and layout (nothing else yet). */
export async function openResticSnapshot(
  runner: ResticRunner,
  loc: ResticLocation,
  progress: Progress,
): Promise<ResticSnapshotBundle> {
  const version = await checkRestic(runner);
  // Every restic call opens the repository anew (and derives its key, which is slow by design):
  // one listing gives the snapshot and its signature, and what is read from it is read side by side.
  const list = parseSnapshots(await resticText(runner, { args: snapshotsAndSignaturesArgs(loc.repo) }));
  const snap = selectSnapshot(list, loc);
  if (typeof snap === 'string')
    throw new NotFoundError(`${loc.repo}: ${snap}`, `list them with: ferry ls restic:${loc.repo}`);
  const [text, layoutText, signature] = await Promise.all([
    resticText(runner, { args: dumpArgs(loc.repo, snap.id, MANIFEST_FILE) }),
    resticText(runner, { args: dumpArgs(loc.repo, snap.id, LAYOUT_FILE) }).catch((err: unknown) => err as Error),
    snapshotSignature(runner, loc.repo, snap, progress, list),
  ]);
  const manifest = parseManifest(text);
  let layout: Layout;
  try {
    if (layoutText instanceof Error) throw layoutText;
    layout = checkLayout(JSON.parse(layoutText), manifest);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`snapshot ${snap.short_id} has no readable ${LAYOUT_FILE}: ${(err as Error).message}`);
  }
  const where = `restic:${loc.repo}#${snap.short_id}`;
  // Rereadable: restore --trust (and --on-conflict replace) reads the whole bundle once before
  // it changes anything, then again to restore it; each reading runs restic dump anew.
  const transportOf = (placeholders: ReadonlySet<string>): Transport => ({
    describe: () => where,
    rereadable: true,
    createBundle: () => Promise.reject(new UsageError(`${where} is read here, not written`)),
    openBundle: async () => ({
      stream: snapshotBundle(runner, loc.repo, snap.id, manifest, layout, progress, {
        ...(signature ? { signature } : {}),
        placeholders,
      }),
      location: where,
    }),
    close: async () => {},
  });
  const transport = transportOf(new Set());
  const trees = layout.volumes.filter((v) => v.kind === 'tree');
  const direct: DirectSource = {
    take: async (access) => {
      const members = trees.map((v) => v.member);
      const why = directRefusal(access, trees.length > 0, !!signature);
      if (why) return { refused: why, members, path: 'restic-restore' };
      const volumes = new Map<string, VolumeTree>(
        trees.map((v) => [
          v.member,
          {
            path: 'restic-restore',
            sub: v.path,
            write: async (stage, abort) => {
              abort?.throwIfAborted(); // a listener added to a signal already aborted never fires
              progress.step(`restic restore ${v.path}`);
              const run = runner.run({
                args: restoreArgs(loc.repo, snap.id, v.path, stage, restoresSparse(version)),
              });
              run.stdout.resume();
              const stop = () => run.kill();
              abort?.addEventListener('abort', stop, { once: true });
              try {
                await run.done;
              } finally {
                abort?.removeEventListener('abort', stop);
              }
            },
            archive: () => memberStream(runner, loc.repo, snap.id, layout, v.member),
          },
        ]),
      );
      return { transport: transportOf(new Set(members)), volumes };
    },
  };
  return {
    snapshot: snap,
    manifest: signature ? { ...manifest, signature: signature.declared } : manifest,
    layout,
    ...(signature ? { signature } : {}),
    transport,
    direct,
  };
}

/**
 * Why `restic restore` does not write a snapshot's volumes on this restore (undefined where it
 * does): the target's host must offer its volumes (host-tar's conditions) and be this machine,
 * where restic runs; and the snapshot must be unsigned, for its signature covers the bundle it
 * rebuilds into, every member of it, which this path does not read. Pure.
 */
export function directRefusal(access: HostAccess, hasTrees: boolean, signed: boolean): string | undefined {
  if (!hasTrees) return 'the snapshot holds no volume as a file tree';
  if (signed) return 'the snapshot is signed: its signature is checked on the whole bundle, read through restic dump';
  if (!access.volumes.use || !access.shell) return access.volumes.reason;
  if (access.shell !== localShell) return `the engine's host is ${access.shell.where}; restic runs on this host`;
  return undefined;
}

/**
 * The signature of a snapshot, from the newest signature snapshot that names it (layout.ts);
 * undefined when there is none. What it is worth is decided by the bundle reader, as for any
 * signed bundle: here it is only read.
 */
async function snapshotSignature(
  runner: ResticRunner,
  repo: string,
  snap: ResticSnapshot,
  progress: Progress,
  /** A listing that holds the signature snapshots (snapshotsAndSignaturesArgs); else they are listed. */
  listed?: ResticSnapshot[],
): Promise<SnapshotSignature | undefined> {
  const sigs = newestFirst(
    listed
      ? listed.filter((s) => signedSnapshot(s) === snap.id)
      : parseSnapshots(await resticText(runner, { args: snapshotsArgs(repo, { tags: signatureTags(snap.id) }) })),
  );
  const s = sigs[0];
  if (!s) return undefined;
  const text = await resticText(runner, { args: dumpArgs(repo, s.id, SIG_FILE) });
  try {
    const parsed = parseSignature(text);
    const key = parsed.publicKey.blob;
    return {
      declared: { namespace: parsed.namespace, key: publicKeyLine(key), fingerprint: fingerprint(key) },
      text,
    };
  } catch (err) {
    progress.warn(
      `the signature snapshot ${s.short_id} of ${snap.short_id} holds no SSH signature (${(err as Error).message}): the snapshot reads as unsigned`,
    );
    return undefined;
  }
}

/** One member's archive, from the snapshot. */
function memberStream(runner: ResticRunner, repo: string, snap: string, layout: Layout, member: string): Readable {
  const img = layout.images.find((i) => i.member === member);
  const vol = layout.volumes.find((v) => v.member === member);
  const path = img?.path ?? vol!.path;
  const run = runner.run({ args: dumpArgs(repo, snap, path) });
  const raw = run.stdout;
  // A tree's exact mtimes come from restic ls, read in step with the dump (retar.ts).
  const ls = vol?.kind === 'tree' ? runner.run({ args: lsArgs(repo, snap, path) }) : undefined;
  const out =
    vol?.kind === 'tar'
      ? raw
      : rebase(raw, path, {
          dotSlash: !!vol,
          ...(vol?.root ? { root: vol.root } : {}),
          ...(ls ? { times: new NodeTimes(ls.stdout) } : {}),
        });
  // A dump that fails half-way must not look like a member that ended there.
  const gate = new PassThrough({ highWaterMark: 1 << 20 });
  out.on('error', (e) => gate.destroy(e));
  out.pipe(gate, { end: false });
  Promise.all([run.done, ls?.done, new Promise<void>((res) => out.on('end', () => res()))]).then(
    () => gate.end(),
    (e: unknown) => gate.destroy(e as Error),
  );
  return gate;
}

/**
 * The bundle stream of a snapshot. It comes out byte for byte the same each time (the trailer's
 * time is the manifest's), so that a signature made over it once (`sign`, when a signed backup
 * reads its snapshot back) holds every time it is rebuilt (`signature`).
 */
export function snapshotBundle(
  runner: ResticRunner,
  repo: string,
  snap: string,
  manifest: Manifest,
  layout: Layout,
  progress: Progress,
  sig: {
    signature?: SnapshotSignature;
    sign?: { signer: Signer; onSigned: (text: string) => void };
    /** Members written as an empty archive (their data restored by other means: DirectSource). */
    placeholders?: ReadonlySet<string>;
  } = {},
): Readable {
  const empty = (name: string) => sig.placeholders?.has(name) ?? false;
  const pipe = new PassThrough({ highWaterMark: 1 << 20 });
  void (async () => {
    const sink = await new StreamStore(pipe).create(`restic-${snap.slice(0, 8)}.tar`);
    const writer = new BundleWriter(
      sink,
      {
        ...manifest,
        members: manifest.members.map((m) => {
          if (!empty(m.name)) return { ...m };
          const rest = { ...m };
          delete rest.rawBytes;
          return rest;
        }),
      },
      {
        finishedAt: manifest.createdAt,
        ...(sig.sign ? { signer: sig.sign.signer, onSigned: sig.sign.onSigned } : {}),
        ...(sig.signature ? { signature: sig.signature } : {}),
      },
    );
    await writer.begin();
    for (const i of layout.images) writer.recordImage(i.facts);
    for (const m of manifest.members) {
      if (empty(m.name)) {
        await writer.addMember(m.name, Readable.from([Buffer.alloc(1024)]), 'none');
        continue;
      }
      progress.step(`restic dump ${m.name}`);
      await writer.addMember(m.name, memberStream(runner, repo, snap, layout, m.name), 'none', (_, n) =>
        progress.bytes(m.name, n),
      );
    }
    await writer.finish();
    pipe.end();
  })().catch((err: unknown) => pipe.destroy(err as Error));
  return pipe;
}
