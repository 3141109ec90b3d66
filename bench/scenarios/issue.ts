import pg from 'pg';
import { migrate } from '../../src/store/migrate.js';
import { createDatabase, dropRoles, postgresMount, sql, startBrokerProcess } from '../lib/cluster.js';
import type { BenchContext } from '../lib/context.js';
import { httpClient } from '../lib/http.js';
import { workloadAuth } from '../lib/workload-login.js';
import { RawIssuer } from '../lib/raw.js';
import { closedLoop, percentile, round } from '../lib/stats.js';

const GROUP = 'bench_readers';

async function setUpDatabases(ctx: BenchContext): Promise<void> {
  for (const db of ['bench_store', 'bench_raw_store', 'bench_target']) await createDatabase(ctx.server, db);
  await sql(
    ctx.server,
    'postgres',
    `DO $$ BEGIN CREATE ROLE ${GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
  );
  await sql(ctx.server, 'bench_target', `CREATE TABLE items (id int PRIMARY KEY); GRANT SELECT ON items TO ${GROUP}`);
  const pool = new pg.Pool({ connectionString: ctx.server.url('bench_raw_store'), max: 1 });
  await migrate(pool);
  await pool.end();
}

async function resetTables(ctx: BenchContext): Promise<void> {
  await sql(ctx.server, 'bench_store', 'TRUNCATE credbroker_leases');
  await sql(ctx.server, 'bench_raw_store', 'TRUNCATE credbroker_leases');
  for (const prefix of ['bb', 'bc', 'bd', 'rb', 'rc', 'rd']) await dropRoles(ctx.server, prefix, 'bench_target');
}

/** Issue throughput and latency, broker over HTTP vs the raw minimum, at several concurrencies. */
export async function issueScenarios(ctx: BenchContext): Promise<void> {
  await setUpDatabases(ctx);
  const mount = (prefix: string, extra: Record<string, unknown>) =>
    postgresMount(ctx.server, 'bench_target', { username_prefix: prefix, max_open_connections: 16, ...extra });
  const workload = await workloadAuth();
  const broker = await startBrokerProcess(ctx.server, {
    store: 'bench_store',
    extra: workload.config,
    env: workload.env,
    mounts: {
      low: { ...mount('bb', {}), roles: { r: { member_of: [GROUP] } } },
      high: { ...mount('bc', { scram_iterations: 4096 }), roles: { r: { member_of: [GROUP] } } },
      grant: {
        ...mount('bd', {}),
        roles: {
          r: {
            creation_statements: [
              `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`,
              'GRANT SELECT ON items TO "{{name}}"',
            ],
          },
        },
      },
    },
  });
  const token = await workload.login(broker.url);
  const n = (full: number, quick: number) => (ctx.quick ? quick : full);
  const cases = [
    { name: 'issue_c1', mount: 'low', concurrency: 1, count: n(600, 150), raw: { prefix: 'rb', iterations: 16 } },
    { name: 'issue_c16', mount: 'low', concurrency: 16, count: n(4000, 800), raw: { prefix: 'rb', iterations: 16 } },
    { name: 'issue_c64', mount: 'low', concurrency: 64, count: n(4000, 800), raw: { prefix: 'rb', iterations: 16 } },
    {
      name: 'issue_c16_4096',
      mount: 'high',
      concurrency: 16,
      count: n(1000, 200),
      raw: { prefix: 'rc', iterations: 4096 },
    },
    {
      name: 'issue_c16_grant',
      mount: 'grant',
      concurrency: 16,
      count: n(1000, 200),
      raw: { prefix: 'rd', iterations: 16, grantTable: 'items' },
    },
  ];
  try {
    for (const c of cases) {
      ctx.progress(`${c.name}: ${c.count} leases at concurrency ${c.concurrency}`);
      const raw = new RawIssuer(ctx.server, 'bench_raw_store', 'bench_target', c.concurrency, {
        group: GROUP,
        ...c.raw,
      });
      await closedLoop(Math.min(50, c.count), c.concurrency, () => raw.issue()); // warm-up
      const rawRun = await closedLoop(c.count, c.concurrency, () => raw.issue());
      await raw.close();
      const client = httpClient(broker.url, c.concurrency, token);
      const overhead: number[] = [];
      await closedLoop(Math.min(50, c.count), c.concurrency, () => client.issue(`${c.mount}/r`));
      const brokerRun = await closedLoop(c.count, c.concurrency, async () =>
        overhead.push((await client.issue(`${c.mount}/r`)).brokerMs),
      );
      client.close();
      ctx.record({
        name: c.name,
        unit: 'leases/s',
        broker: round(brokerRun.rate, 1),
        raw: round(rawRun.rate, 1),
        ratio: round(brokerRun.rate / rawRun.rate),
        count: c.count,
        concurrency: c.concurrency,
        errors: brokerRun.errors,
        raw_errors: rawRun.errors,
        broker_p50_ms: round(brokerRun.p50),
        broker_p99_ms: round(brokerRun.p99),
        raw_p50_ms: round(rawRun.p50),
        raw_p99_ms: round(rawRun.p99),
        overhead_p50_ms: round(percentile(overhead, 50), 3),
        overhead_p99_ms: round(percentile(overhead, 99), 3),
      });
      await resetTables(ctx);
    }
  } finally {
    await broker.stop();
  }
}
