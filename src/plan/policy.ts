/**
 * The restore policy, the pure part: which settings of a container give it the host, and which
 * of those a restore may create. A bundle from a shared store may have been written by anyone
 * who can write there; a container created from it runs as the recovery host's Docker does
 * (root). So a restore of a bundle that is not signed by a trusted key (--trust) refuses these
 * settings unless the operator allows each kind (`--allow privileged,host-binds,...`); a bundle
 * whose signature --trust accepts restores as it was made. `ferry inspect` and
 * `restore --dry-run` list them. No I/O here; unit-tested in test/unit/policy.test.ts.
 */
import { parseBind, type ContainerSpec } from '../model/spec.js';
import { UsageError } from '../errors.js';

export const HOST_ACCESS_KINDS = [
  'privileged',
  'host-binds',
  'host-network',
  'host-pid',
  'host-ipc',
  'devices',
  'capabilities',
  'unconfined',
] as const;
export type HostAccessKind = (typeof HOST_ACCESS_KINDS)[number];

/** One setting that gives a container the host. */
export interface HostAccess {
  container: string;
  kind: HostAccessKind;
  /** What it is, for messages: `bind /etc -> /host-etc`, `--cap-add SYS_ADMIN`, ... */
  detail: string;
}

/**
 * Host paths whose bind gives a container the host: the path itself, anything under it, and
 * anything above it (a bind of /var holds /var/run/docker.sock and /var/lib/docker).
 */
export const SENSITIVE_PATHS = [
  '/etc',
  '/root',
  '/home',
  '/boot',
  '/proc',
  '/sys',
  '/dev',
  '/run',
  '/var/run',
  '/var/lib/docker',
  '/var/lib/containerd',
  '/var/lib/kubelet',
  '/usr',
  '/bin',
  '/sbin',
  '/lib',
  '/lib32',
  '/lib64',
];

/** Capabilities that reach past the container (SYS_ADMIN-class); NET_ADMIN and the like act in its own namespaces. */
export const HOST_CAPABILITIES = [
  'ALL',
  'SYS_ADMIN',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_PTRACE',
  'SYS_BOOT',
  'SYS_TIME',
  'DAC_READ_SEARCH',
  'MAC_ADMIN',
  'MAC_OVERRIDE',
  'BPF',
  'PERFMON',
];

/** `/var/run/../etc/` -> `/etc`: a host path with `.`, `..` and repeated or trailing slashes resolved. */
export function normalPath(p: string): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (!part || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return '/' + out.join('/');
}

/** Whether a bind of this host path gives the container the host. */
export function isSensitivePath(source: string): boolean {
  const p = normalPath(source);
  if (p === '/') return true;
  return SENSITIVE_PATHS.some((s) => p === s || p.startsWith(s + '/') || s.startsWith(p + '/'));
}

function bindsOf(spec: ContainerSpec): { source: string; destination: string }[] {
  const out: { source: string; destination: string }[] = [];
  for (const b of spec.hostConfig.Binds ?? []) {
    const p = parseBind(b);
    if (p.source.startsWith('/')) out.push({ source: p.source, destination: p.destination });
  }
  for (const m of spec.hostConfig.Mounts ?? [])
    if (m.Type === 'bind' && typeof m.Source === 'string')
      out.push({ source: m.Source, destination: typeof m.Target === 'string' ? m.Target : '?' });
  return out;
}

/** Every setting of a container that gives it the host, in HOST_ACCESS_KINDS order. */
export function hostAccess(spec: ContainerSpec): HostAccess[] {
  const hc = spec.hostConfig;
  const out: HostAccess[] = [];
  const add = (kind: HostAccessKind, detail: string) => out.push({ container: spec.name, kind, detail });
  if (hc.Privileged === true) add('privileged', '--privileged');
  for (const b of bindsOf(spec))
    if (isSensitivePath(b.source)) add('host-binds', `bind of host ${b.source} -> ${b.destination}`);
  if (hc.NetworkMode === 'host') add('host-network', "the host's network namespace (--network host)");
  if (hc.PidMode === 'host') add('host-pid', "the host's process namespace (--pid host)");
  if (hc.IpcMode === 'host') add('host-ipc', "the host's IPC namespace (--ipc host)");
  for (const d of hc.Devices ?? [])
    add('devices', `device ${d.PathOnHost ?? '?'} -> ${d.PathInContainer || d.PathOnHost || '?'}`);
  for (const r of hc.DeviceCgroupRules ?? []) add('devices', `device cgroup rule ${JSON.stringify(r)}`);
  for (const c of hc.CapAdd ?? []) {
    const cap = c.toUpperCase().replace(/^CAP_/, '');
    if (HOST_CAPABILITIES.includes(cap)) add('capabilities', `--cap-add ${cap}`);
  }
  for (const o of hc.SecurityOpt ?? [])
    if (/^(seccomp|apparmor)[=:]unconfined$/.test(o) || /^label[=:]disable$/.test(o))
      add('unconfined', `--security-opt ${o}`);
  return out;
}

/** `--allow privileged,host-binds` (repeatable; `all` for every kind). UsageError for an unknown kind. */
export function parseAllow(values: string[] | undefined): Set<HostAccessKind> {
  const out = new Set<HostAccessKind>();
  for (const v of (values ?? []).flatMap((x) => x.split(','))) {
    const k = v.trim();
    if (!k) continue;
    if (k === 'all') HOST_ACCESS_KINDS.forEach((x) => out.add(x));
    else if ((HOST_ACCESS_KINDS as readonly string[]).includes(k)) out.add(k as HostAccessKind);
    else
      throw new UsageError(
        `--allow ${k}: not a kind of host access`,
        `the kinds: ${HOST_ACCESS_KINDS.join(', ')}, all`,
      );
  }
  return out;
}

/**
 * What a restore would refuse: the host access of these specs that `allow` does not allow; none
 * when the bundle's signer is trusted (it restores as it was made).
 */
export function refusedAccess(found: HostAccess[], allow: ReadonlySet<HostAccessKind>, trusted: boolean): HostAccess[] {
  return trusted ? [] : found.filter((f) => !allow.has(f.kind));
}

/** The --allow value that would let `refused` through: its kinds, in HOST_ACCESS_KINDS order. */
export function allowFor(refused: HostAccess[]): string {
  return HOST_ACCESS_KINDS.filter((k) => refused.some((r) => r.kind === k)).join(',');
}
