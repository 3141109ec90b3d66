import pg from 'pg';
import { migrate } from '../../src/store/migrate.js';
import { createDatabase, createRoles, dropRoles, postgresMount, sql, startBrokerProcess } from '../lib/cluster.js';
import type { BenchContext, Scenario } from '../lib/context.js';
import { httpClient } from '../lib/http.js';
import { closedLoop, percentile, round } from '../lib/stats.js';

const GROUP = 'bench_readers';
const ROWS = 1_000_000;
const ACTIVE = 50_000;
const PREFIX_LEASES = 1000;

/** A million-row history: mostly revoked, 50,000 active and not yet due, as a busy year leaves it. */
async function fillTable(ctx: BenchContext, store: string): Promise<void> {
  const pool = new pg.Pool({ connectionString: ctx.server.url(store), max: 1 });
  await migrate(pool);
  await pool.end();
  await sql(
    ctx.server,
    store,
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, issued_at, expires_at, max_expires_at,
                                    next_attempt_at, revoked_at, revoke_reason)
     SELECT 'hist/creds/r' || (i % 50) || '/' || lpad(i::text, 24, '0'), 'hist', 'r' || (i % 50), 'postgres',
            CASE WHEN i <= ${ACTIVE} THEN 'active' ELSE 'revoked' END,
            jsonb_build_object('username', 'hist_' || i),
            now() - interval '30 days', now() + CASE WHEN i <= ${ACTIVE} THEN interval '1 day' ELSE - interval '29 days' END,
            now() + interval '1 day',
            CASE WHEN i <= ${ACTIVE} THEN now() + interval '1 day' END,
            CASE WHEN i > ${ACTIVE} THEN now() - interval '29 days' END,
            CASE WHEN i > ${ACTIVE} THEN 'expired' END
       FROM generate_series(1, ${ROWS}) i`,
  );
  await sql(ctx.server, store, 'ANALYZE credbroker_leases');
}

interface Measured {
  startupMs: number;
  rssRestMb: number;
  rssAfterBurstMb: number;
  issueP50: number;
  lookupP50: number;
  revokePrefixMs: number;
  dueQueryMs: number;
  dueUsesIndex: boolean;
}

async function measure(ctx: BenchContext, store: string, label: string): Promise<Measured> {
  const broker = await startBrokerProcess(ctx.server, {
    store,
    mounts: {
      scale: {
        ...postgresMount(ctx.server, 'scale_target', { username_prefix: 'sc', max_open_connections: 8 }),
        roles: { r: { member_of: [GROUP] }, rp: { member_of: [GROUP] } },
      },
    },
    reaper: { schedule: '0 0 1 1 *' }, // keep the reaper out of the measurements
  });
  try {
    await new Promise((r) => setTimeout(r, 500));
    const rssRestMb = broker.rssKb() / 1024;
    const client = httpClient(broker.url, 16);
    const count = ctx.quick ? 200 : 1000;
    ctx.progress(`scale (${label}): issue and lookup latency`);
    const ids: string[] = [];
    await closedLoop(20, 1, () => client.issue('scale/r'));
    const issue = await closedLoop(count, 1, async () => ids.push((await client.issue('scale/r')).body.lease_id));
    const lookup = await closedLoop(count, 1, async (i) => {
      const reply = await client.request('PUT', 'sys/leases/lookup', { lease_id: ids[i % ids.length] });
      if (reply.status !== 200) throw new Error(String(reply.status));
    });

    ctx.progress(`scale (${label}): revoke-prefix of ${PREFIX_LEASES} leases`);
    await createRoles(ctx.server, 'sp', PREFIX_LEASES, GROUP);
    await sql(
      ctx.server,
      store,
      `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, expires_at, max_expires_at, next_attempt_at)
       SELECT 'scale/creds/rp/' || lpad(i::text, 24, '0'), 'scale', 'rp', 'postgres', 'active',
              jsonb_build_object('username', 'sp_' || i), now() + interval '1 hour', now() + interval '1 day', now() + interval '1 hour'
         FROM generate_series(1, ${PREFIX_LEASES}) i`,
    );
    const t = performance.now();
    const revoked = await client.request('PUT', 'sys/leases/revoke-prefix/scale/creds/rp');
    const revokePrefixMs = performance.now() - t;
    if (revoked.status !== 204) throw new Error(`revoke-prefix: ${revoked.status} ${JSON.stringify(revoked.body)}`);

    // The due query is tens of microseconds: the median of many runs, warm, is the figure.
    const dueTimes: number[] = [];
    let planJson = '';
    for (let i = 0; i < 21; i++) {
      const [plan] = await sql<{ 'QUERY PLAN': any }>(
        ctx.server,
        store,
        `EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM credbroker_leases WHERE next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 256 FOR UPDATE SKIP LOCKED`,
      );
      dueTimes.push(plan!['QUERY PLAN'][0]['Execution Time']);
      planJson = JSON.stringify(plan!['QUERY PLAN']);
    }

    ctx.progress(`scale (${label}): 500-request burst for memory`);
    await closedLoop(500, 500, () => client.issue('scale/r'));
    client.close();
    return {
      startupMs: broker.startupMs,
      rssRestMb,
      rssAfterBurstMb: broker.rssKb() / 1024,
      issueP50: issue.p50,
      lookupP50: lookup.p50,
      revokePrefixMs,
      dueQueryMs: percentile(dueTimes, 50),
      dueUsesIndex: planJson.includes('credbroker_leases_due'),
    };
  } finally {
    await broker.stop();
    await dropRoles(ctx.server, 'sc');
    await dropRoles(ctx.server, 'sp');
  }
}

/** The same figures with an empty lease table and with a million rows. */
export async function scaleScenarios(ctx: BenchContext): Promise<void> {
  for (const db of ['scale_empty', 'scale_full', 'scale_target']) await createDatabase(ctx.server, db);
  await sql(
    ctx.server,
    'postgres',
    `DO $$ BEGIN CREATE ROLE ${GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
  );
  const empty = await measure(ctx, 'scale_empty', 'empty table');
  ctx.progress(`scale: loading ${ROWS.toLocaleString()} lease rows`);
  await fillTable(ctx, 'scale_full');
  const full = await measure(ctx, 'scale_full', `${ROWS.toLocaleString()} rows`);

  const row = (name: string, unit: string, f: number, e: number, extra: Record<string, unknown> = {}): Scenario => ({
    name,
    unit,
    broker: round(f, 3),
    raw: round(e, 3),
    ratio: round(f / e),
    full_table: round(f, 3),
    empty_table: round(e, 3),
    rows: ROWS,
    ...extra,
  });
  ctx.record(row('scale_issue', 'p50 ms', full.issueP50, empty.issueP50));
  ctx.record(row('scale_lookup', 'p50 ms', full.lookupP50, empty.lookupP50));
  ctx.record(row('scale_revoke_prefix', `ms for ${PREFIX_LEASES} leases`, full.revokePrefixMs, empty.revokePrefixMs));
  ctx.record(row('scale_due_query', 'ms', full.dueQueryMs, empty.dueQueryMs, { index_scan: full.dueUsesIndex }));
  ctx.record(row('startup', 'ms to healthy', full.startupMs, empty.startupMs));
  ctx.record(
    row('memory', 'RSS MB at rest', full.rssRestMb, empty.rssRestMb, {
      after_burst_full_mb: round(full.rssAfterBurstMb, 1),
      after_burst_empty_mb: round(empty.rssAfterBurstMb, 1),
    }),
  );
}
