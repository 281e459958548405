import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { pooledRandomFill } from '../../src/ssh/ssh2.js';

describe('pooledRandomFill (ssh2 packet padding)', () => {
  it('fills exactly the range asked for, with bytes never handed out twice', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.alloc(300, 0xaa);
      pooledRandomFill(b, 10, 32);
      expect(b.subarray(0, 10).every((x) => x === 0xaa)).toBe(true);
      expect(b.subarray(42).every((x) => x === 0xaa)).toBe(true);
      const hex = b.subarray(10, 42).toString('hex');
      expect(seen.has(hex)).toBe(false); // 32 random bytes repeating means reuse
      seen.add(hex);
    }
  });

  it('serves sizes past the pool straight from the generator, and leaves crypto.randomFillSync alone', () => {
    const big = pooledRandomFill(Buffer.alloc(100_000));
    expect(big.subarray(0, 1000).some((x) => x !== 0)).toBe(true);
    expect(crypto.randomFillSync).not.toBe(pooledRandomFill);
  });
});
