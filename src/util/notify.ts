/**
 * Dead-man's switch pings (the healthchecks.io convention): URL/start when a run starts, URL on
 * success, URL/fail on failure, each with a short plain-text summary. A ping that cannot be
 * delivered is a warning, never a failure of the backup itself.
 */
export type PingKind = 'start' | 'success' | 'fail';

export function pingUrl(base: string, kind: PingKind): string {
  const u = base.replace(/\/+$/, '');
  return kind === 'success' ? u : `${u}/${kind}`;
}

/** The URL without its path and query (which often carry the check's secret id). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}/…`;
  } catch {
    return '(invalid URL)';
  }
}

export async function ping(
  base: string | undefined,
  kind: PingKind,
  body: string,
  warn: (m: string) => void,
  timeoutMs = 10_000,
): Promise<void> {
  if (!base) return;
  try {
    const res = await fetch(pingUrl(base, kind), {
      method: 'POST',
      body: body.slice(0, 10_000),
      signal: AbortSignal.timeout(timeoutMs),
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
    await res.arrayBuffer().catch(() => undefined);
    if (!res.ok) warn(`notify ${kind}: ${redactUrl(base)} answered ${res.status}`);
  } catch (err) {
    warn(
      `notify ${kind}: could not reach ${redactUrl(base)} (${(err as Error).message}); the run itself is not affected`,
    );
  }
}
