/**
 * Hooks: commands run inside a container around its snapshot (`--pre-exec`, `--post-exec`, or
 * its `ferry.pre-exec` / `ferry.post-exec` labels).
 */
import type { Engine } from '../../engine/engine.js';
import type { ContainerSpec } from '../../model/spec.js';
import type { Progress } from '../../context.js';
import { HookError } from '../../errors.js';

export interface Hooks {
  pre?: string;
  post?: string;
}

/** The hooks for a container: the command line's, else its `ferry.pre-exec` / `ferry.post-exec` labels. */
export function containerHooks(labels: Record<string, string>, given: Hooks | undefined): Hooks {
  return {
    pre: given?.pre ?? labels['ferry.pre-exec'] ?? undefined,
    post: given?.post ?? labels['ferry.post-exec'] ?? undefined,
  };
}

/** Run a hook inside a running container; a non-zero exit is a HookError carrying its output's tail. */
export async function runHook(
  engine: Engine,
  spec: Pick<ContainerSpec, 'name' | 'sourceId'>,
  which: 'pre-exec' | 'post-exec',
  cmd: string,
  ctx: { progress: Progress; signal: AbortSignal },
): Promise<void> {
  const { name, sourceId: id } = spec;
  const st = await engine.inspectContainer(id);
  if (!st.State.Running || st.State.Paused) {
    ctx.progress.warn(`${name}: not running, so its ${which} hook was not run`);
    return;
  }
  ctx.progress.step(`${which} hook in ${name}`);
  const r = await engine.exec(id, ['sh', '-c', cmd], { signal: ctx.signal });
  if (r.exitCode !== 0) {
    const tail = r.output.trim().split('\n').slice(-3).join(' | ').slice(0, 300);
    throw new HookError(
      `${name}: the ${which} hook failed (exit ${r.exitCode})${tail ? `: ${tail}` : ''}`,
      which === 'pre-exec'
        ? 'the container was not snapshotted and runs on as before; fix the hook (or its ferry.pre-exec label) and retry'
        : 'the snapshot was taken; check the container',
    );
  }
}
