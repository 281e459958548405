/**
 * Finding an engine's containerd content store on its host (src/data/content-store.ts's shell
 * scripts, run here with the real sh, sed and find): containerd 2's config quotes its root in
 * single quotes, and a host may run two containerds whose stores hold some of the same blobs.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CONFIG_ROOT, LOCATE, parseListing } from '../../src/data/content-store.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'ferry-locate-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function sh(script: string, ...args: string[]) {
  const r = spawnSync('sh', ['-c', script, 'sh', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout };
}

describe('config_root', () => {
  const root = (name: string, text: string) => {
    const f = path.join(tmp, name);
    writeFileSync(f, text);
    return sh(`${CONFIG_ROOT}\nconfig_root "$1"`, f).stdout.trim();
  };

  it('reads containerd 1.x config (version 2, double quotes)', () => {
    expect(root('v2.toml', 'version = 2\nroot = "/var/lib/containerd-c"\nstate = "/run/containerd-c"\n')).toBe(
      '/var/lib/containerd-c',
    );
  });

  it("reads containerd 2's config (version 3, single quotes, as `containerd config default` writes it)", () => {
    expect(
      root(
        'v3.toml',
        "version = 3\nroot = '/var/lib/containerd-d'\nstate = '/run/containerd-d'\n[grpc]\n  address = '/run/containerd-d/containerd.sock'\n",
      ),
    ).toBe('/var/lib/containerd-d');
  });

  it('reads an indented root and none where the config names none', () => {
    expect(root('indent.toml', "  root   =   '/srv/ctrd'\n")).toBe('/srv/ctrd');
    expect(root('none.toml', "version = 3\nstate = '/run/x'\n")).toBe('');
  });
});

describe('LOCATE', () => {
  /** A content store under `root` holding these blobs (name: contents). */
  function store(root: string, blobs: Record<string, string>) {
    const d = path.join(tmp, root, 'io.containerd.content.v1.content', 'blobs', 'sha256');
    mkdirSync(d, { recursive: true });
    for (const [h, b] of Object.entries(blobs)) writeFileSync(path.join(d, h), b);
    return path.join(tmp, root);
  }
  const h = (c: string) => c.repeat(64);

  it("picks the store holding the most of the engine's blobs, when two stores share one", () => {
    // Both hold the image the engines share (a); only the second holds b and c, the engine's own.
    const first = store('one', { [h('a')]: 'shared', [h('d')]: 'x' });
    const second = store('two', { [h('a')]: 'shared', [h('b')]: 'bb', [h('c')]: 'ccc' });
    const r = sh(LOCATE, [h('a'), h('b'), h('c')].join(' '), first, second);
    expect(r.code).toBe(0);
    const listing = parseListing(r.stdout)!;
    expect(listing.dir).toBe(path.join(second, 'io.containerd.content.v1.content', 'blobs', 'sha256'));
    expect(listing.sizes).toEqual(
      new Map([
        [h('a'), 6],
        [h('b'), 2],
        [h('c'), 3],
      ]),
    );
    // Asked about the first engine's blobs, the first store.
    expect(parseListing(sh(LOCATE, [h('a'), h('d')].join(' '), first, second).stdout)!.dir).toContain('/one/');
  });

  it('fails (exit 3) where no store holds any of them', () => {
    const only = store('three', { [h('e')]: 'e' });
    expect(sh(LOCATE, h('f'), only).code).toBe(3);
  });
});
