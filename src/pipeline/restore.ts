/**
 * ferry restore: load -> run, from a bundle read as one stream (nothing staged on disk).
 *
 *   manifest -> preflight (conflicts) -> networks -> for each member in bundle order:
 *   volume: create + fill | bind: fill | image: load -> trailer verified -> containers created
 *   -> started if they were running
 *
 * Members are checked against the trailer before any container is created; a failure anywhere
 * removes what this restore created (Undo).
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BundleReader } from '../bundle/reader.js';
import { decompressor } from '../bundle/codec.js';
import type { Manifest } from '../bundle/manifest.js';
import type { Engine } from '../engine/engine.js';
import { BundleError, ConflictError, UsageError } from '../errors.js';
import type { Transport } from '../transport/transport.js';
import { abortable } from './backup.js';
import { checkAborted, type RunContext } from './context.js';
import { loadImage } from './load.js';
import { checkConflicts, createContainer, createVolume, ensureNetwork, freeName, Undo, type OnConflict } from './run.js';
import { fillBind, fillVolume, sweepHolders } from './volumes.js';

export interface RestoreOptions {
  name?: string;
  start: boolean;
  dryRun: boolean;
  onConflict: OnConflict;
  /** Write bind-mount data back to the host paths recorded in the bundle. */
  restoreBinds?: boolean;
}

export interface RestorePlan {
  containers: { from: string; to: string; image: string; start: boolean; replace: boolean }[];
  volumes: { from: string; to: string; replace: boolean }[];
  networks: { name: string; exists: boolean }[];
  binds: { hostPath: string; restore: boolean }[];
}

export interface RestoreResult {
  location: string;
  plan: RestorePlan;
  containers: { name: string; id: string; started: boolean }[];
  durationMs: number;
  dryRun: boolean;
}

function decode(stream: Readable, codec: Manifest['members'][number]['codec'], member: string, onFailure: (e: BundleError) => void): Readable {
  const d = decompressor(codec, member);
  // A member that does not decompress is a damaged bundle, whatever the engine says about the
  // stream it was fed.
  d.on('error', (err) =>
    onFailure(err instanceof BundleError ? err : new BundleError(`member ${member} is damaged: it does not decompress (${err.message})`, { member, cause: err })),
  );
  // pipeline() owns the error wiring: a failure on either side destroys both, and the consumer of
  // `d` sees the error; the promise itself is only observed through `d`.
  pipeline(stream, d).catch(() => {});
  return d;
}

async function makePlan(engine: Engine, m: Manifest, opts: RestoreOptions): Promise<RestorePlan> {
  if (opts.name && m.containers.length !== 1)
    throw new UsageError(`--name works on a bundle with one container; this one has ${m.containers.length}`);
  const containers: RestorePlan['containers'] = [];
  for (const c of m.containers) {
    const want = opts.name ?? c.spec.name;
    const exists = await engine.containerExists(want);
    const to = exists && opts.onConflict === 'rename' ? await freeName(want, (n) => engine.containerExists(n)) : want;
    containers.push({ from: c.spec.name, to, image: c.image.ref, start: opts.start && c.spec.state.running, replace: exists && opts.onConflict === 'replace' });
  }
  const volumes: RestorePlan['volumes'] = [];
  for (const v of m.volumes) {
    if (v.anonymous) {
      volumes.push({ from: v.name, to: '(new anonymous volume)', replace: false });
      continue;
    }
    const exists = !!(await engine.inspectVolume(v.name));
    const to = exists && opts.onConflict === 'rename' ? await freeName(v.name, async (n) => !!(await engine.inspectVolume(n))) : v.name;
    volumes.push({ from: v.name, to, replace: exists && opts.onConflict === 'replace' });
  }
  const networks: RestorePlan['networks'] = [];
  for (const n of m.networks) networks.push({ name: n.name, exists: !!(await engine.inspectNetwork(n.name)) });
  const binds = m.containers.flatMap((c) => c.binds.map((b) => ({ hostPath: b.hostPath, restore: !!opts.restoreBinds })));
  return { containers, volumes, networks, binds };
}

export async function restore(engine: Engine, transport: Transport, opts: RestoreOptions, ctx: RunContext): Promise<RestoreResult> {
  const started = Date.now();
  const { progress, signal } = ctx;
  const src = await transport.openBundle();
  const reader = await BundleReader.open(abortable(src.stream, signal), src.location);
  const m = reader.manifest;
  for (const d of engine.differences()) progress.warn(d);
  const undo = new Undo();
  let dataFailure: BundleError | undefined;
  const failed = (e: BundleError) => (dataFailure ??= e);
  try {
    progress.info(`bundle ${src.location}: ${m.containers.map((c) => c.spec.name).join(', ')}, backed up on ${m.source.hostname} (engine ${m.source.engine}) at ${m.createdAt}`);
    if (opts.name && m.containers.length !== 1)
      throw new UsageError(`--name works on a bundle with one container; this one has ${m.containers.length}`);
    if (opts.onConflict === 'fail') {
      const names = m.containers.map((c) => opts.name ?? c.spec.name);
      await checkConflicts(engine, names, m.volumes);
    }
    const plan = await makePlan(engine, m, opts);
    if (opts.onConflict === 'replace') await checkReplaceable(engine, plan);
    if (opts.dryRun) {
      reader.close();
      return { location: src.location, plan, containers: [], durationMs: Date.now() - started, dryRun: true };
    }

    // Replace: the old containers go first (their volumes cannot be removed while they exist).
    for (const c of plan.containers) {
      if (!c.replace) continue;
      progress.step(`remove existing container ${c.to} (--on-conflict replace)`);
      await engine.removeContainer(c.to, { force: true });
    }
    for (const n of m.networks) await ensureNetwork(engine, n, undo, progress);

    const volumeNames: Record<string, string> = {};
    let holderImage: string | undefined;
    const holder = async () => (holderImage ??= await engine.ensureHolderImage());
    const images = new Map<string, string>();
    for await (const member of reader.members()) {
      checkAborted(signal);
      const { plan: mp } = member;
      if (mp.kind === 'volume') {
        const v = m.volumes.find((x) => x.member === mp.name)!;
        const target = plan.volumes.find((x) => x.from === v.name)!;
        const name = await createVolume(engine, v.anonymous ? v : { ...v, name: target.to }, target.replace ? 'replace' : 'fail', undo, progress);
        volumeNames[v.name] = name;
        progress.step(`fill volume ${name} from ${mp.name}`);
        await fillVolume(engine, await holder(), name, decode(member.stream, mp.codec, mp.name, failed));
      } else if (mp.kind === 'bind') {
        const b = m.containers.flatMap((c) => c.binds).find((x) => x.member === mp.name)!;
        if (!opts.restoreBinds) {
          progress.info(`bind data for ${b.hostPath} is in the bundle; not written (use --restore-binds)`);
          continue;
        }
        progress.step(`write ${b.hostPath} from ${mp.name}`);
        await fillBind(engine, await holder(), b.hostPath, decode(member.stream, mp.codec, mp.name, failed));
      } else if (mp.kind === 'image') {
        const c = m.containers.find((x) => x.image.member === mp.name)!;
        const existed = await engine.imageExists(c.image.ref);
        progress.step(`load image ${c.image.ref}`);
        await loadImage(engine, decode(member.stream, mp.codec, mp.name, failed), c.image.ref);
        if (!existed) undo.add(`remove image ${c.image.ref}`, () => engine.removeImage(c.image.ref));
        images.set(c.spec.name, c.image.ref);
      }
    }
    progress.step('bundle verified (every member matches its sha256)');

    const out: RestoreResult['containers'] = [];
    for (const [i, c] of m.containers.entries()) {
      checkAborted(signal);
      const target = plan.containers[i]!;
      const id = await createContainer(engine, c.spec, target.to, images.get(c.spec.name)!, volumeNames, undo, progress);
      out.push({ name: target.to, id, started: false });
    }
    for (const [i, c] of m.containers.entries()) {
      const target = plan.containers[i]!;
      if (!target.start) continue;
      progress.step(`start ${target.to}`);
      await engine.start(out[i]!.id);
      out[i]!.started = true;
      if (c.spec.state.paused) await engine.pause(out[i]!.id);
    }
    undo.clear();
    return { location: src.location, plan, containers: out, durationMs: Date.now() - started, dryRun: false };
  } catch (err) {
    reader.close();
    engine.prepareCleanup();
    await sweepHolders(engine); // first: a helper would keep a volume the undo removes in use
    await undo.run(progress);
    // An engine call that failed because the bundle stream broke reports the bundle's problem.
    throw reader.failure ?? dataFailure ?? err;
  }
}

/**
 * --on-conflict replace removes the existing containers and volumes it replaces. Refuse up front,
 * before removing anything, when a volume to replace is also used by a container that is not
 * being replaced: removing it would fail half-way, after the old container was already gone.
 */
async function checkReplaceable(engine: Engine, plan: RestorePlan): Promise<void> {
  const replacing = new Set(plan.containers.filter((c) => c.replace).map((c) => c.to));
  for (const v of plan.volumes.filter((x) => x.replace)) {
    const users = (await engine.listContainers(true)).filter((c) => (c.Mounts ?? []).some((m) => m.Name === v.to)).map((c) => c.Names[0]!.replace(/^\//, ''));
    const others = users.filter((u) => !replacing.has(u));
    if (others.length)
      throw new ConflictError(`volume ${v.to} is also used by ${others.join(', ')}; --on-conflict replace cannot remove it`, 'nothing was changed; stop and remove those containers first, or use --on-conflict rename');
  }
}
