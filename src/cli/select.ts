/**
 * Which containers a backup takes: `--filter` for `--all`, and the plan `backup --dry-run`
 * prints (what would be held still, read and written), from inspect alone.
 */
import { InvalidArgumentError } from 'commander';
import type { Engine } from '../engine/engine.js';

export interface ContainerFilter {
  /** As given, for messages. */
  text: string;
  key: 'label' | 'name';
  /** label: the label's key; name: the glob. */
  name: string;
  /** label=<key>=<value>: the value it must have. */
  value?: string;
}

/** --filter label=<key>[=<value>] | name=<glob>. */
export function filterOption(v: string, previous: ContainerFilter[] | undefined): ContainerFilter[] {
  const m = /^(label|name)=(.+)$/.exec(v);
  if (!m) throw new InvalidArgumentError('expected label=<key>, label=<key>=<value> or name=<glob>');
  const key = m[1] as 'label' | 'name';
  let f: ContainerFilter;
  if (key === 'label') {
    const i = m[2]!.indexOf('=');
    f = i < 0 ? { text: v, key, name: m[2]! } : { text: v, key, name: m[2]!.slice(0, i), value: m[2]!.slice(i + 1) };
    if (!f.name) throw new InvalidArgumentError('expected label=<key> or label=<key>=<value>');
  } else f = { text: v, key, name: m[2]! };
  return [...(previous ?? []), f];
}

function glob(pattern: string): RegExp {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`);
}

/** Whether a container passes every filter (none: every container does). Pure. */
export function matches(
  filters: ContainerFilter[] | undefined,
  name: string,
  labels: Record<string, string> | undefined,
): boolean {
  return (filters ?? []).every((f) =>
    f.key === 'name'
      ? glob(f.name).test(name)
      : labels?.[f.name] !== undefined && (f.value === undefined || labels[f.name] === f.value),
  );
}

export interface PlannedContainer {
  name: string;
  state: 'running' | 'paused' | 'stopped';
  /** How it would be held still: --consistency, else its ferry.consistency label, else pause. */
  consistency: string;
  image: string;
  volumes: string[];
  binds: string[];
}

export interface PlannedBundle {
  containers: PlannedContainer[];
}

/** One bundle per group: what each container is, from inspect. Reads only. */
export async function backupPlan(
  engine: Engine,
  groups: string[][],
  consistency: string | undefined,
): Promise<PlannedBundle[]> {
  const out: PlannedBundle[] = [];
  for (const group of groups) {
    const containers: PlannedContainer[] = [];
    for (const n of group) {
      const i = await engine.inspectContainer(n);
      const label = i.Config.Labels?.['ferry.consistency'];
      containers.push({
        name: i.Name.replace(/^\//, ''),
        state: i.State.Paused ? 'paused' : i.State.Running ? 'running' : 'stopped',
        consistency: consistency ?? label ?? 'pause',
        image: i.Config.Image,
        volumes: (i.Mounts ?? []).filter((m) => m.Type === 'volume').map((m) => m.Name ?? ''),
        binds: (i.Mounts ?? []).filter((m) => m.Type === 'bind').map((m) => m.Source ?? ''),
      });
    }
    out.push({ containers });
  }
  return out;
}

export function backupPlanText(plan: PlannedBundle[], output: string): string {
  const lines = [
    `dry run: nothing was paused, read or written. backup -o ${output} would write ${plan.length} bundle${plan.length === 1 ? '' : 's'}:`,
  ];
  for (const b of plan) {
    lines.push(`  bundle of ${b.containers.map((c) => c.name).join(', ')}`);
    for (const c of b.containers) {
      lines.push(
        `    ${c.name} (${c.state}, image ${c.image}): ${c.consistency === 'none' ? 'not held still' : c.consistency === 'stop' ? 'stopped' : 'paused'} while its layer is committed${c.volumes.length ? ' and its volumes read' : ''}`,
      );
      for (const v of c.volumes) lines.push(`      volume ${v}`);
      for (const x of c.binds) lines.push(`      bind ${x} (recorded; its data with --include-binds)`);
    }
  }
  return lines.join('\n') + '\n';
}
