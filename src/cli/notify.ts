/**
 * --notify-url for any command (backup, verify, drill, prune): the dead-man's switch pings of
 * src/util/notify.ts around one run. URL/start before it; after it URL (success) or URL/fail,
 * each with a one-line summary. A run that throws sends fail naming its error, and the error goes
 * on as it would have. The pings never change a command's exit code or output: a URL that cannot
 * be reached is a warning.
 */
import { hostname } from 'node:os';
import { toFerryError } from '../errors.js';
import { ping } from '../util/notify.js';
import { VERSION } from '../version.js';

/** How a run that did not throw ended: ok sends success, not ok sends fail. */
export interface Outcome {
  ok: boolean;
  /** One line (only the first is sent). */
  summary: string;
}

/** The option's help, the same on every command that has it. */
export function notifyHelp(what: string): string {
  return `dead-man's switch: POST to URL/start, URL (success) or URL/fail with a one-line summary (healthchecks.io style); failures to reach it never fail the ${what}`;
}

const firstLine = (s: string) => s.split('\n')[0]!;

/**
 * Run `run` between the pings of `url` (none when url is empty: a dry run tells nobody).
 * `command` names the run in the start and failure messages.
 */
export async function notifying(
  url: string | undefined,
  command: string,
  warn: (m: string) => void,
  run: () => Promise<Outcome>,
): Promise<void> {
  if (!url) {
    await run();
    return;
  }
  await ping(url, 'start', `ferry ${VERSION} ${command} started on ${hostname()}`, warn);
  let outcome: Outcome;
  try {
    outcome = await run();
  } catch (err) {
    const message = firstLine(toFerryError(err).message);
    await ping(url, 'fail', `ferry ${command} failed on ${hostname()}: ${message}`, warn);
    throw err;
  }
  await ping(url, outcome.ok ? 'success' : 'fail', firstLine(outcome.summary), warn);
}
