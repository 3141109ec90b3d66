import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createCertificateAuthority } from '../../src/tls/certificates.js';
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
  const tls = await benchCertificates();
  const tlsBroker = await startBrokerProcess(ctx.server, {
    store: 'bench_store',
    extra: workload.config,
    env: workload.env,
    tls,
    mounts: { low: { ...mount('bb', {}), roles: { r: { member_of: [GROUP] } } } },
  });
  try {
    await tlsComparison(ctx, broker.url, tlsBroker.url, tls.ca, token, n(4000, 800));
    await resetTables(ctx);
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
    await tlsBroker.stop();
  }
}

/** A throwaway CA and a server certificate for 127.0.0.1, in files. */
async function benchCertificates(): Promise<{ cert_file: string; key_file: string; ca: string }> {
  const ca = await createCertificateAuthority({ commonName: 'credbroker bench CA' });
  const server = await ca.issue({ commonName: 'localhost', dnsNames: ['localhost', '127.0.0.1'] });
  const dir = mkdtempSync(join(tmpdir(), 'credbroker-bench-tls-'));
  writeFileSync(join(dir, 'server.pem'), server.certPem);
  writeFileSync(join(dir, 'server-key.pem'), server.keyPem, { mode: 0o600 });
  return { cert_file: join(dir, 'server.pem'), key_file: join(dir, 'server-key.pem'), ca: ca.certPem };
}

/**
 * issue_c16_tls: the same issue load at concurrency 16 over https and over plain http, on two
 * brokers of the same build and store, with the raw baseline, in one run. Kept-alive connections
 * pay the handshake once each: `tls_connections` is how many the client opened.
 */
async function tlsComparison(
  ctx: BenchContext,
  httpUrl: string,
  httpsUrl: string,
  ca: string,
  token: string,
  count: number,
): Promise<void> {
  const concurrency = 16;
  ctx.progress(`issue_c16_tls: ${count} leases at concurrency ${concurrency}, https and http`);
  const raw = new RawIssuer(ctx.server, 'bench_raw_store', 'bench_target', concurrency, {
    group: GROUP,
    prefix: 'rb',
    iterations: 16,
  });
  await closedLoop(50, concurrency, () => raw.issue());
  const rawRun = await closedLoop(count, concurrency, () => raw.issue());
  await raw.close();
  // Alternated in two halves each, so drift over the run (a growing table, a warming cache) falls on both alike.
  const clients = {
    http: httpClient(httpUrl, concurrency, token, ca),
    https: httpClient(httpsUrl, concurrency, token, ca),
  };
  const totals = {
    http: { seconds: 0, errors: 0, p50: [] as number[] },
    https: { seconds: 0, errors: 0, p50: [] as number[] },
  };
  for (const client of Object.values(clients)) await closedLoop(50, concurrency, () => client.issue('low/r'));
  for (let half = 0; half < 2; half++) {
    for (const kind of ['http', 'https'] as const) {
      const run = await closedLoop(count / 2, concurrency, () => clients[kind].issue('low/r'));
      totals[kind].seconds += count / 2 / run.rate;
      totals[kind].errors += run.errors;
      totals[kind].p50.push(run.p50);
    }
  }
  const tlsConnections = clients.https.connections();
  for (const client of Object.values(clients)) client.close();
  const rate = (kind: 'http' | 'https') => count / totals[kind].seconds;
  const p50 = (kind: 'http' | 'https') => totals[kind].p50.reduce((a, b) => a + b, 0) / totals[kind].p50.length;
  ctx.record({
    name: 'issue_c16_tls',
    unit: 'leases/s',
    broker: round(rate('https'), 1),
    raw: round(rawRun.rate, 1),
    ratio: round(rate('https') / rawRun.rate),
    count,
    concurrency,
    errors: totals.https.errors,
    http_rate: round(rate('http'), 1),
    http_errors: totals.http.errors,
    https_over_http: round(rate('https') / rate('http')),
    tls_connections: tlsConnections,
    requests_per_connection: round((count + 50) / tlsConnections, 1),
    https_p50_ms: round(p50('https')),
    http_p50_ms: round(p50('http')),
  });
}
