import { isRetryable } from './errors.js';

/**
 * How requests are retried on connection errors and 5xx (never on 4xx): exponential backoff from
 * `baseMs` to `maxMs` with full jitter, so many clients of a restarted broker do not come back at
 * once. `attempts` bounds the tries; `until` (a time in ms) keeps trying up to then instead.
 *
 * @example
 * ```ts
 * const broker = new Broker({ retry: { attempts: 8, baseMs: 200, maxMs: 5000 } });
 * ```
 */
export interface RetryOptions {
  attempts?: number;
  baseMs?: number;
  maxMs?: number;
}

/**
 * The defaults: 5 tries, 100 ms doubling up to 5 s.
 *
 * @example
 * ```ts
 * new Broker({ retry: { ...DEFAULT_RETRY, attempts: 10 } });
 * ```
 */
export const DEFAULT_RETRY: Required<RetryOptions> = { attempts: 5, baseMs: 100, maxMs: 5000 };

/**
 * The pause before try number `attempt + 1` (attempt counts from 0): a random point up to the exponential bound.
 *
 * @example
 * ```ts
 * await sleep(backoffDelay(attempt, DEFAULT_RETRY));
 * ```
 */
export function backoffDelay(
  attempt: number,
  opts: Required<RetryOptions>,
  random: () => number = Math.random,
): number {
  return Math.round(random() * Math.min(opts.maxMs, opts.baseMs * 2 ** attempt));
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `fn` until it succeeds, fails with an error that is not retryable, or the tries run out
 * (`attempts`, or the `until` deadline when given); then throws the last error.
 *
 * @example
 * ```ts
 * const answer = await withRetry(() => transport.send('GET', 'sys/health', undefined, {}), DEFAULT_RETRY);
 * ```
 */
export async function withRetry<T>(
  fn: () => Promise<T>,
  opts: Required<RetryOptions>,
  until?: number,
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err)) throw err;
      const delay = backoffDelay(attempt, opts);
      const outOfTries = until === undefined ? attempt + 1 >= opts.attempts : Date.now() + delay >= until;
      if (outOfTries) throw err;
      onRetry?.(err, attempt, delay);
      await sleep(delay);
    }
  }
}
