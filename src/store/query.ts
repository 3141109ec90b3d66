import type pg from 'pg';
import { BrokerError, StoreUnavailable } from '../errors.js';
import { timed } from '../timing.js';

/** Where a statement runs: the pool, or one client of it inside a transaction. */
export type StoreDb = pg.Pool | pg.PoolClient;

/**
 * A parameterized statement. With a `name`, pg prepares it once per connection and reuses the
 * plan: the name must always go with the same (constant) text.
 */
export interface Statement {
  name?: string;
  text: string;
  values: unknown[];
}

/**
 * True when an error means the store cannot be reached or gave up, not that the statement was
 * wrong: no SQLSTATE at all (socket errors, pg's connection and query timeouts), class 08
 * (connection exception), 57 (operator intervention: shutdown, a cancelled or timed-out query)
 * or 53 (insufficient resources: too many connections, disk full). Our own errors never are.
 */
export function isConnectionFailure(err: unknown): boolean {
  if (err instanceof BrokerError) return false;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code.startsWith('57') || code.startsWith('53');
}

/** The one place a store failure is classified: a connection failure becomes a 503 StoreUnavailable. */
export function asStoreFailure(err: unknown): unknown {
  return isConnectionFailure(err) ? new StoreUnavailable('lease store unavailable', { cause: err }) : err;
}

/**
 * Runs one statement on the store: timed for Server-Timing (unless the caller times a wider
 * wait itself, as a batched write does), with a store that is down or frozen as StoreUnavailable.
 * `timeoutMs` bounds this statement below the pool's own query_timeout. Every store query goes
 * through here (or inStoreTransaction).
 */
export function storeQuery<R extends pg.QueryResultRow>(
  db: StoreDb,
  statement: Statement,
  opts: { timeoutMs?: number; timed?: boolean } = {},
): Promise<pg.QueryResult<R>> {
  // pg reads a per-query query_timeout from the query config; its types only list the client's.
  const query = { ...statement, ...(opts.timeoutMs ? { query_timeout: opts.timeoutMs } : {}) } as pg.QueryConfig;
  const run = () => db.query<R>(query).catch((err: unknown) => Promise.reject(asStoreFailure(err)));
  return opts.timed === false ? run() : timed('store', run);
}

/**
 * Runs `work` in one transaction on a client of its own. A connection that failed (or timed out
 * on a frozen store) is discarded rather than rolled back, and surfaces as StoreUnavailable.
 */
export async function inStoreTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  // Each statement is timed by storeQuery; here only the wait for a connection.
  const client = await timed('store', () => pool.connect()).catch((err: unknown) =>
    Promise.reject(asStoreFailure(err)),
  );
  let broken = false;
  try {
    await storeQuery(client, { text: 'BEGIN', values: [] });
    const out = await work(client);
    await storeQuery(client, { text: 'COMMIT', values: [] });
    return out;
  } catch (err) {
    broken = err instanceof StoreUnavailable || isConnectionFailure(err);
    if (!broken) await client.query('ROLLBACK').catch(() => undefined);
    throw asStoreFailure(err);
  } finally {
    client.release(broken);
  }
}
