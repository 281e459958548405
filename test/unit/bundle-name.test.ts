import { describe, expect, it } from 'vitest';
import { bundleFileName } from '../../src/ops/backup.js';
import { tempName, uniqueBundleName } from '../../src/store/local.js';
import { staleRemoteTemps } from '../../src/store/sftp.js';

describe('bundleFileName', () => {
  const when = new Date('2026-11-23T02:15:00.123Z');
  it('names a bundle after its container, or its Compose project, or its first container and how many more', () => {
    expect(bundleFileName(['web'], when)).toBe('ferry-web-20261123T021500Z.tar');
    expect(bundleFileName(['web'], when, 'shop')).toBe('ferry-web-20261123T021500Z.tar');
    expect(bundleFileName(['shop_db_1', 'shop_web_1'], when, 'shop')).toBe('ferry-shop-20261123T021500Z.tar');
    expect(bundleFileName(['web', 'db', 'cache'], when)).toBe('ferry-web-and-2-more-20261123T021500Z.tar');
  });

  it('keeps the name to characters safe in a file name', () => {
    expect(bundleFileName(['a', 'b'], when, 'my project/x')).toBe('ferry-my_project_x-20261123T021500Z.tar');
  });
});

describe('names in a store', () => {
  it('uniqueBundleName skips names taken, being written (a temporary of any run) or quarantined', () => {
    expect(uniqueBundleName([], 'a.tar')).toBe('a.tar');
    expect(uniqueBundleName(['a.tar'], 'a.tar')).toBe('a-2.tar');
    expect(uniqueBundleName(['a.tar', tempName(12, 'a-2.tar'), 'a-3.tar.corrupt'], 'a.tar')).toBe('a-4.tar');
  });

  it('staleRemoteTemps: only temporaries, and only those untouched for a day', () => {
    const now = Date.parse('2026-12-02T12:00:00Z');
    const at = (h: number) => (now - h * 3600 * 1000) / 1000;
    const list = [
      { filename: tempName(1, 'old.tar'), attrs: { mtime: at(25) } },
      { filename: tempName(2, 'recent.tar'), attrs: { mtime: at(23) } },
      { filename: 'ferry-web-20200101T000000Z.tar', attrs: { mtime: at(1000) } },
      { filename: '.ferry.lock', attrs: { mtime: at(1000) } },
      { filename: '.ferry-x-old.tar.partial', attrs: { mtime: at(1000) } }, // not a name ferry gives
    ];
    expect(staleRemoteTemps(list, now)).toEqual([tempName(1, 'old.tar')]);
  });
});
