/**
 * Every code an SDK error carries: compare `err.code === BrokerApiError.code`.
 *
 * @example
 * ```ts
 * if (err instanceof SdkError && err.code === BrokerUnreachableError.code) retryLater();
 * ```
 */
export type SdkErrorCode =
  'ERR_SDK' | 'ERR_SDK_CONFIG' | 'ERR_BROKER_API' | 'ERR_LEASE_IN_USE' | 'ERR_BROKER_UNREACHABLE';

/**
 * The base of every error the SDK throws, with a stable `code` (as the broker's own errors).
 * Messages name paths, statuses and Vault's error text, never a token or a credential, so an error
 * may be logged, printed and `JSON.stringify`'d as it is.
 *
 * @example
 * ```ts
 * try {
 *   await broker.lease('db/creds/reader');
 * } catch (err) {
 *   if (err instanceof SdkError) console.error(err.code, err.message);
 * }
 * ```
 */
export class SdkError extends Error {
  static readonly code: SdkErrorCode = 'ERR_SDK';
  readonly code: SdkErrorCode;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = new.target.code;
  }

  /** What `JSON.stringify` shows: the name, code and message (Error's own fields are not enumerable). */
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message };
  }
}

/**
 * The SDK was given options it cannot use (no address, no token, an unreadable JWT file).
 *
 * @example
 * ```ts
 * if (err.code === SdkConfigError.code) process.exit(2);
 * ```
 */
export class SdkConfigError extends SdkError {
  static override readonly code: SdkErrorCode = 'ERR_SDK_CONFIG';
}

/**
 * The broker answered with an error status: `status` is the HTTP status, `errors` Vault's
 * `{"errors": [...]}` list, `method` and `path` what was asked. 4xx are never retried; 5xx are,
 * and this is thrown when the retries ran out.
 *
 * @example
 * ```ts
 * try {
 *   await broker.lease('db/creds/reader');
 * } catch (err) {
 *   if (err instanceof BrokerApiError && err.status === 403) console.error('not allowed:', err.errors);
 * }
 * ```
 */
export class BrokerApiError extends SdkError {
  static override readonly code: SdkErrorCode = 'ERR_BROKER_API';
  constructor(
    readonly status: number,
    readonly errors: string[],
    readonly method: string,
    readonly path: string,
  ) {
    super(`${method} /v1/${path}: HTTP ${status}${errors.length ? `: ${errors.join('; ')}` : ''}`);
  }

  /** Whether a retry may get another answer: a 5xx (the broker or its store is down), never a 4xx. */
  get retryable(): boolean {
    return this.status >= 500;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), status: this.status, errors: this.errors, method: this.method, path: this.path };
  }
}

/**
 * A 409 for an idempotency key that already names a live lease of the same identity and path
 * (`leaseId`, `state` `active` or still `pending`): the broker keeps no secret, so it cannot hand
 * that lease's credential out again. `broker.lease()` throws this unless told `onConflict:
 * 'replace'`, or unless its own earlier try minted the lease and the answer was lost (then it
 * revokes that lease and asks again).
 *
 * @example
 * ```ts
 * try {
 *   await broker.lease('db/creds/reader', { idempotencyKey: `${podUid}/reader` });
 * } catch (err) {
 *   if (err instanceof LeaseInUseError) console.error('already leased as', err.leaseId);
 * }
 * ```
 */
export class LeaseInUseError extends BrokerApiError {
  static override readonly code: SdkErrorCode = 'ERR_LEASE_IN_USE';
  constructor(
    errors: string[],
    method: string,
    path: string,
    readonly leaseId: string,
    readonly state: string,
  ) {
    super(409, errors, method, path);
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), leaseId: this.leaseId, state: this.state };
  }
}

/**
 * No answer from the broker (connection refused or reset, DNS, TLS): retried with backoff, and
 * thrown when the retries ran out. `reason` is the system error code, e.g. `ECONNREFUSED`.
 *
 * @example
 * ```ts
 * if (err instanceof BrokerUnreachableError) console.error('broker down:', err.reason);
 * ```
 */
export class BrokerUnreachableError extends SdkError {
  static override readonly code: SdkErrorCode = 'ERR_BROKER_UNREACHABLE';
  constructor(
    readonly address: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`cannot reach credbroker at ${address}: ${reason}`, options);
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), address: this.address, reason: this.reason };
  }
}

/**
 * Whether `err` is worth another attempt: no answer, or a 5xx.
 *
 * @example
 * ```ts
 * if (!isRetryable(err)) throw err;
 * ```
 */
export function isRetryable(err: unknown): boolean {
  return err instanceof BrokerUnreachableError || (err instanceof BrokerApiError && err.retryable);
}
