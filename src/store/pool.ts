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

/** No SQLSTATE (socket errors, pool timeouts) or a connection/shutdown class: the store is down. */
export function isConnectionFailure(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code.startsWith('57P');
}
