import { describe, expect, it } from 'vitest';
import { ownPipeFailure } from '../../src/cli/main.js';
import { EngineError, InterruptedError } from '../../src/errors.js';

describe('a SIGPIPE from ferry’s own write (ownPipeFailure)', () => {
  const bare = new InterruptedError('SIGPIPE');
  const abort = Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' });
  const premature = Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });

  it('lets the run’s own failure (a dropped connection) be the cause', () => {
    expect(ownPipeFailure(bare, new EngineError('ssh://newhost: connection lost'))).toBe(true);
    expect(ownPipeFailure(bare, Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))).toBe(true);
  });

  it('keeps the interruption where the failure is only the stop showing through', () => {
    for (const err of [abort, premature, new InterruptedError('SIGPIPE')])
      expect(ownPipeFailure(bare, err)).toBe(false);
  });

  it('keeps a closed stdout or stderr, and every other signal, as the cause', () => {
    const cause = new EngineError('engine went away');
    expect(ownPipeFailure(new InterruptedError('SIGPIPE', 'standard output was closed: EPIPE'), cause)).toBe(false);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
      expect(ownPipeFailure(new InterruptedError(sig), cause)).toBe(false);
  });
});
