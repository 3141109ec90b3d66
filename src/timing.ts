import { AsyncLocalStorage } from 'node:async_hooks';

/** Milliseconds spent waiting on each kind of dependency during one request. */
export type Timings = Record<'store' | 'target', number>;

const storage = new AsyncLocalStorage<Timings>();

export function withTimings<T>(fn: () => T): { timings: Timings; result: T } {
  const timings: Timings = { store: 0, target: 0 };
  return { timings, result: storage.run(timings, fn) };
}

/** Adds the wall time of `work` to the current request's bucket, if there is a request. */
export async function timed<T>(kind: keyof Timings, work: () => Promise<T>): Promise<T> {
  const timings = storage.getStore();
  if (!timings) return work();
  const start = performance.now();
  try {
    return await work();
  } finally {
    timings[kind] += performance.now() - start;
  }
}
