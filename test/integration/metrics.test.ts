import { createRequire } from 'node:module';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomSecret } from '../../src/random.js';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
} from '../support/jwks-server.js';
import type { JwksServer } from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'metrx';

interface Sample {
  value: string;
  labels?: Record<string, string>;
}
interface Family {
  name: string;
  help: string;
  type: string;
  metrics: Sample[];
}
const parsePrometheusText = createRequire(import.meta.url)('parse-prometheus-text-format') as (
  text: string,
) => Family[];

/**
 * Every sample of a scrape as the parser reads it. The parser folds a labelled histogram's series
 * into one, so a second parse reads histograms as untyped: their _bucket/_sum/_count lines each.
 */
function samplesOf(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  return parsePrometheusText(text.replace(/^# TYPE (\S+) histogram$/gm, '# TYPE $1 untyped')).flatMap((family) =>
    family.metrics.map((m) => ({ name: family.name, labels: m.labels ?? {}, value: Number(m.value) })),
  );
}

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;
let storeDb: string;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
let cluster: JwksServer;
const dir = mkdtempSync(join(tmpdir(), 'credbroker-metrics-'));
/** A file sink in a directory that does not exist: every write fails while the postgres sink accepts. */
const brokenSink = `file:${join(dir, 'missing', 'audit.jsonl')}`;

beforeAll(async () => {
  cluster = await startJwksServer({ algs: ['RS256'], issuer: K8S_ISSUER });
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('metrx');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
    audit: { hmac_key: `metrics-key-${randomSecret()}`, postgres: true, file: { path: brokenSink.slice(5) } },
    auth: {
      kubernetes: kubernetesAuthMount(cluster, {
        etl: kubernetesRole('etl', ['etl']),
        scraper: kubernetesRole('monitoring', ['scraper']),
      }),
    },
    policies: {
      etl: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }],
      scraper: [{ path: 'sys/metrics', capabilities: ['read'] }],
    },
  });
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
});

const scrape = (token: string | null = ROOT_TOKEN) =>
  fetch(`${broker.url}/v1/sys/metrics?format=prometheus`, { headers: token ? { 'x-vault-token': token } : {} });

async function login(role: string, namespace: string, serviceAccount: string): Promise<string> {
  const jwt = await cluster.sign(kubernetesClaims({ namespace, serviceAccount }));
  const res = await api(broker, 'PUT', 'auth/kubernetes/login', { role, jwt }, null);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.auth.client_token;
}

describe('GET /v1/sys/metrics?format=prometheus', () => {
  it('parses as Prometheus text and its counters match the operations performed; gauges match the store; no secret in it', async () => {
    const N = 6;
    const M = 3;
    const K = 2;
    const secrets: string[] = [ROOT_TOKEN];
    const leaseIds: string[] = [];
    for (let i = 0; i < N; i++) {
      const res = await api(broker, 'PUT', 'db/creds/reader', {});
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      leaseIds.push(res.body.lease_id);
      secrets.push(res.body.data.password);
    }
    expect((await api(broker, 'PUT', 'db/creds/nope', {})).status).toBe(400);
    for (const leaseId of leaseIds.slice(0, M)) {
      const res = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: leaseId, increment: 1200 });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    }
    for (const leaseId of leaseIds.slice(0, K))
      expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId })).status).toBe(204);
    // One lease expires and the reaper takes it: lag and batch size, not a revoke request.
    const expired = leaseIds[N - 1]!;
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET expires_at = now() - interval '30 seconds', next_attempt_at = now() - interval '30 seconds' WHERE id = $1`,
      [expired],
    );
    const reaped = await broker.reaper.reapOnce();
    expect(reaped.revoked).toEqual([expired]);

    // Denials: two by a logged-in identity, one with no token; and one failed login.
    const etlToken = await login('etl', 'etl', 'loader');
    secrets.push(etlToken);
    expect((await api(broker, 'PUT', 'sys/leases/revoke-prefix/db/', {}, etlToken)).status).toBe(403);
    expect((await scrape(etlToken)).status).toBe(403);
    expect((await api(broker, 'PUT', 'db/creds/reader', {}, null)).status).toBe(403);
    const forged = await cluster.sign(kubernetesClaims({ namespace: 'other' }));
    expect((await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt: forged }, null)).status).toBe(400);

    const res = await scrape();
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await res.text();
    for (const secret of secrets) expect(text).not.toContain(secret);

    const families = parsePrometheusText(text);
    const typeOf = new Map(families.map((f) => [f.name, f.type]));
    expect(typeOf.get('credbroker_lease_operations_total')).toBe('COUNTER');
    expect(typeOf.get('credbroker_lease_operation_duration_seconds')).toBe('HISTOGRAM');
    expect(typeOf.get('credbroker_leases')).toBe('GAUGE');
    const samples = samplesOf(text);
    const value = (name: string, labels: Record<string, string>) => {
      const found = samples.filter(
        (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
      );
      return found.reduce((sum, s) => sum + s.value, 0);
    };
    const ok = (operation: string) => ({ operation, mount: 'db', outcome: 'ok' });
    expect(value('credbroker_lease_operations_total', ok('issue'))).toBe(N);
    expect(value('credbroker_lease_operations_total', ok('renew'))).toBe(M);
    expect(value('credbroker_lease_operations_total', ok('revoke'))).toBe(K);
    expect(
      value('credbroker_lease_operations_total', { operation: 'issue', mount: 'db', outcome: 'ERR_UNKNOWN_ROLE' }),
    ).toBe(1);
    expect(value('credbroker_lease_operation_duration_seconds_count', ok('issue'))).toBe(N);
    expect(value('credbroker_lease_operation_duration_seconds_count', ok('renew'))).toBe(M);
    expect(value('credbroker_lease_operation_duration_seconds_bucket', { ...ok('revoke'), le: '+Inf' })).toBe(K);
    expect(value('credbroker_lease_operation_duration_seconds_sum', ok('issue'))).toBeGreaterThan(0);

    expect(value('credbroker_reaper_batch_size_count', {})).toBe(1);
    expect(value('credbroker_reaper_batch_size_sum', {})).toBe(1);
    expect(value('credbroker_reaper_lag_seconds_count', { mount: 'db' })).toBe(1);
    expect(value('credbroker_reaper_lag_seconds_sum', { mount: 'db' })).toBeGreaterThanOrEqual(29);

    expect(value('credbroker_logins_total', { auth_mount: 'kubernetes', outcome: 'ok' })).toBe(1);
    expect(
      value('credbroker_logins_total', { auth_mount: 'kubernetes', outcome: 'failed', reason: 'ERR_INVALID_REQUEST' }),
    ).toBe(1);
    expect(value('credbroker_policy_denials_total', { identity: 'kubernetes/system:serviceaccount:etl:loader' })).toBe(
      2,
    );
    expect(value('credbroker_policy_denials_total', { identity: '_anonymous' })).toBe(1);

    // Each request writes a request and a response record to both sinks; the file sink fails every time.
    const postgresWrites = value('credbroker_audit_sink_write_duration_seconds_count', { sink: 'postgres' });
    expect(postgresWrites).toBeGreaterThanOrEqual(2 * (N + 1 + M + K + 5));
    expect(value('credbroker_audit_sink_failures_total', { sink: 'postgres' })).toBe(0);
    expect(value('credbroker_audit_sink_failures_total', { sink: brokenSink })).toBe(
      value('credbroker_audit_sink_write_duration_seconds_count', { sink: brokenSink }),
    );
    expect(value('credbroker_audit_sink_failures_total', { sink: brokenSink })).toBeGreaterThan(0);

    const inStore = await adminQuery<{ mount: string; state: string; n: number }>(
      storeDb,
      `SELECT mount, state, count(*)::int AS n FROM credbroker_leases WHERE state <> 'revoked' GROUP BY mount, state`,
    );
    expect(inStore).toEqual([{ mount: 'db', state: 'active', n: N - K - 1 }]);
    for (const state of ['pending', 'active', 'revoking', 'irrevocable'])
      expect(value('credbroker_leases', { mount: 'db', state }), state).toBe(
        inStore.find((r) => r.state === state)?.n ?? 0,
      );
    expect(value('credbroker_irrevocable_leases', { mount: 'db' })).toBe(0);
    expect(samples.some((s) => s.name === 'credbroker_target_pool_connections' && s.labels.mount === 'db')).toBe(true);
    expect(value('credbroker_target_pool_waiting', { mount: 'db' })).toBe(0);
  });

  it('a revocation that fails for good counts as irrevocable, by mount', async () => {
    const res = await api(broker, 'PUT', 'db/creds/reader', {});
    expect(res.status).toBe(200);
    // Its mount vanished from the config: the revocation fails, and with its attempts used up, for good.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET mount = 'ghost', attempts = 99, expires_at = now() - interval '1 second', next_attempt_at = now() - interval '1 second' WHERE id = $1`,
      [res.body.lease_id],
    );
    expect((await broker.reaper.reapOnce()).failed).toEqual([res.body.lease_id]);
    expect(
      (await adminQuery(storeDb, 'SELECT state FROM credbroker_leases WHERE id = $1', [res.body.lease_id]))[0].state,
    ).toBe('irrevocable');
    const samples = samplesOf(await (await scrape()).text());
    const failures = samples.filter((s) => s.name === 'credbroker_revocation_failures_total');
    expect(failures).toEqual([
      { name: 'credbroker_revocation_failures_total', labels: { mount: '_unknown', result: 'irrevocable' }, value: 1 },
    ]);
    await adminQuery(storeDb, `UPDATE credbroker_leases SET state = 'revoked', mount = 'db' WHERE id = $1`, [
      res.body.lease_id,
    ]);
  });

  it('a token with read on sys/metrics scrapes; one without it, or none, gets 403; another format is a 400', async () => {
    const scraper = await login('scraper', 'monitoring', 'prometheus');
    const allowed = await scrape(scraper);
    expect(allowed.status).toBe(200);
    expect(await allowed.text()).toContain('credbroker_lease_operations_total');
    const etl = await login('etl', 'etl', 'reader');
    const denied = await scrape(etl);
    expect(denied.status).toBe(403);
    expect(await denied.json()).toEqual({ errors: ['permission denied'] });
    expect((await scrape(null)).status).toBe(403);
    const json = await api(broker, 'GET', 'sys/metrics');
    expect(json.status).toBe(400);
    expect(json.body.errors[0]).toMatch(/prometheus/);
  });
});
