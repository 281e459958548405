import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..', '..');

describe('the containerd e2e list (test/e2e/containerd-suite.txt)', () => {
  it('names only e2e files that exist, each once', () => {
    const files = readFileSync(path.join(root, 'test', 'e2e', 'containerd-suite.txt'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    expect(files.length).toBeGreaterThan(0);
    expect(new Set(files).size).toBe(files.length);
    for (const f of files) expect(existsSync(path.join(root, f)), f).toBe(true);
  });

  it('leaves out the files that name every engine themselves, so that their cases run once in CI', () => {
    const files = readFileSync(path.join(root, 'test', 'e2e', 'containerd-suite.txt'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const f of ['test/e2e/cross-engine.test.ts', 'test/e2e/engine-d.test.ts']) {
      expect(existsSync(path.join(root, f)), f).toBe(true);
      expect(files).not.toContain(f);
    }
  });
});
