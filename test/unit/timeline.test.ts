/** Timeline (util/timeline.ts): what a freeze was spent on, as spans from its start; overlaps kept. */
import { describe, expect, it } from 'vitest';
import { Timeline } from '../../src/util/timeline.js';

describe('Timeline', () => {
  it('keeps nothing before the freeze, then spans from its start, overlapping ones as they were', async () => {
    let now = 1000;
    const lines: string[] = [];
    const t = new Timeline(
      (m) => lines.push(m),
      () => now,
    );
    t.span('before')();
    expect(t.spans).toEqual([]);
    t.start(1000);
    now = 1100;
    t.start(1100); // the first freeze counts
    const a = t.span('commit');
    now = 1150;
    const b = t.span('list');
    now = 1200;
    b();
    now = 1300;
    a();
    a(); // once
    await expect(
      t.time('fails', async () => {
        now = 1400;
        throw new Error('x');
      }),
    ).rejects.toThrow('x');
    expect(t.spans).toEqual([
      { step: 'list', fromMs: 150, toMs: 200 },
      { step: 'commit', fromMs: 100, toMs: 300 },
      { step: 'fails', fromMs: 300, toMs: 400 },
    ]);
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/\+100\.\.\+300 ms \(200 ms\): commit/);
  });
});
