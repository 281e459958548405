/**
 * Stage 1, capture: inspect a container and everything needed to recreate it (config, networks,
 * volumes), quiesce it (pause or stop), commit its writable layer, and always put it back.
 */
import os from 'node:os';
import { type Engine, LABEL_MANAGED } from '../../engine/engine.js';
import {
  captureNetwork,
  captureSpec,
  composeProject,
  isFerrySnapshot,
  isUserNetwork,
  lineageAuthor,
  parseLineage,
  type ContainerSpec,
  type NetworkSpec,
} from '../../model/spec.js';
import { ConflictError, NotFoundError, UsageError } from '../../errors.js';
import type { VolumeEntry } from '../../bundle/manifest.js';
import type { Progress } from '../../context.js';
import { ContainerHolds, QuiesceJournal } from '../../util/state.js';
import { sleep } from '../../util/sleep.js';
import { faultPoint } from '../../util/fault.js';
import { labelExcludes } from '../../data/excludes.js';

export type Consistency = 'pause' | 'stop' | 'none';

export interface Captured {
  spec: ContainerSpec;
  volumes: Omit<VolumeEntry, 'member'>[];
  networks: NetworkSpec[];
  /** Bind mounts (host paths) the container uses. */
  binds: { hostPath: string; destination: string }[];
  /** The container's labels as the engine reports them (its own and its image's; fixed at creation). */
  labels: Record<string, string>;
}

export async function captureContainer(engine: Engine, nameOrId: string): Promise<Captured> {
  const inspect = await engine.inspectContainer(nameOrId);
  if (inspect.Config.Labels?.[LABEL_MANAGED])
    throw new UsageError(
      `${nameOrId} is a helper container made by ferry`,
      'it holds nothing to back up; remove it with docker rm',
    );
  const image = await engine.inspectImage(inspect.Image).catch(() => undefined);
  // container:<id> references (network, ipc, pid, volumes-from) are kept by name.
  const containerNames: Record<string, string> = {};
  const hc = inspect.HostConfig;
  const refs = [hc.NetworkMode, hc.IpcMode, hc.PidMode]
    .filter((v): v is string => typeof v === 'string' && v.startsWith('container:'))
    .map((v) => v.slice('container:'.length))
    .concat(stringList(hc.VolumesFrom).map((v) => v.split(':')[0]!));
  for (const ref of refs) {
    const other = await engine.inspectContainer(ref).catch(() => undefined);
    if (other) containerNames[ref] = other.Name.replace(/^\//, '');
  }
  const spec = captureSpec({
    inspect: {
      ...inspect,
      Config: { ...inspect.Config },
      HostConfig: { ...inspect.HostConfig },
      State: { ...inspect.State },
      Mounts: (inspect.Mounts ?? []).map((m) => ({ ...m })),
      NetworkSettings: { ...inspect.NetworkSettings },
    },
    imageConfig: image?.Config,
    fromSnapshot: isFerrySnapshot(image),
    origin: parseLineage(image?.Author),
    containerNames,
    defaultLogDriver: engine.facts.loggingDriver,
    quirks: engine.quirks,
  });

  const volumes: Captured['volumes'] = [];
  const binds: Captured['binds'] = [];
  // its ferry.exclude-paths label: left out of each volume it mounts (read at capture time)
  const excludePaths = labelExcludes(spec.name, inspect.Config.Labels ?? {});
  for (const m of spec.mounts) {
    if (m.type === 'volume' && m.source) {
      const v = await engine.inspectVolume(m.source);
      volumes.push({
        name: m.source,
        anonymous: !!m.anonymous,
        driver: v?.Driver ?? 'local',
        ...(v?.Options && Object.keys(v.Options).length ? { driverOpts: v.Options } : {}),
        ...(v?.Labels && Object.keys(v.Labels).length ? { labels: v.Labels } : {}),
        ...(excludePaths.length ? { excludePaths } : {}),
      });
    } else if (m.type === 'bind' && m.source) {
      binds.push({ hostPath: m.source, destination: m.destination });
    }
  }
  const networks: NetworkSpec[] = [];
  for (const e of spec.endpoints) {
    if (!isUserNetwork(e.network)) continue;
    const n = await engine.inspectNetwork(e.network);
    if (n) networks.push(captureNetwork({ ...n }));
  }
  return { spec, volumes, networks, binds, labels: inspect.Config.Labels ?? {} };
}

/** A list of strings from an inspect answer (dockerode types HostConfig.VolumesFrom as any). */
function stringList(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x: unknown): x is string => typeof x === 'string') : [];
}

/**
 * What quiesce returns: call it to put the container back as it was (in a finally block), or
 * keep() to leave it paused or stopped on purpose (a cutover): then no later run treats it as
 * left behind by a killed ferry.
 */
export type Resume = (() => Promise<void>) & { keep(): void };

/**
 * Quiesce a container for a consistent snapshot. Returns the function that puts it back as it
 * was; the caller must call it (or its keep()) in a finally block. A container that was already
 * paused or stopped is left so.
 */
export async function quiesce(
  engine: Engine,
  spec: ContainerSpec,
  mode: Consistency,
  progress: Progress,
  opts: {
    journal?: QuiesceJournal;
    stopTimeout?: number;
    holds?: ContainerHolds;
    /** How long to wait for another ferry run that holds the container (default: not at all). */
    waitSeconds?: number;
    signal?: AbortSignal;
  } = {},
): Promise<Resume> {
  const journal = opts.journal ?? new QuiesceJournal();
  const holds = opts.holds ?? new ContainerHolds();
  const where = engine.facts.endpoint;
  await hold(holds, where, spec, progress, opts);
  try {
    const resume = await quiesceHeld(engine, spec, mode, progress, journal, holds, opts);
    await faultPoint('quiesced');
    return resume;
  } catch (err) {
    holds.release(where, spec.sourceId);
    throw err;
  }
}

/**
 * Take the container for this run: one run at a time snapshots it, so that a second one never
 * finds it paused by the first and records it as paused. Waits up to `waitSeconds` for the run
 * that holds it, then fails with a ConflictError naming that run.
 */
async function hold(
  holds: ContainerHolds,
  where: string,
  spec: ContainerSpec,
  progress: Progress,
  opts: { waitSeconds?: number; signal?: AbortSignal },
): Promise<void> {
  const deadline = Date.now() + (opts.waitSeconds ?? 0) * 1000;
  let said = false;
  for (;;) {
    const by = holds.take({ engine: where, containerId: spec.sourceId, name: spec.name });
    if (!by) return;
    const who = `another ferry run (pid ${by.pid}${by.host ? ` on ${by.host}` : ''}${by.at ? `, since ${by.at}` : ''})`;
    if (Date.now() >= deadline)
      throw new ConflictError(
        `${spec.name} is held by ${who}, which is backing it up or migrating it`,
        opts.waitSeconds
          ? `it did not finish within --wait ${opts.waitSeconds}; try again later or wait longer`
          : 'wait for that run to finish, or give --wait <seconds> to wait for it',
      );
    if (!said) progress.info(`waiting for ${who} to finish with ${spec.name}`);
    said = true;
    await sleep(500, opts.signal);
  }
}

async function quiesceHeld(
  engine: Engine,
  spec: ContainerSpec,
  mode: Consistency,
  progress: Progress,
  journal: QuiesceJournal,
  holds: ContainerHolds,
  opts: { stopTimeout?: number },
): Promise<Resume> {
  const st = await engine.inspectContainer(spec.sourceId);
  const where = engine.facts.endpoint;
  // Left paused or stopped by a ferry run that was killed (SIGKILL)? Then it was running: treat
  // it so, and put it back afterwards.
  const stale = journal.stale(where).find((r) => r.containerId === spec.sourceId);
  let running = !!st.State.Running && !st.State.Paused;
  if (stale) {
    const still = (stale.action === 'paused' && st.State.Paused) || (stale.action === 'stopped' && !st.State.Running);
    journal.forget(where, spec.sourceId);
    if (still) {
      progress.warn(
        `${spec.name} was left ${stale.action} by a ferry run (pid ${stale.pid}) that was killed at ${stale.at}; it will be resumed after this snapshot`,
      );
      running = true;
      // It is ours to put back now: record that, in case this run dies too.
      journal.add({ engine: where, containerId: spec.sourceId, name: spec.name, action: stale.action });
    }
  }
  // The state the bundle records is the one this run found once it held the container, not the
  // one inspected before: another run may have had it paused then.
  spec.state = running ? { running: true, paused: false } : { running: !!st.State.Running, paused: !!st.State.Paused };
  const resume = (fn: () => Promise<void>): Resume => {
    let done = false;
    const once = async () => {
      if (done) return;
      done = true;
      try {
        await fn();
      } finally {
        holds.release(where, spec.sourceId);
      }
    };
    return Object.assign(once, {
      keep: () => {
        done = true;
        journal.remove(where, spec.sourceId);
        holds.release(where, spec.sourceId);
      },
    });
  };
  if (!running || mode === 'none') return resume(async () => {});
  if (mode === 'pause') {
    if (!st.State.Paused) {
      progress.step(`pause ${spec.name}`);
      journal.add({ engine: where, containerId: spec.sourceId, name: spec.name, action: 'paused' });
      await engine.pause(spec.sourceId);
    }
    return resume(async () => {
      progress.step(`resume ${spec.name}`);
      await engine.unpause(spec.sourceId);
      journal.remove(where, spec.sourceId);
    });
  }
  if (st.State.Paused) await engine.unpause(spec.sourceId);
  // Containers running in this one's network namespace (--network container:<it>) are left with
  // only a loopback once it stops: they are restarted after it, to join its new namespace.
  const dependents = await networkDependents(engine, spec);
  progress.step(`stop ${spec.name}`);
  journal.add({ engine: where, containerId: spec.sourceId, name: spec.name, action: 'stopped' });
  if (st.State.Running) await stopCleanly(engine, spec.sourceId, spec.name, opts.stopTimeout, progress);
  return resume(async () => {
    progress.step(`start ${spec.name} again`);
    await engine.start(spec.sourceId);
    journal.remove(where, spec.sourceId);
    for (const d of dependents) {
      progress.step(`restart ${d.name} (it runs in ${spec.name}'s network, which the stop took away)`);
      await engine
        .restart(d.id)
        .catch((err) =>
          progress.warn(
            `${d.name} uses ${spec.name}'s network and could not be restarted: ${(err as Error).message}; restart it with: docker restart ${d.name}`,
          ),
        );
    }
  });
}

/**
 * The containers of Compose projects (`--project`), running or not, by name (sorted; one-off
 * `docker compose run` containers and ferry's own are left out). A project with no container on
 * the engine is a not-found error that lists the projects there are.
 */
export async function projectContainers(engine: Engine, projects: string[]): Promise<string[]> {
  const list = (await engine.listContainers(true)).filter((c) => !c.Labels?.[LABEL_MANAGED]);
  const names: string[] = [];
  for (const p of projects) {
    const members = list
      .filter((c) => composeProject(c.Labels) === p)
      .map((c) => (c.Names?.[0] ?? c.Id).replace(/^\//, ''));
    if (!members.length) {
      const there = [...new Set(list.map((c) => composeProject(c.Labels)).filter((x): x is string => !!x))].sort();
      throw new NotFoundError(
        `no container of Compose project ${p} on ${engine.facts.endpoint}`,
        there.length
          ? `projects there: ${there.join(', ')}`
          : 'no container there belongs to a Compose project (label com.docker.compose.project)',
      );
    }
    for (const n of members.sort()) if (!names.includes(n)) names.push(n);
  }
  return names;
}

/** Running containers whose network mode is `container:<spec>` (by id or by name). */
async function networkDependents(engine: Engine, spec: ContainerSpec): Promise<{ id: string; name: string }[]> {
  const list = await engine.listContainers(false).catch(() => []);
  const modes = new Set([`container:${spec.sourceId}`, `container:${spec.name}`]);
  return list
    .filter((c) => modes.has(String(c.HostConfig?.NetworkMode ?? '')) && c.Id !== spec.sourceId)
    .map((c) => ({ id: c.Id, name: (c.Names?.[0] ?? c.Id).replace(/^\//, '') }));
}

/**
 * Stop a container, giving it `timeoutSeconds` (default: its own stop timeout) before the engine
 * kills it, and say so when it had to be killed: a database killed mid-shutdown recovers (or not)
 * on its next start, and the operator should give it longer.
 */
export async function stopCleanly(
  engine: Engine,
  id: string,
  name: string,
  timeoutSeconds: number | undefined,
  progress: Progress,
): Promise<void> {
  await engine.stop(id, timeoutSeconds);
  const st = await engine.inspectContainer(id).catch(() => undefined);
  const state = st?.State;
  if (state?.ExitCode === 137 && !state.OOMKilled)
    progress.warn(
      `${name} did not stop within ${timeoutSeconds ?? 'its stop timeout'}${timeoutSeconds === undefined ? '' : 's'} and was killed (SIGKILL): ` +
        'what it had not flushed is lost, and a database recovers on its next start; give it longer with --stop-timeout',
    );
}

/**
 * A container an orchestrator manages, in words for the operator, or undefined. Swarm starts a
 * replacement for a task container that stops, so stopping one for a snapshot (or a cutover)
 * leaves two running; a restored one is a plain container that swarm does not manage. Pure.
 */
export function orchestratedBy(labels: Record<string, string> | undefined): string | undefined {
  const service = labels?.['com.docker.swarm.service.name'];
  return service ? `swarm service ${service}` : undefined;
}

/** A tag for the committed image: ferry/<name>:<UTC time>. */
export function snapshotRef(containerName: string, when: Date): { repo: string; tag: string } {
  const repo = `ferry/${
    containerName
      .toLowerCase()
      .replace(/[^a-z0-9_.-]/g, '-')
      .replace(/^[^a-z0-9]+/, '') || 'container'
  }`;
  return { repo, tag: utcStamp(when) };
}

export function utcStamp(d: Date): string {
  return d
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

/** Commit the writable layer. Paused/stopped by the caller, unless consistency is none. */
export async function commitContainer(
  engine: Engine,
  spec: ContainerSpec,
  ref: { repo: string; tag: string },
  mode: Consistency,
  journal: QuiesceJournal = new QuiesceJournal(),
) {
  const id = await engine.commit(spec.sourceId, ref.repo, ref.tag, {
    pause: mode === 'none',
    comment: `ferry snapshot of ${spec.name}`,
    // The lineage: a container restored from this snapshot is diffed against the same image.
    ...(spec.origin ? { author: lineageAuthor(spec.origin) } : {}),
  });
  // A run killed from here on leaves the snapshot to the next run on this engine to remove.
  journal.add({ engine: engine.facts.endpoint, containerId: id, name: `${ref.repo}:${ref.tag}`, action: 'snapshot' });
  await faultPoint('committed');
  try {
    const img = await engine.inspectImage(id);
    return { id, layers: img.RootFS?.Layers ?? [] };
  } catch (err) {
    await removeSnapshot(engine, id, journal).catch(() => {});
    throw err;
  }
}

/** Remove a snapshot image this run committed (it is then no longer this run's to undo). */
export async function removeSnapshot(
  engine: Engine,
  id: string,
  journal: QuiesceJournal = new QuiesceJournal(),
): Promise<void> {
  await engine.removeImage(id);
  journal.remove(engine.facts.endpoint, id);
}

export function hostName(): string {
  return os.hostname();
}

const MODES: readonly Consistency[] = ['pause', 'stop', 'none'];

/**
 * How a container is quiesced for its snapshot: --consistency and --stop-timeout when given,
 * else its `ferry.consistency` (pause, stop, none) and `ferry.stop-timeout` (seconds) labels,
 * else pause and its own stop timeout. A label with another value is a UsageError naming it. Pure.
 */
export function containerQuiesce(
  name: string,
  labels: Record<string, string>,
  given: { consistency?: Consistency; stopTimeout?: number },
): { mode: Consistency; stopTimeout?: number } {
  const label = labels['ferry.consistency'];
  if (given.consistency === undefined && label !== undefined && !MODES.includes(label as Consistency))
    throw new UsageError(
      `${name}: its label ferry.consistency=${label} is not pause, stop or none`,
      'fix the label, or give --consistency for this run',
    );
  const mode = given.consistency ?? (label as Consistency | undefined) ?? 'pause';
  const t = labels['ferry.stop-timeout'];
  if (given.stopTimeout === undefined && t !== undefined && !/^\d+$/.test(t))
    throw new UsageError(
      `${name}: its label ferry.stop-timeout=${t} is not a whole number of seconds`,
      'fix the label, or give --stop-timeout for this run',
    );
  const stopTimeout = given.stopTimeout ?? (t !== undefined ? Number(t) : undefined);
  return { mode, ...(stopTimeout !== undefined ? { stopTimeout } : {}) };
}
