/**
 * Positioned writes with a few in flight, for sinks whose writes are round trips (the thread
 * pool for a file, the network for SFTP): the first failure is kept and thrown by the next call.
 */
export class PositionedWrites {
  position = 0;
  private readonly inflight = new Set<Promise<void>>();
  private failed?: Error;

  private throwIfFailed(): void {
    if (this.failed) throw this.failed;
  }

  constructor(
    private readonly put: (chunks: Buffer[], position: number) => Promise<void>,
    private readonly maxInflight: number,
  ) {}

  /**
   * Append at the current position (several buffers: one gathered write); waits only when
   * maxInflight writes are under way. `written` is called once the bytes have landed.
   */
  async write(data: Buffer | Buffer[], written?: () => void): Promise<void> {
    this.throwIfFailed();
    const chunks = Array.isArray(data) ? data : [data];
    const len = chunks.reduce((n, c) => n + c.length, 0);
    if (!len) return;
    const p = this.put(chunks, this.position).then(written, (err: unknown) => {
      this.failed ??= err instanceof Error ? err : new Error(String(err));
    });
    this.position += len;
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
    if (this.inflight.size >= this.maxInflight) await Promise.race(this.inflight);
    this.throwIfFailed();
  }

  /** Wait for every write under way; throw the first failure. */
  async settle(): Promise<void> {
    await Promise.all(this.inflight);
    this.throwIfFailed();
  }

  /** Patch bytes already written, once everything before has landed. */
  async writeAt(chunk: Buffer, position: number): Promise<void> {
    await this.settle();
    await this.put([chunk], position);
  }

  /** Let what is under way finish, whatever its outcome (before giving the file up). */
  async drain(): Promise<void> {
    await Promise.allSettled(this.inflight);
  }
}
