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
});
