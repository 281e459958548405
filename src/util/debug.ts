/**
 * The debug channel (`--debug`, or FERRY_DEBUG=1): one stderr line for each engine call, each
 * data path chosen and each fallback, with its reason. Created at the CLI edge and passed down
 * (RunContext.debug); silent unless asked for. Engine calls reach it through one hook, set by
 * the CLI for the run: the Engine is made far from where the channel is.
 */

/** Write one debug line (no-op when the channel is off). */
export type Debug = (message: string) => void;

export const noDebug: Debug = () => {};

/** Whether FERRY_DEBUG asks for the channel (1, true, yes, on). Pure. */
export function debugWanted(setting: string | undefined): boolean {
  return /^(1|true|yes|on)$/i.test(setting ?? '');
}

/** A channel writing `ferry: debug: <message>` lines to `out`. */
export function createDebug(out: { write(s: string): unknown }): Debug {
  return (message) => void out.write(`ferry: debug: ${message}\n`);
}

/** Engine calls (Engine's call wrapper): the endpoint and what is asked. Set by the CLI for one run. */
export const engineCalls: { hook?: (endpoint: string, what: string) => void } = {};
