import { describe, expect, it } from 'vitest';
import { bundleFileName } from '../../src/pipeline/backup.js';

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
