/**
 * One bundle location from the command line (`-o /backups`, `web.tar`, `ssh://host/dir`, `-`), as
 * a Transport for the backup, restore and drill operations: where a bundle is written (a store,
 * which chooses a free name, or one exact name in a store) and where one is read from (a name in
 * a store). Both sides are built when first used, so that a location that only makes sense one
 * way (a store directory has no parent to read it from) fails only when used that way.
 */
import type { BundleMeta, Store } from './store.js';
import type { BundleSink, Transport } from './transport.js';

export interface TargetSides {
  /** The store a bundle is written into, and its exact name (a location naming a file) or none (a store: it chooses). */
  write: () => { store: Store; name?: string };
  /** The store a bundle is read from, and its name there. */
  read: () => { store: Store; name: string };
}

export class StoreTarget implements Transport {
  private w?: { store: Store; name?: string };
  private r?: { store: Store; name: string };
  /** The bundle the last createBundle() made: its store and the name it chose. */
  created?: { store: Store; name: string };
  /** What createBundle() records beside the bundle (see CreateOptions.meta). */
  meta?: BundleMeta;

  constructor(
    private readonly text: string,
    private readonly sides: TargetSides,
  ) {}

  /** The side bundles are written to (built on first use). */
  get writeSide(): { store: Store; name?: string } {
    return (this.w ??= this.sides.write());
  }

  /** The side a bundle is read from (built on first use). */
  get readSide(): { store: Store; name: string } {
    return (this.r ??= this.sides.read());
  }

  describe(): string {
    return this.text;
  }

  get rereadable(): boolean {
    return this.readSide.store.capabilities.rereadable;
  }

  /** True when a bundle is written into a store under a name it chooses; false for one exact name or a stream. */
  get intoStore(): boolean {
    return this.writeSide.name === undefined && this.writeSide.store.capabilities.listable;
  }

  async createBundle(suggestedName: string): Promise<BundleSink> {
    const { store, name } = this.writeSide;
    const sink = await store.create(name ?? suggestedName, {
      ...(name !== undefined ? { replace: true } : {}),
      ...(this.meta ? { meta: this.meta } : {}),
    });
    this.created = { store, name: sink.name };
    return sink;
  }

  openBundle(): ReturnType<Store['open']> {
    const { store, name } = this.readSide;
    return store.open(name);
  }

  async close(): Promise<void> {
    await this.w?.store.close();
    if (this.r && this.r.store !== this.w?.store) await this.r.store.close();
  }
}
