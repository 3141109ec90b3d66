import pg from 'pg';
import { adminQuery, freshStoreDatabase } from './pg.js';
import { sleep } from './reliability.js';

/**
 * For a scenario whose lease store is a PostgreSQL server of its own (so it can be stopped or
 * frozen without touching other test files): the drain, read from that store, and a copy of its
 * lease table into a database of the shared test server, where checkInvariants reads it.
 */
async function queryAt<R extends pg.QueryResultRow>(url: string, sql: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end();
  }
}

/** waitStoreDrained for the store at `url`: nothing pending, revoking or active. Throws after `timeoutMs`. */
export async function waitDrainedAt(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [live] = await queryAt<{ unfinished: number; active: number }>(
      url,
      `SELECT count(*) FILTER (WHERE state IN ('pending', 'revoking'))::int AS unfinished, count(*) FILTER (WHERE state = 'active')::int AS active FROM credbroker_leases`,
    );
    if (live!.unfinished === 0 && live!.active === 0) return;
    if (Date.now() > deadline)
      throw new Error(`the store did not drain within ${timeoutMs} ms: ${JSON.stringify(live)}`);
    await sleep(100);
  }
}

/** Copies every lease row of the store at `url` into a fresh (migrated) database of the test server; returns its name. */
export async function snapshotLeases(url: string, label: string): Promise<string> {
  const rows = await queryAt<{ rows: unknown }>(
    url,
    `SELECT coalesce(jsonb_agg(l), '[]') AS rows FROM credbroker_leases l`,
  );
  const db = await freshStoreDatabase(label);
  await adminQuery(
    db,
    `INSERT INTO credbroker_leases SELECT * FROM jsonb_populate_recordset(NULL::credbroker_leases, $1::jsonb)`,
    [JSON.stringify(rows[0]!.rows)],
  );
  return db;
}
