import pg from 'pg';
import type { Logger } from 'pino';

// timestamptz as Date, bigint counts as numbers where we read them.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/** The lease store's pool. Errors on idle clients are logged, never fatal. */
export function createStorePool(url: string, max: number, log: Logger): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: 5000, application_name: 'credbroker' });
  pool.on('error', (err) => log.warn({ err: err.message }, 'lease store connection lost'));
  return pool;
}
