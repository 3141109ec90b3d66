/**
 * A pipeline step on credbroker: lease a PostgreSQL login, copy rows with pg, revoke.
 *
 *   CREDBROKER_ADDR=https://credbroker:8200 CREDBROKER_TOKEN=… \
 *   LEASE_PATH=warehouse/creds/etl SOURCE_TABLE=public.items TARGET_TABLE=public.items_copy \
 *   node dist/examples/pipeline-step.js
 *
 * The lease renews itself while the copy runs and is revoked when `copy()` returns or throws
 * (`await using`): the login does not outlive the step.
 *
 * @example
 * ```sh
 * LEASE_PATH=db/creds/etl node dist/examples/pipeline-step.js
 * ```
 */
import pg from 'pg';
import { Broker } from 'credbroker/sdk';

/** `schema.table` as a quoted identifier. */
const tableName = (name: string) => name.split('.').map(pg.escapeIdentifier).join('.');

/** Copies every row of `source` into `target` in one transaction; resolves with the number of rows. */
async function copy(broker: Broker, path: string, source: string, target: string): Promise<number> {
  await using lease = await broker.lease(path, { ttl: '15m' });
  const client = new pg.Client({ ...lease.pgConfig(), application_name: 'pipeline-step' });
  await client.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query(`SELECT * FROM ${tableName(source)}`);
    for (const row of rows) {
      const columns = Object.keys(row);
      await client.query(
        `INSERT INTO ${tableName(target)} (${columns.map(pg.escapeIdentifier).join(', ')})
         VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})`,
        Object.values(row),
      );
    }
    await client.query('COMMIT');
    process.stdout.write(`copied ${rows.length} rows from ${source} to ${target} (lease ${lease.id})\n`);
    return rows.length;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await client.end();
  }
}

const broker = new Broker();
try {
  await copy(
    broker,
    process.env.LEASE_PATH ?? 'warehouse/creds/etl',
    process.env.SOURCE_TABLE ?? 'public.items',
    process.env.TARGET_TABLE ?? 'public.items_copy',
  );
} catch (err) {
  process.stderr.write(`pipeline step failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
} finally {
  await broker.close();
}
