import pg from 'pg';
import type { EmbeddedServer } from '../../src/store/embedded-postgres.js';
import { createDatabase, dropRoles, postgresMount, sql, startBrokerProcess } from '../lib/cluster.js';
import type { BenchContext } from '../lib/context.js';
import { httpClient } from '../lib/http.js';
import { workloadAuth } from '../lib/workload-login.js';
import { RawIssuer } from '../lib/raw.js';
import { closedLoop, round } from '../lib/stats.js';
import { migrate } from '../../src/store/migrate.js';

const GROUP = 'bench_readers';
const POOL_BOUND = 4;
const BURST = 500;

/** Samples how many connections the broker holds open to the target, every 10 ms, until stopped. */
export function watchTargetConnections(server: EmbeddedServer, applicationName: string) {
  const client = new pg.Client({ connectionString: server.url('postgres') });
  let peak = 0;
  let running = true;
  const done = (async () => {
    await client.connect();
    while (running) {
      const { rows } = await client.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [applicationName],
      );
      peak = Math.max(peak, rows[0]!.n);
      await new Promise((r) => setTimeout(r, 10));
    }
    await client.end();
  })();
  return {
    async stop(): Promise<number> {
      running = false;
      await done;
      return peak;
    },
  };
}

/** An init-container storm: 500 requests at once against a mount bounded to 4 target connections. */
export async function burstScenario(ctx: BenchContext): Promise<void> {
  for (const db of ['burst_store', 'burst_raw_store', 'burst_target']) await createDatabase(ctx.server, db);
  await sql(
    ctx.server,
    'postgres',
    `DO $$ BEGIN CREATE ROLE ${GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
  );
  const pool = new pg.Pool({ connectionString: ctx.server.url('burst_raw_store'), max: 1 });
  await migrate(pool);
  await pool.end();
  const workload = await workloadAuth();
  const broker = await startBrokerProcess(ctx.server, {
    store: 'burst_store',
    extra: workload.config,
    env: workload.env,
    mounts: {
      burst: {
        ...postgresMount(ctx.server, 'burst_target', { username_prefix: 'be', max_open_connections: POOL_BOUND }),
        roles: { r: { member_of: [GROUP] } },
      },
    },
  });
  try {
    ctx.progress(`burst_500: ${BURST} requests at once, target pool bound ${POOL_BOUND}`);
    const raw = new RawIssuer(ctx.server, 'burst_raw_store', 'burst_target', POOL_BOUND, {
      prefix: 'rf',
      group: GROUP,
      iterations: 16,
    });
    const rawRun = await closedLoop(BURST, BURST, () => raw.issue());
    await raw.close();

    const client = httpClient(broker.url, BURST, await workload.login(broker.url));
    const watcher = watchTargetConnections(ctx.server, 'credbroker:burst');
    const rssBefore = broker.rssKb();
    const brokerRun = await closedLoop(BURST, BURST, () => client.issue('burst/r'));
    const peak = await watcher.stop();
    client.close();
    ctx.record({
      name: 'burst_500',
      unit: 'leases/s',
      broker: round(brokerRun.rate, 1),
      raw: round(rawRun.rate, 1),
      ratio: round(brokerRun.rate / rawRun.rate),
      seconds: round(brokerRun.seconds),
      raw_seconds: round(rawRun.seconds),
      errors: brokerRun.errors,
      p99_ms: round(brokerRun.p99),
      peak_target_connections: peak,
      pool_bound: POOL_BOUND,
      rss_before_mb: round(rssBefore / 1024, 1),
      rss_after_mb: round(broker.rssKb() / 1024, 1),
    });
  } finally {
    await broker.stop();
    await dropRoles(ctx.server, 'be');
    await dropRoles(ctx.server, 'rf');
  }
}
