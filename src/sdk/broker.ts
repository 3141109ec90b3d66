import { inspect } from 'node:util';
import { clientTlsFromEnv, type ClientTls } from '../client/tls.js';
import { BrokerApiError, LeaseInUseError, SdkConfigError } from './errors.js';
import { Lease, type LeaseClient, type LeaseOptions } from './lease.js';
import { RotatingPgPool, type PgPoolOptions } from './pg.js';
import { DEFAULT_RETRY, withRetry, type RetryOptions } from './retry.js';
import { TokenSource, type AuthCalls, type JwtAuthOptions } from './token-source.js';
import { Transport, type AnswerBody, type Method } from './transport.js';

/**
 * The header that makes a lease request idempotent (the broker returns the lease the key already has).
 *
 * @example
 * ```ts
 * await broker.request('PUT', 'db/creds/reader', {}, { headers: { [IDEMPOTENCY_HEADER]: 'pod-uid/reader' } });
 * ```
 */
export const IDEMPOTENCY_HEADER = 'X-Credbroker-Idempotency-Key';

/**
 * How to reach and authenticate to the broker. Every field has an environment default, as the
 * CLI's: `addr` ← CREDBROKER_ADDR / VAULT_ADDR (else http://127.0.0.1:8200), `token` ←
 * CREDBROKER_TOKEN / VAULT_TOKEN, `tls` ← CREDBROKER_CACERT, CREDBROKER_CLIENT_CERT/KEY,
 * CREDBROKER_SKIP_VERIFY (or the VAULT_ names). With `auth`, the broker logs in with a JWT
 * instead of a token, and again before that login's token expires.
 *
 * @example
 * ```ts
 * const broker = new Broker({ addr: 'https://credbroker.internal:8200', token: process.env.CI_BROKER_TOKEN });
 * ```
 */
export interface BrokerOptions {
  addr?: string;
  token?: string;
  auth?: JwtAuthOptions;
  tls?: ClientTls;
  retry?: RetryOptions;
  /** Where the defaults are read from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Called before each retry (for a log line or a metric); the error names no secret. */
  onRetry?: (info: RetryInfo) => void;
}

/**
 * What {@link BrokerOptions.onRetry} hears: the request, which try failed (from 0), why, and the pause before the next.
 *
 * @example
 * ```ts
 * new Broker({ onRetry: ({ path, attempt, error }) => console.warn(`retry ${attempt} of ${path}: ${error.message}`) });
 * ```
 */
export interface RetryInfo {
  method: Method;
  path: string;
  attempt: number;
  delayMs: number;
  error: Error;
}

/**
 * Per-request options of {@link Broker.request}.
 *
 * @example
 * ```ts
 * await broker.request('PUT', 'sys/leases/renew', { lease_id }, { until: Date.now() + 60_000 });
 * ```
 */
export interface RequestOptions {
  headers?: Record<string, string>;
  /** Retry connection errors and 5xx until this time (ms since the epoch) instead of `retry.attempts` times. */
  until?: number;
  /** Counts the tries made (the first one included), for a caller that must know whether it retried. */
  tries?: { count: number };
}

/**
 * A client of one credbroker (or Vault-compatible) server, for pipeline code: leases with
 * auto-renewal, `await using` scopes, a rotating `pg.Pool` and AWS credential providers.
 * Requests are retried with backoff on connection errors and 5xx, never on 4xx.
 *
 * @example
 * ```ts
 * import { Broker } from 'credbroker/sdk';
 *
 * const broker = new Broker(); // CREDBROKER_ADDR, CREDBROKER_TOKEN
 * await using lease = await broker.lease('warehouse/creds/etl-reader', { ttl: '30m' });
 * const client = new pg.Client(lease.pgConfig());
 * ```
 */
export class Broker implements LeaseClient {
  readonly address: string;
  readonly #transport: Transport;
  readonly #tokens: TokenSource;
  readonly #retry: Required<RetryOptions>;
  readonly #onRetry: BrokerOptions['onRetry'];

  constructor(opts: BrokerOptions = {}) {
    const env = opts.env ?? process.env;
    this.address = opts.addr ?? (env.CREDBROKER_ADDR || env.VAULT_ADDR || 'http://127.0.0.1:8200');
    const token = opts.token ?? (opts.auth ? undefined : env.CREDBROKER_TOKEN || env.VAULT_TOKEN);
    if (!token && !opts.auth)
      throw new SdkConfigError('no broker token: pass { token } or { auth }, or set CREDBROKER_TOKEN');
    this.#transport = new Transport(this.address, opts.tls ?? clientTlsFromEnv(env));
    this.#tokens = new TokenSource(token, opts.auth);
    this.#retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.#onRetry = opts.onRetry;
  }

  /**
   * One call of the broker's Vault API (`/v1/<path>`) with the token, retried on connection errors
   * and 5xx; resolves with the answer's body (null for a 204). The building block of the rest.
   *
   * @example
   * ```ts
   * const { data } = await broker.request('PUT', 'sys/leases/lookup', { lease_id: lease.id });
   * ```
   */
  async request(method: Method, path: string, body?: unknown, opts: RequestOptions = {}): Promise<AnswerBody> {
    const calls: AuthCalls = {
      login: (loginPath, loginBody) =>
        withRetry(() => this.#transport.send('PUT', loginPath, loginBody, {}), this.#retry),
      renewSelf: (token) =>
        withRetry(
          () => this.#transport.send('PUT', 'auth/token/renew-self', {}, { 'x-vault-token': token }),
          this.#retry,
        ),
    };
    const once = async (token: string | undefined) =>
      this.#transport.send(method, path, body, { ...(token ? { 'x-vault-token': token } : {}), ...opts.headers });
    return withRetry(
      async () => {
        if (opts.tries) opts.tries.count++;
        try {
          return await once(await this.#tokens.token(calls));
        } catch (err) {
          // A token the broker forgot (revoked, or a restored store): log in again, once.
          const forgotten = err instanceof BrokerApiError && err.status === 403 && err.errors.includes('invalid token');
          if (!forgotten || !this.#tokens.canLogIn) throw err;
          return once(await this.#tokens.logIn(calls));
        }
      },
      this.#retry,
      opts.until,
      (error, attempt, delayMs) => this.#onRetry?.({ method, path, attempt, delayMs, error: error as Error }),
    );
  }

  /**
   * Takes a lease on `path` (`<mount>/creds/<role>`): a new credential, renewed automatically
   * until its max TTL unless `autoRenew: false`.
   *
   * @example
   * ```ts
   * const lease = await broker.lease('db/creds/reader', { ttl: 900 });
   * lease.on('expiring', () => console.warn('take a new lease before', lease.expiresAt));
   * ```
   */
  async lease(path: string, opts: LeaseOptions = {}): Promise<Lease> {
    const clean = path.replace(/^\/+|\/+$/g, '');
    const body = { ...opts.params, ...(opts.ttl !== undefined ? { ttl: opts.ttl } : {}) };
    const headers: Record<string, string> = opts.idempotencyKey ? { [IDEMPOTENCY_HEADER]: opts.idempotencyKey } : {};
    const tries = { count: 0 };
    let answer: AnswerBody;
    try {
      answer = await this.request('PUT', clean, body, { headers, tries });
    } catch (err) {
      if (!(err instanceof LeaseInUseError) || err.state !== 'active') throw err;
      // A lease our own lost try minted, or one the caller said to replace: its credential is
      // gone with that answer, so take it back and ask again rather than leave it live unheld.
      if (tries.count < 2 && opts.onConflict !== 'replace') throw err;
      await this.revokeLease(err.leaseId);
      answer = await this.request('PUT', clean, body, { headers });
    }
    if (typeof answer?.lease_id !== 'string' || !answer.lease_id)
      throw new BrokerApiError(200, ['the answer carries no lease_id: is this a credentials path?'], 'PUT', clean);
    return new Lease(
      this,
      {
        path: clean,
        leaseId: answer.lease_id,
        leaseDuration: Number(answer.lease_duration) || 0,
        renewable: answer.renewable === true,
        data: answer.data ?? {},
      },
      opts,
    );
  }

  /**
   * Runs `fn` with a lease on `path` and revokes the lease when `fn` settles, whatever the outcome.
   *
   * @example
   * ```ts
   * const count = await broker.withLease('db/creds/reader', async (lease) => {
   *   const client = new pg.Client(lease.pgConfig());
   *   await client.connect();
   *   try { return (await client.query('SELECT count(*) FROM items')).rows[0].count; } finally { await client.end(); }
   * });
   * ```
   */
  async withLease<T>(path: string, fn: (lease: Lease) => Promise<T>, opts: LeaseOptions = {}): Promise<T> {
    const lease = await this.lease(path, opts);
    try {
      return await fn(lease);
    } finally {
      await lease.revoke();
    }
  }

  /**
   * A `pg.Pool` on leases of `path` that switches to a fresh lease before the current one's
   * max TTL without failing queries in flight; `pool.end()` drains it and revokes its leases.
   *
   * @example
   * ```ts
   * const pool = await broker.pgPool('db/creds/reader', { ttl: '15m', max: 8 });
   * await pool.query('SELECT 1');
   * await pool.end();
   * ```
   */
  async pgPool(path: string, opts: PgPoolOptions = {}): Promise<RotatingPgPool> {
    const { ttl, idempotencyKey, onConflict = 'replace', params, ...poolOptions } = opts;
    // One key per login the pool takes: the next one is asked for while the last is still live.
    let generation = 0;
    const take = () => {
      const key = idempotencyKey === undefined ? undefined : `${idempotencyKey}.${generation++}`;
      return this.lease(path, { ttl, idempotencyKey: key, onConflict, params });
    };
    return new RotatingPgPool(await take(), take, poolOptions);
  }

  /** For {@link Lease.renew}: renews `id`, retrying connection errors and 5xx until `until`. */
  async renewLease(
    id: string,
    incrementSeconds: number | undefined,
    until: number,
  ): Promise<{ leaseDuration: number; capped: boolean }> {
    const body = { lease_id: id, ...(incrementSeconds !== undefined ? { increment: incrementSeconds } : {}) };
    const answer = await this.request('PUT', 'sys/leases/renew', body, { until });
    const leaseDuration = Number(answer?.lease_duration) || 0;
    const warned = Array.isArray(answer?.warnings) && answer.warnings.length > 0;
    return { leaseDuration, capped: warned || (incrementSeconds !== undefined && leaseDuration < incrementSeconds) };
  }

  /** For {@link Lease.revoke}: revokes `id` (idempotent on the broker). */
  async revokeLease(id: string): Promise<void> {
    await this.request('PUT', 'sys/leases/revoke', { lease_id: id });
  }

  /**
   * Closes the broker's connections; leases already taken keep their timers until revoked.
   *
   * @example
   * ```ts
   * await broker.close();
   * ```
   */
  async close(): Promise<void> {
    await this.#transport.close();
  }

  [inspect.custom](): string {
    return `Broker { address: ${inspect(this.address)} }`;
  }

  toJSON(): Record<string, unknown> {
    return { address: this.address };
  }
}
