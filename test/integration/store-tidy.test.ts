import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TokenStore } from '../../src/auth/token-store.js';
import { startBroker } from '../../src/broker.js';
import { createLogger } from '../../src/log.js';
import { TIDY_STATEMENTS, tidyOnce, type TidyPolicy } from '../../src/store/tidy.js';
import { testConfig } from '../support/broker.js';
import { freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

const DAY = 86_400;
const POLICY: TidyPolicy = { storeRetentionSeconds: 30 * DAY, auditRetentionSeconds: 90 * DAY, batchSize: 1000 };

let storeDatabase: string;
let pool: pg.Pool;
beforeAll(async () => {
  storeDatabase = await freshStoreDatabase('tidy');
  pool = new pg.Pool({ connectionString: pgUrl(storeDatabase), max: 4 });
});
afterAll(async () => {
  await pool?.end();
});

const count = async (sql: string) =>
  (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`)).rows[0]!.n;

/** `n` lease rows in `state`, revoked (where revoked) `ageDays` ago; ids tagged by `tag`. */
async function seedLeases(
  tag: string,
  n: number,
  state: 'revoked' | 'active' | 'pending' | 'irrevocable',
  ageDays: number,
): Promise<void> {
  await pool.query(
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, issued_at, expires_at, max_expires_at, next_attempt_at, revoked_at, revoke_reason)
     SELECT 'db/creds/' || $1 || '/' || g, 'db', $1, 'postgres', $2, '{}'::jsonb, t - interval '1 hour', t, t + interval '1 day',
            CASE WHEN $2 IN ('revoked', 'irrevocable') THEN NULL ELSE now() + interval '1 hour' END,
            CASE WHEN $2 = 'revoked' THEN t END, CASE WHEN $2 IN ('revoked', 'irrevocable') THEN 'expired' END
       FROM generate_series(1, $3::int) g, LATERAL (SELECT now() - make_interval(days => $4::int) AS t) t`,
    [tag, state, n, ageDays],
  );
}

/** `n` broker tokens that expired `expiredDaysAgo` ago (negative: still live), revoked `revokedDaysAgo` ago if given. */
async function seedTokens(
  tag: string,
  n: number,
  expiredDaysAgo: number,
  revokedDaysAgo: number | null = null,
  revokeLeases = true,
): Promise<void> {
  await pool.query(
    `INSERT INTO credbroker_tokens (accessor, token_hash, identity, policies, issued_at, expires_at, max_expires_at, revoke_leases, revoked_at)
     SELECT $1 || '-' || g, sha256(($1 || '-' || g)::bytea), '{"name":"t","auth_mount":"jwt"}', '{default}',
            now() - make_interval(days => $2::int) - interval '1 hour', now() - make_interval(days => $2::int),
            now() - make_interval(days => $2::int) + interval '1 day', $4, now() - make_interval(days => $3::int)
       FROM generate_series(1, $5::int) g`,
    [tag, expiredDaysAgo, revokedDaysAgo, revokeLeases, n],
  );
}

async function seedAudit(tag: string, n: number, ageDays: number): Promise<void> {
  await pool.query(
    `INSERT INTO credbroker_audit (time, type, request_id) SELECT now() - make_interval(days => $2::int), 'request', $1 || '-' || g FROM generate_series(1, $3::int) g`,
    [tag, ageDays, n],
  );
}

describe('the store tidy', () => {
  afterEach(async () => {
    await pool.query('TRUNCATE credbroker_leases, credbroker_tokens, credbroker_audit');
  });

  it('deletes revoked leases, ended tokens and audit rows older than their retention, keeps the rest, in batches of at most batch_size', async () => {
    await seedLeases('old', 2500, 'revoked', 31);
    await seedLeases('recent', 10, 'revoked', 29);
    await seedLeases('live', 5, 'active', 400); // issued long ago, still live: never tidied
    await seedLeases('pending', 2, 'pending', 400);
    await seedLeases('stuck', 3, 'irrevocable', 400); // waits for an operator, whatever its age
    await seedTokens('expired-old', 4, 31);
    await seedTokens('revoked-old', 3, -10, 31); // revoked 31 days ago, would have expired in 10
    await seedTokens('kept-old', 2, 31, null, false); // expired, never revoked (revoke_leases off): ended all the same
    await seedTokens('expired-recent', 6, 29);
    await seedTokens('live', 7, -1);
    await seedAudit('old', 2100, 91);
    await seedAudit('recent', 20, 89);

    const result = await tidyOnce(pool, POLICY);

    expect(result).toEqual({ leases: [1000, 1000, 500], tokens: [9], audit: [1000, 1000, 100], wrapped: [], jobs: [] });
    const leases = await pool.query<{ role: string; n: number }>(
      'SELECT role, count(*)::int AS n FROM credbroker_leases GROUP BY role ORDER BY role',
    );
    expect(leases.rows).toEqual([
      { role: 'live', n: 5 },
      { role: 'pending', n: 2 },
      { role: 'recent', n: 10 },
      { role: 'stuck', n: 3 },
    ]);
    expect(await count(`credbroker_tokens WHERE accessor LIKE 'live-%'`)).toBe(7);
    expect(await count(`credbroker_tokens WHERE accessor LIKE 'expired-recent-%'`)).toBe(6);
    expect(await count('credbroker_tokens')).toBe(13);
    expect(await count(`credbroker_audit WHERE request_id LIKE 'recent-%'`)).toBe(20);
    expect(await count('credbroker_audit')).toBe(20);

    // Nothing left to do: a second run deletes nothing.
    expect(await tidyOnce(pool, POLICY)).toEqual({ leases: [], tokens: [], audit: [], wrapped: [], jobs: [] });
  });

  it('runs on its schedule inside a broker (store.tidy.schedule), with the retentions of the config', async () => {
    const target = await freshTargetDatabase('tidysch');
    const config = testConfig({ storeDatabase, targetDatabase: target.database, prefix: 'tidysch', roles: {} });
    config.store.tidy = { schedule: '* * * * * *', batch_size: 10 };
    config.store.retention = 2 * DAY;
    await seedLeases('old', 25, 'revoked', 3);
    await seedLeases('recent', 4, 'revoked', 1);
    const broker = await startBroker(config, { log: createLogger('silent') });
    try {
      await waitUntil(async () => (await count(`credbroker_leases WHERE role = 'old'`)) === 0, {
        timeoutMs: 5000,
        what: 'the scheduled tidy to delete the old revoked leases',
      });
      expect(await count(`credbroker_leases WHERE role = 'recent'`)).toBe(4);
    } finally {
      await broker.close();
    }
  });
});

/** The plan PostgreSQL picks for a statement with its parameters, as JSON text. */
async function planOf(client: pg.PoolClient | pg.Pool, text: string, values: unknown[]): Promise<string> {
  const { rows } = await client.query(`EXPLAIN (FORMAT JSON) ${text}`, values);
  return JSON.stringify(rows[0]['QUERY PLAN']);
}

describe('the indexes of the periodic sweeps', () => {
  beforeAll(async () => {
    // A store after months of use: most rows are history, a few are what the sweeps look for.
    await seedLeases('history', 20_000, 'revoked', 1);
    await seedLeases('old', 50, 'revoked', 40);
    await seedTokens('history', 20_000, 1, 1);
    await seedTokens('live', 200, -1);
    await seedTokens('due', 5, 0);
    await seedAudit('history', 20_000, 1);
    await seedAudit('old', 50, 100);
    await pool.query('ANALYZE credbroker_leases, credbroker_tokens, credbroker_audit');
  });
  afterAll(async () => {
    await pool.query('TRUNCATE credbroker_leases, credbroker_tokens, credbroker_audit');
  });

  it("the token-expiry sweep's claim (every 5 s on every replica) reads credbroker_tokens_expiring, not the whole table", async () => {
    // The statement the sweep really sends, taken from the token store on its way to the pool.
    // Store queries are sent as one statement object ({ name, text, values }; src/store/query.ts).
    const sent: { text: string; values: unknown[] }[] = [];
    const recording = new Proxy(pool, {
      get: (target, prop) =>
        prop === 'query'
          ? (statement: { text: string; values: unknown[] }) => (
              sent.push({ text: statement.text, values: statement.values }),
              target.query(statement)
            )
          : Reflect.get(target, prop),
    });
    const claimed = await new TokenStore(recording).claimExpired(100);
    expect(claimed.map((t) => t.accessor).sort()).toEqual(['due-1', 'due-2', 'due-3', 'due-4', 'due-5']);
    const [sweep] = sent;
    const plan = await planOf(pool, sweep!.text, sweep!.values);
    expect(plan).toContain('credbroker_tokens_expiring');
    expect(plan).not.toMatch(/"Node Type":"Seq Scan","[^}]*"Relation Name":"credbroker_tokens"/);

    // Without the index, the same statement reads every token: the assertion above can fail.
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('DROP INDEX credbroker_tokens_expiring');
      expect(await planOf(client, sweep!.text, sweep!.values)).toMatch(
        /"Node Type":"Seq Scan","[^}]*"Relation Name":"credbroker_tokens"/,
      );
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });

  it('each tidy DELETE finds its rows by an index', async () => {
    const retention = { leases: 30 * DAY, tokens: 30 * DAY, audit: 90 * DAY };
    const expected = {
      leases: 'credbroker_leases_revoked_at',
      tokens: 'credbroker_tokens_ended',
      audit: 'credbroker_audit_time',
    };
    for (const table of ['leases', 'tokens', 'audit'] as const) {
      const plan = await planOf(pool, TIDY_STATEMENTS[table].text, [retention[table], 1000]);
      expect(plan, table).toContain(expected[table]);
    }
  });
});
