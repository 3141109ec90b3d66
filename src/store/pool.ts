import pg from 'pg';
import type { Logger } from 'pino';
import { StoreUnavailable } from '../errors.js';
import { timed } from '../timing.js';

// timestamptz as Date, bigint counts as numbers where we read them.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/**
 * The lease store's pool. Errors on idle clients are logged, never fatal. `queryTimeoutMs` bounds
 * every query on the client side (pg's query_timeout: it is what catches a server that is frozen
 * rather than down, since the socket stays open), and waiting for a connection too; a client that
 * timed out is discarded by the pool, so the broker recovers by itself once the store does.
 * Without it (migrations, which may wait on another replica's lock), no query bound.
 */
export function createStorePool(url: string, max: number, log: Logger, queryTimeoutMs?: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: queryTimeoutMs ?? 5000,
    ...(queryTimeoutMs ? { query_timeout: queryTimeoutMs } : {}),
    application_name: 'credbroker',
  });
  pool.on('error', (err) => log.warn({ err: err.message }, 'lease store connection lost'));
  return pool;
}

/**
 * A parameterized query on the store, timed, with a store that is down or frozen as
 * StoreUnavailable. `timeoutMs` bounds this query below the pool's own query_timeout.
 */
export function storeQuery<R extends pg.QueryResultRow>(
  pool: pg.Pool,
  sql: string,
  params: unknown[],
  opts: { timeoutMs?: number } = {},
): Promise<pg.QueryResult<R>> {
  // pg reads a per-query query_timeout from the query config; its types only list the client's.
  const query = { text: sql, values: params, ...(opts.timeoutMs ? { query_timeout: opts.timeoutMs } : {}) } as pg.QueryConfig;
  return timed('store', async () => {
    try {
      return await pool.query<R>(query);
    } catch (err) {
      throw isConnectionFailure(err) ? new StoreUnavailable('lease store unavailable', { cause: err }) : err;
    }
  });
}

/** No SQLSTATE (socket errors, pool timeouts) or a connection/shutdown class: the store is down. */
export function isConnectionFailure(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code.startsWith('57P');
}
