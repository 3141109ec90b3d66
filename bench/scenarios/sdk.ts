import { Broker } from '../../src/sdk/broker.js';
import { createDatabase, dropRoles, postgresMount, ROOT_TOKEN, sql, startBrokerProcess } from '../lib/cluster.js';
import type { BenchContext } from '../lib/context.js';
import { httpClient } from '../lib/http.js';
import { percentile, round } from '../lib/stats.js';

const GROUP = 'bench_readers';
/** Alternated in rounds, so a slow stretch of the machine falls on both sides alike. */
const ROUND = 25;

/**
 * What the SDK costs over the bare HTTP calls: one lease and its revoke, one after another,
 * through `broker.lease()` + `lease.revoke()` and through two raw keep-alive HTTP requests, on
 * the same broker process in the same run. Latency in ms, p50 and p99.
 */
export async function sdkScenario(ctx: BenchContext): Promise<void> {
  for (const db of ['sdk_store', 'sdk_target']) await createDatabase(ctx.server, db);
  await sql(
    ctx.server,
    'postgres',
    `DO $$ BEGIN CREATE ROLE ${GROUP} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
  );
  const broker = await startBrokerProcess(ctx.server, {
    store: 'sdk_store',
    mounts: {
      sdk: {
        ...postgresMount(ctx.server, 'sdk_target', { username_prefix: 'bs' }),
        roles: { r: { member_of: [GROUP] } },
      },
    },
  });
  const total = ctx.quick ? 100 : 500;
  const sdk = new Broker({ addr: broker.url, token: ROOT_TOKEN, env: {} });
  const raw = httpClient(broker.url, 1);
  const timings = { sdk: [] as number[], raw: [] as number[] };
  let errors = 0;
  const timed = async (into: number[], op: () => Promise<void>) => {
    const started = performance.now();
    try {
      await op();
      into.push(performance.now() - started);
    } catch {
      errors++;
    }
  };
  try {
    ctx.progress(`sdk_lease_revoke: ${total} lease+revoke pairs through the SDK and through raw HTTP, alternated`);
    for (let done = 0; done < total; done += ROUND) {
      for (let i = 0; i < ROUND; i++)
        await timed(timings.sdk, async () => {
          const lease = await sdk.lease('sdk/creds/r', { autoRenew: false });
          await lease.revoke();
        });
      for (let i = 0; i < ROUND; i++)
        await timed(timings.raw, async () => {
          const issued = await raw.issue('sdk/r');
          const revoked = await raw.request('PUT', 'sys/leases/revoke', { lease_id: issued.body.lease_id });
          if (revoked.status !== 204) throw new Error(`revoke: HTTP ${revoked.status}`);
        });
    }
    const p50 = { sdk: percentile(timings.sdk, 50), raw: percentile(timings.raw, 50) };
    ctx.record({
      name: 'sdk_lease_revoke',
      unit: 'ms p50 (lower is better)',
      broker: round(p50.sdk),
      raw: round(p50.raw),
      ratio: round(p50.sdk / p50.raw),
      sdk_p99_ms: round(percentile(timings.sdk, 99)),
      raw_http_p99_ms: round(percentile(timings.raw, 99)),
      pairs: total,
      errors,
    });
  } finally {
    raw.close();
    await sdk.close();
    await broker.stop();
    await dropRoles(ctx.server, 'bs', 'sdk_target');
  }
}
