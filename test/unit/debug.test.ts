import { describe, expect, it } from 'vitest';
import { createDebug, debugWanted } from '../../src/util/debug.js';

describe('the debug channel', () => {
  it('FERRY_DEBUG turns it on with 1, true, yes or on (any case); anything else leaves it off', () => {
    for (const v of ['1', 'true', 'YES', 'On']) expect(debugWanted(v), v).toBe(true);
    for (const v of [undefined, '', '0', 'off', 'debug']) expect(debugWanted(v), String(v)).toBe(false);
  });
  it('writes one prefixed line per message', () => {
    const out: string[] = [];
    const debug = createDebug({ write: (s: string) => out.push(s) });
    debug('volume v: host-tar');
    debug('image i: engine-save (fallback from layer-store: FERRY_HOST_LAYERS=0)');
    expect(out).toEqual([
      'ferry: debug: volume v: host-tar\n',
      'ferry: debug: image i: engine-save (fallback from layer-store: FERRY_HOST_LAYERS=0)\n',
    ]);
  });
});
