/**
 * ferry drill: restore a bundle under temporary names next to the real service, start it, wait
 * until it is healthy (its healthcheck, a probe run inside it, or simply still running after a
 * short settle time), report, and remove everything it made, whatever happens.
 *
 *   restore (ops/restore.ts with the drill rewrite of plan/drill.ts, nothing started,
 *   everything recorded in an Undo the drill owns) -> start -> healthy -> probe -> cleanup
 *
 * Cleanup runs in a finally: after a pass, a failure, a timeout or SIGINT/SIGTERM. It removes
 * what the Undo recorded (containers, volumes, networks, the image unless it was already on the
 * engine), then sweeps whatever still carries this drill's label (a lost engine answer).
 */
import type { HostAccessKind } from '../plan/policy.js';
import type { Manifest } from '../bundle/manifest.js';
import type { Engine } from '../engine/engine.js';
import type { RegistryAuth } from '../engine/auth.js';
import { DrillFailedError, FerryError, toFerryError, UsageError } from '../errors.js';
import type { Transport } from '../store/transport.js';
import { checkAborted, type RunContext } from '../context.js';
import { drillName, drillRewrite, LABEL_DRILL, newDrillId } from '../plan/drill.js';
import { restore } from './restore.js';
import { Undo } from './steps/recreate.js';
import { sweepHolders } from '../data/volumes.js';
import { sleep } from '../util/sleep.js';

export interface DrillOptions {
  /** A shell command (`sh -c`) run inside a container; the drill passes when it exits 0. */
  probe?: string;
  /** The container (name in the bundle) the probe runs in; default: the first one started. */
  probeIn?: string;
  /** How long to wait, after the start, for the containers to be healthy and the probe to pass. */
  timeoutSeconds: number;
  /** Without healthcheck or probe: how long the containers must stay up. */
  settleMs?: number;
  registryAuth?: (host: string) => Promise<RegistryAuth>;
  /** The drill id (default: random). */
  id?: string;
  /** Host access the copy may have although the bundle is not signed by a trusted key (restore's --allow). */
  allow?: ReadonlySet<HostAccessKind>;
}

export interface DrillContainer {
  /** Name in the bundle. */
  name: string;
  /** Name of the drill copy. */
  drillName: string;
  id?: string;
  started: boolean;
  /** healthy (its healthcheck passed), running (no healthcheck), or what went wrong. */
  status: 'healthy' | 'running' | 'created' | 'unhealthy' | 'exited' | 'starting' | 'not created';
  exitCode?: number;
  /** Published ports of the copy: container port -> the host address the engine chose. */
  ports: { container: string; host: string }[];
  /** The last lines it logged, when the drill failed. */
  logs?: string;
}

export interface DrillReport {
  ok: boolean;
  bundle: string;
  engine: string;
  id: string;
  containers: DrillContainer[];
  timings: {
    restoreMs: number;
    startMs: number;
    healthyMs: number;
    probeMs: number;
    cleanupMs: number;
    totalMs: number;
  };
  probe?: {
    command: string;
    container: string;
    exitCode: number | null;
    attempts: number;
    output: string;
    truncated: boolean;
  };
  /** What the copy does differently from the original (ports, addresses, binds, ...). */
  notes: string[];
  /** Objects the cleanup could not remove (empty when everything is gone). */
  leftovers: string[];
  error?: FerryError;
}

const POLL_MS = 500;
const PROBE_PAUSE_MS = 1000;
const PROBE_OUTPUT = 4096;

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

export async function drill(
  engine: Engine,
  transport: Transport,
  opts: DrillOptions,
  ctx: RunContext,
): Promise<DrillReport> {
  const t0 = Date.now();
  const { progress, signal } = ctx;
  const id = opts.id ?? newDrillId();
  const undo = new Undo();
  const report: DrillReport = {
    ok: false,
    bundle: '',
    engine: engine.facts.endpoint,
    id,
    containers: [],
    timings: { restoreMs: 0, startMs: 0, healthyMs: 0, probeMs: 0, cleanupMs: 0, totalMs: 0 },
    notes: [],
    leftovers: [],
  };
  let manifest: Manifest | undefined;
  let rewrite: ReturnType<typeof drillRewrite> | undefined;
  const byName = (name: string) => report.containers.find((c) => c.name === name)!;
  // The phase under way and when it began: a failure still reports how long it ran.
  let phase: keyof DrillReport['timings'] = 'restoreMs';
  let mark = Date.now();
  const next = (p: keyof DrillReport['timings']) => {
    report.timings[phase] = Date.now() - mark;
    phase = p;
    mark = Date.now();
  };

  try {
    progress.step(`drill ${id}: restore under temporary names (${drillName(id, '*')})`);
    const res = await restore(
      engine,
      transport,
      {
        start: false,
        dryRun: false,
        onConflict: 'fail',
        restoreBinds: false,
        registryAuth: opts.registryAuth,
        undo,
        ...(opts.allow ? { allow: opts.allow } : {}),
        rewrite: (m) => {
          if (opts.probeIn && !m.containers.some((c) => c.spec.name === opts.probeIn))
            throw new UsageError(
              `--probe-in ${opts.probeIn}: the bundle has no such container (it has ${m.containers.map((c) => c.spec.name).join(', ')})`,
            );
          manifest = m;
          report.containers = m.containers.map((c) => ({
            name: c.spec.name,
            drillName: drillName(id, c.spec.name),
            started: false,
            status: 'not created',
            ports: [],
          }));
          return (rewrite = drillRewrite(m, id));
        },
      },
      ctx,
    );
    report.bundle = res.location;
    report.notes = rewrite!.notes();
    for (const n of report.notes) progress.info(`drill: ${n}`);
    for (const c of res.containers) {
      const entry = report.containers.find((x) => x.drillName === c.name)!;
      entry.id = c.id;
      entry.status = 'created';
    }

    // Start: what was running when the bundle was made (everything, when nothing was).
    next('startMs');
    const m = manifest!;
    let toStart = m.containers.filter((c) => c.spec.state.running).map((c) => c.spec.name);
    if (!toStart.length) {
      toStart = m.containers.map((c) => c.spec.name);
      report.notes.push('no container was running when the bundle was made: all are started');
    }
    for (const name of toStart) {
      checkAborted(signal);
      const c = byName(name);
      progress.step(`start ${c.drillName}`);
      try {
        await engine.start(c.id!);
      } catch (err) {
        checkAborted(signal);
        throw new DrillFailedError(`${name} did not start: ${(err as Error).message}`);
      }
      c.started = true;
      c.status = 'running';
    }

    // Healthy: healthchecks pass, nothing exits; without healthcheck or probe, a settle time.
    next('healthyMs');
    const deadline = mark + opts.timeoutSeconds * 1000;
    const started = report.containers.filter((c) => c.started);
    const check = async (): Promise<{ pending: string[] }> => {
      const pending: string[] = [];
      for (const c of started) {
        const i = await engine.inspectContainer(c.id!);
        const st = i.State;
        c.ports = ports(i);
        if (!st.Running) {
          c.status = 'exited';
          c.exitCode = st.ExitCode;
          throw new DrillFailedError(`${c.name} exited with code ${st.ExitCode}${st.Error ? ` (${st.Error})` : ''}`);
        }
        const health = st.Health?.Status;
        if (health === 'unhealthy') {
          c.status = 'unhealthy';
          const last = st.Health?.Log?.at(-1);
          throw new DrillFailedError(
            `${c.name} is unhealthy${last ? `: its healthcheck exited with ${last.ExitCode}${last.Output.trim() ? `: ${last.Output.trim().slice(0, 500)}` : ''}` : ''}`,
          );
        }
        if (health === 'healthy') c.status = 'healthy';
        else if (health) {
          c.status = 'starting';
          pending.push(c.name);
        } else c.status = 'running';
      }
      return { pending };
    };
    const hasHealth = async () => {
      for (const c of started) {
        const i = await engine.inspectContainer(c.id!);
        if (i.State.Health) return true;
      }
      return false;
    };
    if (await hasHealth()) progress.step(`wait for the healthchecks of ${started.map((c) => c.name).join(', ')}`);
    else if (!opts.probe)
      progress.step(
        `check that ${started.map((c) => c.name).join(', ')} keep running for ${seconds(opts.settleMs ?? 3000)}`,
      );
    const settleUntil = opts.probe ? 0 : mark + (opts.settleMs ?? 3000);
    for (;;) {
      checkAborted(signal);
      const { pending } = await check();
      const now = Date.now();
      if (!pending.length && now >= Math.min(settleUntil, deadline)) break;
      if (now >= deadline)
        throw new DrillFailedError(
          `not healthy within ${opts.timeoutSeconds}s: ${pending.join(', ')} still starting`,
          'raise --timeout if the service needs longer to start',
        );
      await sleep(Math.min(POLL_MS, deadline - now, Math.max(settleUntil - now, 0) || POLL_MS), signal);
    }

    // Probe: `sh -c <probe>` inside the container, again until it exits 0 or time is up.
    next('probeMs');
    if (opts.probe) {
      const target = opts.probeIn ? byName(opts.probeIn) : started[0];
      if (!target?.started)
        throw new DrillFailedError(
          `no running container to probe${opts.probeIn ? ` (${opts.probeIn} was not running when the bundle was made)` : ''}`,
        );
      const probe: NonNullable<DrillReport['probe']> = {
        command: opts.probe,
        container: target.name,
        exitCode: null,
        attempts: 0,
        output: '',
        truncated: false,
      };
      report.probe = probe;
      progress.step(`probe ${target.name}: sh -c ${JSON.stringify(opts.probe)}`);
      for (;;) {
        checkAborted(signal);
        const left = deadline - Date.now();
        if (left <= 0) throw probeTimeout(probe, opts.timeoutSeconds);
        probe.attempts++;
        const timer = AbortSignal.timeout(left);
        try {
          const r = await engine.exec(target.id!, ['sh', '-c', opts.probe], {
            keep: PROBE_OUTPUT + 1,
            signal: AbortSignal.any([signal, timer]),
          });
          probe.exitCode = r.exitCode;
          probe.truncated = r.output.length > PROBE_OUTPUT;
          probe.output = probe.truncated ? r.output.slice(-PROBE_OUTPUT) : r.output;
        } catch (err) {
          checkAborted(signal);
          if (timer.aborted) throw probeTimeout(probe, opts.timeoutSeconds, true);
          await check(); // a container that stopped says more than the failed exec
          throw new DrillFailedError(`the probe could not run in ${target.name}: ${(err as Error).message}`);
        }
        if (probe.exitCode === 0) break;
        progress.info(`probe attempt ${probe.attempts} exited with ${probe.exitCode}`);
        await check();
        await sleep(Math.min(PROBE_PAUSE_MS, deadline - Date.now()), signal);
      }
      await check(); // still up after the probe
    }
    next('cleanupMs');
    report.ok = true;
  } catch (err) {
    next('cleanupMs');
    // Interrupted: whatever broke on the way is a consequence of the signal.
    report.error = signal.aborted ? toFerryError(signal.reason) : toFerryError(err);
    report.ok = false;
    // The last words of what was started, before it is removed.
    for (const c of report.containers) {
      if (c.id && c.started) c.logs = await engine.containerLogs(c.id, 20).catch(() => undefined);
    }
  } finally {
    mark = Date.now();
    progress.step(`drill ${id}: remove everything it made`);
    engine.prepareCleanup();
    await sweepDrill(engine, id, progress);
    await sweepHolders(engine);
    await undo.run(progress, 'cleanup');
    report.leftovers = await leftovers(engine, id);
    for (const l of report.leftovers)
      progress.warn(
        `drill ${id}: could not remove ${l}; remove it by hand (docker ... ls --filter label=${LABEL_DRILL}=${id})`,
      );
    report.timings.cleanupMs = Date.now() - mark;
    report.timings.totalMs = Date.now() - t0;
  }
  if (!report.bundle) report.bundle = transport.describe();
  return report;
}

function probeTimeout(p: NonNullable<DrillReport['probe']>, timeoutSeconds: number, hung = false): DrillFailedError {
  const last = hung
    ? 'the last attempt was still running'
    : p.exitCode === null
      ? 'it never finished'
      : `the last attempt exited with ${p.exitCode}`;
  return new DrillFailedError(
    `the probe did not pass within ${timeoutSeconds}s (${p.attempts} attempt${p.attempts === 1 ? '' : 's'}; ${last})`,
    'raise --timeout if the service needs longer to start',
  );
}

/** Published ports of a container: `8080/tcp` -> `127.0.0.1:49153`. */
function ports(i: Awaited<ReturnType<Engine['inspectContainer']>>): DrillContainer['ports'] {
  const out: DrillContainer['ports'] = [];
  const p = i.NetworkSettings?.Ports ?? {};
  for (const [container, bindings] of Object.entries(p)) {
    for (const b of bindings ?? [])
      out.push({
        container,
        host: `${b.HostIp.includes(':') ? `[${b.HostIp}]` : b.HostIp || '0.0.0.0'}:${b.HostPort}`,
      });
  }
  return out;
}

/** Remove whatever carries this drill's label: containers (with their anonymous volumes), volumes, networks. */
async function sweepDrill(engine: Engine, id: string, progress: RunContext['progress']): Promise<void> {
  let found: Awaited<ReturnType<Engine['listLabelled']>>;
  try {
    found = await engine.listLabelled(`${LABEL_DRILL}=${id}`);
  } catch (err) {
    progress.warn(`drill ${id}: cannot list what it made: ${(err as Error).message}`);
    return;
  }
  // Quiet: the Undo that runs next names each object (already gone by then, which it ignores).
  const attempt = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      progress.warn(`cleanup: remove ${what} failed: ${(err as Error).message}`);
    }
  };
  for (const c of found.containers)
    await attempt(`container ${c.slice(0, 12)}`, () => engine.removeContainer(c, { force: true, volumes: true }));
  for (const v of found.volumes) await attempt(`volume ${v}`, () => engine.removeVolume(v));
  for (const n of found.networks) await attempt(`network ${n}`, () => engine.removeNetwork(n));
}

async function leftovers(engine: Engine, id: string): Promise<string[]> {
  try {
    const f = await engine.listLabelled(`${LABEL_DRILL}=${id}`);
    return [
      ...f.containers.map((c) => `container ${c.slice(0, 12)}`),
      ...f.volumes.map((v) => `volume ${v}`),
      ...f.networks.map((n) => `network ${n}`),
    ];
  } catch (err) {
    return [`(cannot tell: ${(err as Error).message})`];
  }
}
