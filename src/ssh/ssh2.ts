/**
 * ssh2, loaded with its packet padding drawn from a pool of random bytes. A patch of ssh2's
 * internals, kept here and nowhere else.
 *
 * What it patches: ssh2's lib/protocol/crypto.js takes crypto.randomFillSync once, when it loads,
 * and calls it for the 4 to 255 bytes of padding of every packet it sends. loadSsh2() swaps
 * crypto.randomFillSync for pooledRandomFill while ssh2 loads, and restores it right after: the
 * substitution is visible to ssh2 alone.
 *
 * Why: a call into OpenSSL per 32 KiB packet is a CPU cost that grows with every byte sent. The
 * pool holds bytes from the same generator (crypto.randomFillSync, 64 KiB at a time), each handed
 * out once, so the padding is exactly as random; only the calls are fewer (the gain: see
 * docs/performance.md, ssh2 and dockerode).
 *
 * Guarded by test/unit/ssh2-patch.test.ts: it fails if ssh2 no longer takes randomFillSync from
 * the crypto module at load, or if the padding of its ciphers' packets stops coming from the pool
 * (the pool then silently unused). test/unit/ssh2-random.test.ts checks the pool itself.
 * Every use of ssh2 goes through loadSsh2(); docker-modem's SSH support (which would load ssh2
 * on its own) is replaced in engine/dockerode.ts.
 */
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Ssh2 from 'ssh2';

const POOL = 64 * 1024;
let pool = Buffer.alloc(0);
let used = 0;

/** crypto.randomFillSync's contract (buffer, offset, size), served from a pool. */
export function pooledRandomFill<T extends NodeJS.ArrayBufferView>(buf: T, offset = 0, size?: number): T {
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = size ?? view.length - offset;
  if (n > POOL / 4) return crypto.randomFillSync(buf, offset, n);
  if (used + n > pool.length) {
    pool = crypto.randomFillSync(Buffer.allocUnsafe(POOL));
    used = 0;
  }
  pool.copy(view, offset, used, used + n);
  pool.fill(0, used, used + n); // never handed out twice, never left behind
  used += n;
  return buf;
}

const require = createRequire(import.meta.url);
let ssh2: typeof Ssh2 | undefined;

/**
 * ssh2, loaded on first use (a run without ssh:// never pays its start-up: docs/performance.md,
 * ssh2 and dockerode). The
 * only way this project loads ssh2; docker-modem's copy is never loaded (engine/dockerode.ts).
 */
export function loadSsh2(): typeof Ssh2 {
  if (ssh2) return ssh2;
  const original = crypto.randomFillSync;
  (crypto as { randomFillSync: unknown }).randomFillSync = pooledRandomFill;
  try {
    ssh2 = require('ssh2') as typeof Ssh2;
  } finally {
    (crypto as { randomFillSync: unknown }).randomFillSync = original;
  }
  return ssh2;
}
