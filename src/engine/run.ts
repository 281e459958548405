/** Who this ferry run is, on every helper it creates on an engine (labels io.ferry.run, io.ferry.owner). */
import { hostname } from 'node:os';

export interface RunIdentity {
  /** This run's id, on every helper it creates, so that a failed run can sweep its own. */
  readonly id: string;
  /** Who made a helper, `host/pid`: a later run on this host can remove helpers of a killed one. */
  readonly owner: string;
  /** The host and process of `owner`. */
  readonly host: string;
  readonly pid: number;
}

/** The identity of this process's run, as of now: create it once per run and share it. */
export function createRunIdentity(): RunIdentity {
  const host = hostname();
  const pid = process.pid;
  return { id: `${pid}-${Date.now().toString(36)}`, owner: `${host}/${pid}`, host, pid };
}
