import pg from 'pg';
import type { Logger } from 'pino';
import { pgConnectionConfig, type PgTls } from './pg-ssl.js';

// timestamptz as Date, bigint counts as numbers where we read them.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/**
 * The lease store's pool. Errors on idle clients are logged, never fatal. `queryTimeoutMs` bounds
 * every query on the client side (pg's query_timeout: it is what catches a server that is frozen
 * rather than down, since the socket stays open), and waiting for a connection too; a client that
 * timed out is discarded by the pool, so the broker recovers by itself once the store does.
 * Without it (migrations, which may wait on another replica's lock), no query bound. `tls` is
 * the store's connection as pgTlsOptions read it (URL and ssl option).
 */
export function createStorePool(tls: PgTls, max: number, log: Logger, queryTimeoutMs?: number): pg.Pool {
  const pool = new pg.Pool({
    ...pgConnectionConfig(tls),
    max,
    connectionTimeoutMillis: queryTimeoutMs ?? 5000,
    ...(queryTimeoutMs ? { query_timeout: queryTimeoutMs } : {}),
    application_name: 'credbroker',
  });
  pool.on('error', (err) => log.warn({ err: err.message }, 'lease store connection lost'));
  return pool;
}
