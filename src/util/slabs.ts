/**
 * A small pool of 1 MiB buffers for the bulk byte path (engine socket -> bundle file).
 *
 * A backup moves gigabytes through 1 MiB slabs; allocating each one anew made V8 collect garbage
 * again and again for "external memory pressure" (docs/performance.md, Bulk reads off the engine
 * socket). A slab comes back to the pool only when its last owner says so: the bundle writer,
 * once the bytes are on disk. A slab nobody returns is simply collected, so a consumer that does
 * not know about the pool is safe.
 */
export const SLAB_SIZE = 1 << 20;
/** Slabs kept for reuse; more are allocated when all are out, and collected when returned past this. */
const POOL_MAX = 32;

const pool: Buffer[] = [];
/** Slabs handed out and not yet returned: only these come back, and a second return is ignored. */
const out = new WeakSet<ArrayBufferLike>();

export function takeSlab(): Buffer {
  const b = pool.pop() ?? Buffer.allocUnsafeSlow(SLAB_SIZE);
  out.add(b.buffer);
  return b;
}

/**
 * Give back the slab behind `chunk` (a view from its start, as the bulk reader hands them out).
 * Anything else is ignored. The caller must hold the only reference to the bytes.
 */
export function releaseSlab(chunk: Buffer): void {
  const ab = chunk.buffer;
  if (chunk.byteOffset !== 0 || !out.has(ab)) return;
  out.delete(ab);
  if (pool.length < POOL_MAX) pool.push(Buffer.from(ab, 0, SLAB_SIZE));
}
