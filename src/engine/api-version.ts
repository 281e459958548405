/**
 * Which Engine API version ferry speaks to an engine, from that engine's `GET /version` answer.
 *
 * ferry asks for the newest version both sides know: the engine's own, capped at the newest one
 * ferry was written against (CLIENT_MAX_API). Never a fixed version: Docker 29.0–29.2 refuse
 * anything below 1.44 ("client version 1.41 is too old"), and Debian's 20.10 knows nothing above
 * 1.41. Podman's Docker-compatible API reports 1.41 whatever its own version.
 */

/**
 * The newest Engine API version whose requests and answers ferry knows. 1.48 (Docker 28): the
 * image save takes `platform` (engine.saveImages); what else 1.48 changes adds fields ferry does
 * not read (image and container inspect's descriptors, an endpoint's GwPriority).
 */
export const CLIENT_MAX_API = '1.48';

/** The fields of a `GET /version` answer that decide the version. */
export interface VersionAnswer {
  ApiVersion: string;
  MinAPIVersion?: string;
  Version?: string;
  Components?: { Name: string }[];
}

export interface Negotiated {
  /** The version requests carry (`/v1.45/...`), or undefined to send them unversioned. */
  version?: string;
  /** The API version the engine answers in: what to compare features against. */
  api: string;
  /** The engine is Podman (its compat API names a "Podman Engine" component). */
  podman: boolean;
}

/** -1, 0 or 1 as API version a is older than, the same as, or newer than b ("1.41" < "1.45"). */
export function compareApi(a: string, b: string): number {
  const [a1 = 0, a2 = 0] = a.split('.').map(Number);
  const [b1 = 0, b2 = 0] = b.split('.').map(Number);
  return Math.sign(a1 - b1 || a2 - b2);
}

/** Pure; unit-tested with the answers of Docker 20.10, 26 and 29 and Podman 4 and 5. */
export function negotiateApi(answer: VersionAnswer, clientMax: string = CLIENT_MAX_API): Negotiated {
  const podman = (answer.Components ?? []).some((c) => /podman/i.test(c.Name));
  const api = compareApi(answer.ApiVersion, clientMax) > 0 ? clientMax : answer.ApiVersion;
  // An engine whose oldest version is newer than the newest ferry knows: unversioned requests get
  // the engine's own version, the closest there is to one ferry knows.
  if (answer.MinAPIVersion && compareApi(api, answer.MinAPIVersion) < 0) return { api: answer.ApiVersion, podman };
  return { version: `v${api}`, api, podman };
}
