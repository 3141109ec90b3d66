export interface WaitOptions {
  /** Give up after this long, by throwing. */
  timeoutMs: number;
  /** What is awaited, for the error: "the transaction to end". */
  what: string;
  /** Pause between checks. */
  intervalMs?: number;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Checks `condition` until it returns a truthy value, and returns that value. A condition that
 * never holds within `timeoutMs` throws (as graphile/worker's `sleepUntil` does): a poller never
 * gives up silently and lets the test go on as if it had held. The condition runs at least once,
 * and once more at the deadline.
 */
export async function waitUntil<T>(
  condition: () => T | Promise<T>,
  { timeoutMs, what, intervalMs = 50 }: WaitOptions,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<T>;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(Math.min(intervalMs, left));
  }
}
