/**
 * The one JSON schema of `--json` (docs/json.md, docs/json-schema.json): every command prints one
 * object on one line, with `schemaVersion`, `command` and `ok`, and `error` when it failed. The
 * same thing has the same name everywhere: `createdAt` (a bundle's time), `fileBytes` (a
 * bundle file's size), `storedBytes` (members as stored), `rawBytes` (before compression),
 * `durationMs`, `ports` as {hostIp, hostPort, containerPort}, `containers` as names.
 */

/** Bumped when a field changes its name or meaning (new fields do not bump it). */
export const JSON_SCHEMA_VERSION = 1;

export interface JsonError {
  code: string;
  exitCode: number;
  message: string;
  hint: string | null;
}

export function errorJson(fe: { code: string; exitCode: number; message: string; hint?: string }): JsonError {
  return { code: fe.code, exitCode: fe.exitCode, message: fe.message, hint: fe.hint ?? null };
}

/** The envelope: schemaVersion and command first, then ok, then the command's fields. */
export function envelope(command: string, body: { ok: boolean } & Record<string, unknown>): string {
  return JSON.stringify({ schemaVersion: JSON_SCHEMA_VERSION, command, ...body }) + '\n';
}

export interface JsonPort {
  /** The host address it is published on; "" for every address. */
  hostIp: string;
  /** The host port; "" when the engine picks one. */
  hostPort: string;
  /** The container's port and protocol, e.g. "80/tcp". */
  containerPort: string;
}

/** Ports from a HostConfig.PortBindings map (inspect). */
export function portsFromBindings(pb: unknown): JsonPort[] {
  const out: JsonPort[] = [];
  for (const [port, binds] of Object.entries(
    (pb ?? {}) as Record<string, { HostIp?: string; HostPort?: string }[] | null>,
  ))
    for (const b of binds ?? [{}])
      out.push({ hostIp: b.HostIp ?? '', hostPort: b.HostPort ?? '', containerPort: port });
  return out;
}

/** restore's plan lines `[ip:]hostport -> port/proto` (hostport "(any)": the engine picks). */
export function portFromPlan(line: string): JsonPort {
  const m = /^(?:\[([^\]]+)\]:|([^\s[\]]*):)?(\S+) -> (\S+)$/.exec(line);
  if (!m) return { hostIp: '', hostPort: '', containerPort: line };
  const hostPort = m[3] === '(any)' ? '' : m[3]!;
  return { hostIp: m[1] ?? m[2] ?? '', hostPort, containerPort: m[4]! };
}

/** drill's `{container: "80/tcp", host: "0.0.0.0:32768"}`. */
export function portFromDrill(p: { container: string; host: string }): JsonPort {
  const i = p.host.lastIndexOf(':');
  const ip = i < 0 ? '' : p.host.slice(0, i).replace(/^\[|\]$/g, '');
  return { hostIp: ip, hostPort: i < 0 ? p.host : p.host.slice(i + 1), containerPort: p.container };
}

/** The name of the subcommand in argv (for an error found before it ran), else "ferry". */
export function commandOf(argv: string[], names: string[]): string {
  return argv.slice(2).find((a) => names.includes(a)) ?? 'ferry';
}
