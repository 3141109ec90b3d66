/**
 * Runs tasks with the same key one at a time, in arrival order; different keys run freely.
 * In-process half of the per-role serialization (the advisory lock on the target covers other
 * replicas): without it, every waiter on one role's advisory lock would hold one of the mount's
 * few connections, and other roles' issues would stall behind them.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    try {
      return await task();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
