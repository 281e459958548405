/** The pure formatting of progress (src/cli/render.ts): stream lines, the frozen line, the summaries. */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createProgress, frozenLine, streamLine, summaryLine, summaryTable } from '../../src/cli/render.js';

const MiB = 1024 * 1024;

describe('a finished stream in plain output', () => {
  it('has its bytes of its total, percentage, time, rate and data path', () => {
    expect(
      streamLine({
        label: 'volumes/data.tar.zst',
        bytes: 400 * MiB,
        total: 400 * MiB,
        firstMs: 0,
        lastMs: 4000,
        path: 'host-tar',
      }),
    ).toBe('volumes/data.tar.zst: 400.0 MiB / 400.0 MiB  100%  in 4.0s  100.0 MiB/s  via host-tar');
  });
  it('leaves out what is not known: no total, too short for a rate, no path', () => {
    expect(streamLine({ label: 'image web', bytes: 2048, firstMs: 100, lastMs: 200 })).toBe(
      'image web: 2.0 KiB  in 0.1s',
    );
  });
  it('caps the percentage at 100 when the total was an estimate below what came', () => {
    expect(streamLine({ label: 'v', bytes: 2 * MiB, total: 1.9 * MiB, firstMs: 0, lastMs: 100 })).toMatch(/ 100% /);
  });
});

describe('the frozen line', () => {
  it('names each container still frozen and for how long; none once all run again', () => {
    const frozen = [
      { name: 'web', how: 'paused' as const, sinceMs: 1000 },
      { name: 'db', how: 'stopped' as const, sinceMs: 0, ms: 800 },
    ];
    expect(frozenLine(frozen, 4500)).toBe('paused: web (0:04)');
    expect(frozenLine([{ ...frozen[0]!, ms: 3000 }], 9000)).toBeUndefined();
  });
});

describe('the one-line summary of plain output', () => {
  it('says how long, how much in how many streams, the rate, and how long each source was frozen', () => {
    const moved = [
      { label: 'volumes/data.tar.zst', bytes: 300 * MiB, firstMs: 0, lastMs: 2000 },
      { label: 'images/web.tar.gz', bytes: 100 * MiB, firstMs: 0, lastMs: 1000 },
    ];
    expect(summaryLine(moved, 4000, [{ name: 'web', how: 'paused', sinceMs: 0, ms: 1234 }])).toBe(
      'done in 4.0s: 400.0 MiB moved in 2 streams (100.0 MiB/s); web paused 1.2s',
    );
    expect(summaryLine([], 300)).toBe('done in 0.3s'); // a run that moved no data (prune, clean)
  });
});

describe('the summary table', () => {
  it('adds a PATH column when a data path is known, and a line per frozen container', () => {
    expect(
      summaryTable(
        [
          { label: 'volume data', bytes: 200 * MiB, firstMs: 0, lastMs: 2000, path: 'host-tar -> host-tar' },
          { label: 'image web', bytes: 4096, firstMs: 0, lastMs: 10 },
        ],
        3000,
        [{ name: 'web', how: 'paused', sinceMs: 0, ms: 500 }],
      ),
    ).toBe(
      [
        '  MOVED        BYTES      TIME  RATE         PATH',
        '  volume data  200.0 MiB  2.0s  100.0 MiB/s  host-tar -> host-tar',
        '  image web    4.0 KiB    0.0s  -            -',
        '  total        200.0 MiB  3.0s',
        '  web paused 0.5s',
        '',
      ].join('\n'),
    );
  });
});

/** A plain renderer writing into a string (not a terminal). */
function plain(quiet = false) {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => (text += d));
  const p = createProgress({ quiet, stream: out as unknown as NodeJS.WriteStream });
  return { p, text: () => text };
}

describe('plain output', () => {
  it('is a line per step, a line per stream with its figures, then one summary line', () => {
    const { p, text } = plain();
    p.step('volume data -> volumes/data.tar.zst');
    p.frozen?.('web', 'paused');
    p.bytes('volumes/data.tar.zst', MiB, 2 * MiB);
    p.via?.('volumes/data.tar.zst', 'host-tar');
    p.bytes('volumes/data.tar.zst', 2 * MiB, 2 * MiB);
    p.frozen?.('web', 'paused', 1500);
    p.done();
    const lines = text().trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe('ferry: volume data -> volumes/data.tar.zst');
    expect(lines[1]).toMatch(
      /^ferry: volumes\/data\.tar\.zst: 2\.0 MiB \/ 2\.0 MiB {2}100% {2}in \d+\.\ds {2}via host-tar$/,
    );
    expect(lines[2]).toMatch(/^ferry: done in \d+\.\ds: 2\.0 MiB moved in 1 stream; web paused 1\.5s$/);
  });
  it('ends a failed run with where it failed and what it had moved; --quiet with nothing', () => {
    const { p, text } = plain();
    p.step('image web -> images/web.tar.gz');
    p.bytes('images/web.tar.gz', 1024);
    p.done(true);
    p.done(); // a later call does not change how it ended
    expect(text().trimEnd().split('\n').at(-1)).toMatch(
      /^ferry: failed at image web -> images\/web\.tar\.gz after \d+\.\ds \(1\.0 KiB moved\)$/,
    );
    expect(text()).not.toMatch(/done in/);
    const q = plain(true);
    q.p.step('x');
    q.p.bytes('x', 5);
    q.p.done();
    expect(q.text()).toBe('');
  });
});

describe('a run in parts (backup --all: one bundle after another)', () => {
  it('a step after the end begins a part with its own figures and summary; a repeated end is ignored', () => {
    const { p, text } = plain();
    p.step('volume a -> volumes/a.tar.zst');
    p.bytes('volumes/a.tar.zst', 1024);
    p.done();
    p.done(true); // a finally block after the success: not a failure
    p.step('volume b -> volumes/b.tar.zst');
    p.bytes('volumes/b.tar.zst', 2048);
    p.done(true);
    const lines = text().trimEnd().split('\n');
    expect(lines.filter((l) => /^ferry: done in /.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /^ferry: failed at /.test(l))).toEqual([
      expect.stringMatching(/^ferry: failed at volume b -> volumes\/b\.tar\.zst after [\d.]+s \(2\.0 KiB moved\)$/),
    ]);
    // each part's streams in its own figures: b's are not a's again
    expect(lines.filter((l) => /^ferry: volumes\/a\.tar\.zst: /.test(l))).toHaveLength(1);
    expect(lines.filter((l) => /^ferry: volumes\/b\.tar\.zst: /.test(l))).toHaveLength(1);
  });
});

describe('an interrupted run', () => {
  it('ends naming the step it was stopped at, not the steps that put things back', async () => {
    const { interrupted } = await import('../../src/cli/render.js');
    const { p, text } = plain();
    p.step('volume data -> volumes/data.tar.zst');
    interrupted();
    p.step('resume web');
    p.done(true);
    expect(text().trimEnd().split('\n').at(-1)).toMatch(
      /^ferry: failed at volume data -> volumes\/data\.tar\.zst after /,
    );
  });
});
