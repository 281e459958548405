/**
 * The one fallback rule of the data paths (src/data/paths.ts): a path refuses before its first
 * byte, or fails after it for a reason of its own; either way the next path carries the data and
 * the result says from which path it fell back, and why.
 */
import { describe, expect, it } from 'vitest';
import { firstOpen, redoWith, refused, withFallback, type Carried, type PathOption } from '../../src/data/paths.js';

const opens = <T>(path: PathOption<T>['path'], value: T, count?: { n: number }): PathOption<T> => ({
  path,
  open: async () => {
    if (count) count.n++;
    return value;
  },
});
const refuses = <T>(path: PathOption<T>['path'], reason: string, count?: { n: number }): PathOption<T> => ({
  path,
  open: async () => {
    if (count) count.n++;
    return refused(reason);
  },
});

describe('firstOpen: the first path that opens carries the data', () => {
  it('the first opens: it carries, with no fallback, and the next is never opened', async () => {
    const next = { n: 0 };
    const lines: string[] = [];
    const r = await firstOpen('volume v', [opens('host-tar', 'disk'), opens('engine-archive', 'api', next)], (m) =>
      lines.push(m),
    );
    expect(r).toEqual({ value: 'disk', carried: { path: 'host-tar' } });
    expect(next.n).toBe(0);
    expect(lines).toEqual(['volume v: host-tar']);
  });

  it('a refusal: the next carries, and the fallback names the path refused and why', async () => {
    const lines: string[] = [];
    const r = await firstOpen(
      'volume v',
      [refuses<string>('host-tar', 'FERRY_HOST_VOLUMES=0'), opens('engine-archive', 'api')],
      (m) => lines.push(m),
    );
    expect(r).toEqual({
      value: 'api',
      carried: { path: 'engine-archive', fallback: { from: 'host-tar', reason: 'FERRY_HOST_VOLUMES=0' } },
    });
    expect(lines).toEqual([
      'volume v: not host-tar: FERRY_HOST_VOLUMES=0',
      'volume v: engine-archive (fallback from host-tar: FERRY_HOST_VOLUMES=0)',
    ]);
  });

  it('several refusals: the last one before the carrier is the fallback', async () => {
    const r = await firstOpen('volume v', [
      refuses<string>('host-tar', 'Podman'),
      refuses<string>('helper-tar', 'the image has no tar a helper can run'),
      opens('engine-archive', 'api'),
    ]);
    expect(r.carried).toEqual({
      path: 'engine-archive',
      fallback: { from: 'helper-tar', reason: 'the image has no tar a helper can run' },
    });
  });

  it('a path that fails (not a refusal) fails the run: no other path is tried', async () => {
    const next = { n: 0 };
    const failing: PathOption<string> = {
      path: 'host-tar',
      open: () => Promise.reject(new Error('ssh connection lost')),
    };
    await expect(firstOpen('volume v', [failing, opens('engine-archive', 'api', next)])).rejects.toThrow(
      'ssh connection lost',
    );
    expect(next.n).toBe(0);
  });

  it('every path refusing is a bug, said as such', async () => {
    await expect(firstOpen('volume v', [refuses('host-tar', 'no'), refuses('engine-archive', 'nor')])).rejects.toThrow(
      /internal: no data path for volume v \(last: engine-archive: nor\)/,
    );
  });
});

describe('redoWith: after the first byte, only a failure that is the path`s own', () => {
  it('says no to a failure without a reason, and opens nothing', async () => {
    const next = { n: 0 };
    const carried: Carried = { path: 'layer-store' };
    const redo = redoWith('image i', carried, () => undefined, opens('engine-save', 'save', next));
    expect(redo.when(new Error('disk full'))).toBe(false);
    expect(next.n).toBe(0);
    expect(carried).toEqual({ path: 'layer-store' });
  });

  it('takes the next path for its own failure, and records it in the result', async () => {
    const carried: Carried = { path: 'layer-store' };
    const notes: string[] = [];
    const lines: string[] = [];
    const own = new Error('layer 0123 ended 5 bytes early');
    const redo = redoWith(
      'image i',
      carried,
      (err) => (err === own ? own.message : undefined),
      opens('engine-save', 'save'),
      { debug: (m) => lines.push(m), note: (m) => notes.push(m) },
    );
    expect(redo.when(own)).toBe(true);
    expect(await redo.open(own)).toBe('save');
    expect(carried).toEqual({
      path: 'engine-save',
      fallback: { from: 'layer-store', reason: 'layer 0123 ended 5 bytes early' },
    });
    expect(notes).toEqual(['layer 0123 ended 5 bytes early']);
    expect(lines).toEqual(['image i: fallback from layer-store to engine-save: layer 0123 ended 5 bytes early']);
  });
});

describe('withFallback: both halves around one use of the data', () => {
  const mismatch = new Error('the layer store did not give the image');
  const why = (err: unknown) => (err === mismatch ? mismatch.message : undefined);

  it('the primary carries: used once', async () => {
    const used: string[] = [];
    const r = await withFallback(
      'image i',
      opens('layer-store', 'store'),
      opens('engine-save', 'save'),
      async (v) => {
        used.push(v);
        return v.length;
      },
      why,
    );
    expect(r).toEqual({ result: 5, carried: { path: 'layer-store' } });
    expect(used).toEqual(['store']);
  });

  it('the primary refuses: the next is used, once, and the refusal is the fallback', async () => {
    const used: string[] = [];
    const r = await withFallback(
      'image i',
      refuses<string>('layer-store', 'FERRY_HOST_LAYERS=0'),
      opens('engine-save', 'save'),
      async (v) => used.push(v),
      why,
    );
    expect(used).toEqual(['save']);
    expect(r.carried).toEqual({
      path: 'engine-save',
      fallback: { from: 'layer-store', reason: 'FERRY_HOST_LAYERS=0' },
    });
  });

  it('the primary fails half-way for its own reason: used again from the start on the next', async () => {
    const used: string[] = [];
    const r = await withFallback(
      'image i',
      opens('layer-store', 'store'),
      opens('engine-save', 'save'),
      async (v) => {
        used.push(v);
        if (v === 'store') throw mismatch;
        return 'loaded';
      },
      why,
    );
    expect(used).toEqual(['store', 'save']);
    expect(r).toEqual({
      result: 'loaded',
      carried: { path: 'engine-save', fallback: { from: 'layer-store', reason: mismatch.message } },
    });
  });

  it('any other failure of the primary is the run`s: rethrown, the next never opened', async () => {
    const next = { n: 0 };
    const other = new Error('the target refused the archive');
    await expect(
      withFallback(
        'image i',
        opens('layer-store', 'store'),
        opens('engine-save', 'save', next),
        async () => {
          throw other;
        },
        why,
      ),
    ).rejects.toBe(other);
    expect(next.n).toBe(0);
  });

  it('the fallback failing is not tried again: its failure is the run`s', async () => {
    const used: string[] = [];
    await expect(
      withFallback(
        'image i',
        refuses<string>('layer-store', 'Podman'),
        opens('engine-save', 'save'),
        async (v) => {
          used.push(v);
          throw mismatch; // even a failure that would have been the primary's own
        },
        why,
      ),
    ).rejects.toBe(mismatch);
    expect(used).toEqual(['save']);
  });
});
