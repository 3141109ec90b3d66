import pg from 'pg';
import type { Lease, LeaseOptions } from './lease.js';
import { backoffDelay, DEFAULT_RETRY } from './retry.js';

/**
 * `broker.pgPool()`'s options: the lease's (`ttl`, `idempotencyKey`) and any `pg.PoolConfig`
 * but the connection's own fields, which come from the lease.
 *
 * @example
 * ```ts
 * const pool = await broker.pgPool('db/creds/reader', { ttl: '15m', max: 4, idleTimeoutMillis: 10_000 });
 * ```
 */
export type PgPoolOptions = Omit<LeaseOptions, 'autoRenew'> &
  Omit<pg.PoolConfig, 'user' | 'password' | 'host' | 'port' | 'database' | 'ssl' | 'connectionString'>;

/** Takes a lease on the pool's path. */
type TakeLease = () => Promise<Lease>;

interface Generation {
  lease: Lease;
  pool: pg.Pool;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A `pg.Pool` on leased logins that change. Each lease gets its own inner pool; new connections
 * (and `query()`, `connect()`) always go to the current one. When the current lease can no longer
 * be renewed (its `expiring` event, before its max TTL), the pool takes a new lease and switches
 * to it; the old inner pool drains (every client checked out from it is released, every query
 * queued on it is served) and only then is its lease revoked, so no query in flight fails.
 * Emits `rotated` ({ from, to } lease ids) and `rotationFailed` (error) besides pg.Pool's events.
 *
 * @example
 * ```ts
 * const pool = await broker.pgPool('db/creds/reader', { max: 4 });
 * const { rows } = await pool.query('SELECT count(*) FROM items');
 * await pool.end(); // drains and revokes
 * ```
 */
export class RotatingPgPool extends pg.Pool {
  #current: Generation;
  readonly #takeLease: TakeLease;
  readonly #poolOptions: pg.PoolConfig;
  readonly #draining = new Set<Promise<void>>();
  #closed = false;

  /** Use `broker.pgPool()`: it takes the first lease. */
  constructor(first: Lease, takeLease: TakeLease, poolOptions: pg.PoolConfig) {
    super(poolOptions);
    this.#takeLease = takeLease;
    this.#poolOptions = poolOptions;
    this.#current = this.#generation(first);
    // The inner pools do the work: the methods and counts of this pool are theirs.
    const self = this as unknown as Record<string, unknown>;
    self.query = (...args: unknown[]) => (this.#current.pool.query as (...a: unknown[]) => unknown)(...args);
    self.connect = (...args: unknown[]) => (this.#current.pool.connect as (...a: unknown[]) => unknown)(...args);
    self.end = (cb?: (err?: Error) => void) => {
      const done = this.#close();
      if (!cb) return done;
      done.then(() => cb(), cb);
      return undefined;
    };
    for (const name of ['totalCount', 'idleCount', 'waitingCount', 'expiredCount'] as const)
      Object.defineProperty(this, name, { get: () => this.#current.pool[name], configurable: true });
  }

  /** The lease whose login new connections use now. */
  get lease(): Lease {
    return this.#current.lease;
  }

  #generation(lease: Lease): Generation {
    const pool = new pg.Pool({ ...this.#poolOptions, ...lease.pgConfig() });
    for (const event of ['connect', 'acquire', 'remove', 'release'] as const)
      pool.on(event, (...args: unknown[]) => this.emit(event, ...args));
    pool.on('error', (err, client) => this.emit('error', err, client));
    lease.once('expiring', () => void this.#rotate(lease));
    return { lease, pool };
  }

  async #rotate(from: Lease): Promise<void> {
    for (let attempt = 0; !this.#closed && this.#current.lease === from; attempt++) {
      let next: Lease;
      try {
        next = await this.#takeLease();
      } catch (err) {
        this.emit('rotationFailed', err);
        await sleep(backoffDelay(attempt, DEFAULT_RETRY));
        continue;
      }
      if (this.#closed) {
        await next.revoke().catch(() => undefined);
        return;
      }
      const old = this.#current;
      this.#current = this.#generation(next);
      this.emit('rotated', { from: old.lease.id, to: next.id });
      this.#retire(old);
      return;
    }
  }

  /** Ends the old pool once its queue is served and its clients are back, then revokes its lease. */
  #retire(old: Generation): void {
    const drained = (async () => {
      // pg-pool's end() never serves requests still queued for a client: let them get one first.
      while (old.pool.waitingCount > 0) await sleep(20);
      await old.pool.end();
      await old.lease.revoke().catch((err: unknown) => this.emit('rotationFailed', err));
    })();
    this.#draining.add(drained);
    void drained.finally(() => this.#draining.delete(drained));
  }

  async #close(): Promise<void> {
    if (this.#closed) throw new Error('Called end on pool more than once');
    this.#closed = true;
    this.#retire(this.#current);
    await Promise.all([...this.#draining]);
  }
}
