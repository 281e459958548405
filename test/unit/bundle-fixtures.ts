/** Shared fixtures for the bundle tests (not a test file itself). */
import { expect } from 'vitest';
import type { ContainerSpec } from '../../src/model/spec.js';
import { BundleError, EXIT } from '../../src/errors.js';
import type { Manifest, MemberPlan } from '../../src/bundle/manifest.js';
import type { BundleSink } from '../../src/store/transport.js';

export const VOLUME_MEMBER = 'volumes/webdata.tar';
export const IMAGE_MEMBER = 'images/web.tar.gz';

export function containerSpec(name = 'web'): ContainerSpec {
  return {
    name,
    sourceId: '4f9d2c1b8a7e6d5c4b3a29181716151413121110f0e0d0c0b0a0908070605040',
    state: { running: true, paused: false },
    baseImage: {
      ref: 'example/web:1.4',
      id: 'sha256:7d3e5f1a9c2b4d6e8f0a1b3c5d7e9f2a4b6c8d0e1f3a5b7c9d2e4f6a8b0c1d3e',
    },
    config: { Env: ['API_TOKEN=abc123'] },
    hostConfig: { Binds: ['webdata:/srv/data'] },
    endpoints: [{ network: 'bridge' }],
    mounts: [{ type: 'volume', source: 'webdata', destination: '/srv/data', readOnly: false, origin: 'binds' }],
  };
}

/** A minimal valid manifest: one container, its image member (gzip) and one volume member (none). */
export function makeManifest(
  members: MemberPlan[] = [
    { name: VOLUME_MEMBER, kind: 'volume', codec: 'none' },
    { name: IMAGE_MEMBER, kind: 'image', codec: 'gzip' },
  ],
): Manifest {
  return {
    format: 'ferry-bundle',
    formatVersion: 1,
    ferryVersion: '0.1.0',
    createdAt: '2024-03-01T10:00:00.000Z',
    source: {
      engine: 'unix:///var/run/docker.sock',
      serverVersion: '20.10.24',
      apiVersion: '1.41',
      os: 'linux',
      arch: 'amd64',
      hostname: 'src-host',
    },
    containers: [
      {
        spec: containerSpec(),
        image: { ref: 'ferry/web:backup-20240301', member: IMAGE_MEMBER },
        volumes: ['webdata'],
        binds: [],
        consistency: 'pause',
      },
    ],
    volumes: [{ name: 'webdata', anonymous: false, driver: 'local', member: VOLUME_MEMBER }],
    networks: [],
    members,
  };
}

/** Run fn (sync or async) and return the BundleError it throws; fail the test otherwise. */
export async function bundleError(fn: () => unknown): Promise<BundleError> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a BundleError to be thrown').toBeInstanceOf(BundleError);
  const e = caught as BundleError;
  expect(e.exitCode).toBe(EXIT.BUNDLE);
  expect(e.exitCode).toBe(7);
  expect(e.code).toBe('BUNDLE');
  return e;
}

/** An in-memory BundleSink, seekable or not, that keeps what was written. */
export class MemorySink implements BundleSink {
  private buf = Buffer.alloc(64 * 1024);
  private len = 0;
  committed = false;
  aborted = false;
  writes = 0;
  patches: { position: number; length: number }[] = [];

  constructor(
    readonly seekable: boolean,
    readonly location = 'mem://bundle',
  ) {}

  get position(): number {
    return this.len;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.committed) throw new Error('write after commit');
    if (this.len + chunk.length > this.buf.length) {
      let cap = this.buf.length;
      while (cap < this.len + chunk.length) cap *= 2;
      const next = Buffer.alloc(cap);
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    chunk.copy(this.buf, this.len);
    this.len += chunk.length;
    this.writes++;
  }

  async writeAt(chunk: Buffer, position: number): Promise<void> {
    if (!this.seekable) throw new Error('writeAt on a non-seekable sink');
    if (position < 0 || position + chunk.length > this.len)
      throw new Error(`writeAt outside what was written: ${position}+${chunk.length} > ${this.len}`);
    chunk.copy(this.buf, position);
    this.patches.push({ position, length: chunk.length });
  }

  async commit(): Promise<void> {
    this.committed = true;
  }

  async abort(): Promise<void> {
    this.aborted = true;
  }

  get data(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }
}
