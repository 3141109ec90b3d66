import pg from 'pg';
import { createDatabase, createRoles, dropRoles, postgresMount, sql, startBrokerProcess } from '../lib/cluster.js';
import type { BenchContext } from '../lib/context.js';
import { closedLoop, round } from '../lib/stats.js';

const GROUP = 'bench_readers';
const REAPER_CONCURRENCY = 8;

/** Lease rows for roles `<prefix>_1..n`, all expiring at `expiresAt` (an SQL expression). */
async function insertLeases(
  ctx: BenchContext,
  store: string,
  prefix: string,
  n: number,
  expiresAt: string,
): Promise<void> {
  await sql(
    ctx.server,
    store,
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, expires_at, max_expires_at, next_attempt_at)
     SELECT 'drain/creds/r/' || lpad(i::text, 24, '0'), 'drain', 'r', 'postgres', 'active',
            jsonb_build_object('username', '${prefix}_' || i), e, e + interval '1 day', e
       FROM generate_series(1, ${n}) i, LATERAL (SELECT ${expiresAt} AS e) x`,
  );
}

async function waitAllRevoked(ctx: BenchContext, store: string, n: number): Promise<void> {
  for (;;) {
    const [row] = await sql<{ n: number }>(
      ctx.server,
      store,
      `SELECT count(*)::int AS n FROM credbroker_leases WHERE state = 'revoked'`,
    );
    if (row!.n >= n) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function lagStats(ctx: BenchContext, store: string) {
  const [row] = await sql<{ p50: number; p99: number; first_expiry: Date; first_revoke: Date; last_revoke: Date }>(
    ctx.server,
    store,
    `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM revoked_at - expires_at)) AS p50,
            percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM revoked_at - expires_at)) AS p99,
            min(expires_at) AS first_expiry, min(revoked_at) AS first_revoke, max(revoked_at) AS last_revoke
       FROM credbroker_leases WHERE state = 'revoked'`,
  );
  return row!;
}

/** 10,000 leases expiring at one instant; then a steady trickle, for the reaper's lag. */
export async function reaperScenario(ctx: BenchContext): Promise<void> {
  const n = ctx.quick ? 2000 : 10_000;
  for (const db of ['drain_store', 'drain_target']) await createDatabase(ctx.server, db);
  await sql(
    ctx.server,
    'postgres',
    `DO $$ BEGIN CREATE ROLE ${GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
  );

  // The raw baseline does what the broker's revoke does, as one hand-written round trip per role
  // at the reaper's concurrency: NOLOGIN (committed), terminate its sessions, DROP ROLE.
  ctx.progress(
    `reaper_drain_10k: raw NOLOGIN + terminate + DROP ROLE of ${n} roles at concurrency ${REAPER_CONCURRENCY}`,
  );
  await createRoles(ctx.server, 'rg', n, GROUP);
  const pool = new pg.Pool({ connectionString: ctx.server.url('drain_target'), max: REAPER_CONCURRENCY });
  const rawRun = await closedLoop(n, REAPER_CONCURRENCY, (i) =>
    pool.query(
      `ALTER ROLE "rg_${i + 1}" NOLOGIN VALID UNTIL 'epoch'; COMMIT;
       SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rg_${i + 1}';
       DROP ROLE IF EXISTS "rg_${i + 1}"`,
    ),
  );
  await pool.end();

  // The broker: start it (it migrates the store), then plant leases that all expire together.
  const broker = await startBrokerProcess(ctx.server, {
    store: 'drain_store',
    mounts: {
      drain: {
        ...postgresMount(ctx.server, 'drain_target', {
          username_prefix: 'dr',
          max_open_connections: REAPER_CONCURRENCY,
        }),
        roles: { r: { member_of: [GROUP] } },
      },
    },
    reaper: { concurrency: REAPER_CONCURRENCY },
  });
  try {
    ctx.progress(`reaper_drain_10k: broker reaper drops ${n} leases expiring at one instant`);
    await createRoles(ctx.server, 'dr', n, GROUP);
    await insertLeases(ctx, 'drain_store', 'dr', n, `now() + interval '2 seconds'`);
    await waitAllRevoked(ctx, 'drain_store', n);
    const drain = await lagStats(ctx, 'drain_store');
    // The drop rate runs from the first drop to the last; the wait for the first tick is lag.
    const drainSeconds = (drain.last_revoke.getTime() - drain.first_revoke.getTime()) / 1000;
    const fromExpirySeconds = (drain.last_revoke.getTime() - drain.first_expiry.getTime()) / 1000;

    ctx.progress('reaper_drain_10k: steady state, 300 leases expiring over 6 s');
    await sql(ctx.server, 'drain_store', 'TRUNCATE credbroker_leases');
    await createRoles(ctx.server, 'ds', 300, GROUP);
    await sql(
      ctx.server,
      'drain_store',
      `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, expires_at, max_expires_at, next_attempt_at)
       SELECT 'drain/creds/r/s' || lpad(i::text, 23, '0'), 'drain', 'r', 'postgres', 'active',
              jsonb_build_object('username', 'ds_' || i), e, e + interval '1 day', e
         FROM generate_series(1, 300) i, LATERAL (SELECT now() + interval '1 second' + i * interval '20 milliseconds' AS e) x`,
    );
    await waitAllRevoked(ctx, 'drain_store', 300);
    const steady = await lagStats(ctx, 'drain_store');
    const brokerRate = n / drainSeconds;
    ctx.record({
      name: 'reaper_drain_10k',
      unit: 'roles dropped/s',
      broker: round(brokerRate, 1),
      raw: round(rawRun.rate, 1),
      ratio: round(brokerRate / rawRun.rate),
      leases: n,
      drain_seconds: round(drainSeconds),
      expiry_to_last_drop_s: round(fromExpirySeconds),
      drain_lag_p50_s: round(drain.p50),
      drain_lag_p99_s: round(drain.p99),
      steady_lag_p50_s: round(steady.p50),
      steady_lag_p99_s: round(steady.p99),
      concurrency: REAPER_CONCURRENCY,
    });
  } finally {
    await broker.stop();
    for (const prefix of ['rg', 'dr', 'ds']) await dropRoles(ctx.server, prefix);
  }
}
