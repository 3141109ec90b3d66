import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IssueRateDetector } from '../../src/alerts/issue-rate.js';
import { randomSecret } from '../../src/random.js';
import { api, startTestBroker } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';
import { sleep, waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'alrts';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let a: TestBroker;
let b: TestBroker;
let storeDb: string;
let cluster: JwksServer;
let receiver: Server;
/** Every body the webhook receiver got, parsed. */
const received: { detector: string; subject: string; summary: string; severity: string }[] = [];

beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body));
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/credbroker`;
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('alrts');
  const options = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
    audit: { hmac_key: `alerts-key-${randomSecret()}`, postgres: true },
    auth: { kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['etl']) }) },
    policies: { etl: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }] },
    // The baselines are merged when the test says (tick()), not on the timer.
    alerts: { webhook: { url, timeout: '5s' }, detectors: { issue_rate: { flush_interval: '1h' } } },
  };
  a = await startTestBroker(options);
  b = await startTestBroker(options);
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await cluster?.close();
  await new Promise((resolve) => receiver?.close(resolve));
  await dropRolesWithPrefix(PREFIX);
});

async function login(broker: TestBroker, serviceAccount: string): Promise<string> {
  const jwt = await cluster.sign(kubernetesClaims({ namespace: 'etl', serviceAccount }));
  const res = await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt }, null);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.auth.client_token;
}

const receivedFrom = (detector: string) => received.filter((r) => r.detector === detector);

/** Waits for the receiver to have `count` alerts of `detector`, then a little longer, so one too many would show. */
async function settle(detector: string, count: number) {
  await waitUntil(() => receivedFrom(detector).length >= count, {
    timeoutMs: 10_000,
    what: `${count} ${detector} alert(s)`,
  });
  await sleep(1000);
}

async function scrape(broker: TestBroker): Promise<string> {
  const res = await fetch(`${broker.url}/v1/sys/metrics?format=prometheus`, {
    headers: { 'x-vault-token': broker.config.root_token },
  });
  expect(res.status).toBe(200);
  return res.text();
}

describe('alerts on a real broker', () => {
  it('a burst of 20 denied requests by one token reaches the webhook once, the audit table and the metric', async () => {
    const token = await login(a, 'burst');
    for (let i = 0; i < 20; i++) {
      const res = await api(a, 'GET', 'sys/broker/reaper/status', undefined, token);
      expect(res.status).toBe(403);
    }
    await settle('denial_burst', 1);
    expect(receivedFrom('denial_burst')).toEqual([
      expect.objectContaining({ severity: 'warning', subject: expect.stringMatching(/^kubernetes\/.*burst/) }),
    ]);
    const rows = await adminQuery(
      storeDb,
      `SELECT identity ->> 'name' AS name, data FROM credbroker_audit
        WHERE type = 'event' AND operation = 'alert' AND data ->> 'detector' = 'denial_burst'`,
    );
    expect(rows).toHaveLength(1);
    expect(rows[0].data).toMatchObject({ severity: 'warning', summary: expect.stringContaining('denied 10 times') });
    expect(await scrape(a)).toContain('credbroker_alerts_total{detector="denial_burst",severity="warning"} 1\n');
  });

  it('root-token use fires, and goes out once per dedup window', async () => {
    // a's scrape above used the root token already.
    for (let i = 0; i < 3; i++) expect((await api(b, 'GET', 'sys/broker/reaper/status')).status).toBe(200);
    await settle('root_token', 2);
    expect(receivedFrom('root_token')).toHaveLength(2); // one from each replica: dedup is per process
    const rows = await adminQuery(
      storeDb,
      `SELECT count(*)::int AS n FROM credbroker_audit WHERE operation = 'alert' AND data ->> 'detector' = 'root_token'`,
    );
    expect(rows[0].n).toBe(2);
  });

  it('two replicas on one store agree on an identity’s baseline, and report its first use of a role once', async () => {
    const tokenA = await login(a, 'pipeline');
    const tokenB = await login(b, 'pipeline');
    for (const [broker, token, count] of [
      [a, tokenA, 3],
      [b, tokenB, 2],
    ] as const) {
      for (let i = 0; i < count; i++) {
        const res = await api(broker, 'PUT', 'db/creds/reader', {}, token);
        expect(res.status, JSON.stringify(res.body)).toBe(200);
      }
    }
    await a.alerts.tick();
    await b.alerts.tick();
    // a merges again (nothing new) and takes back b's issues too.
    await a.alerts.tick();
    const rows = await adminQuery(storeDb, `SELECT identity, rate, first_seen FROM credbroker_alert_baselines`);
    expect(rows).toHaveLength(1);
    const identity = rows[0].identity as string;
    expect(identity).toMatch(/^kubernetes\/.*pipeline/);
    // Five issues at half-life 1 h, a few seconds of decay: 5·ln2/3600 per second, to 1 %.
    const expected = (5 * Math.LN2) / 3600;
    expect(rows[0].rate).toBeGreaterThan(expected * 0.99);
    expect(rows[0].rate).toBeLessThanOrEqual(expected);
    const baseline = (broker: TestBroker) =>
      (broker.alerts.engine.detectors.find((d) => d.name === 'issue_rate') as IssueRateDetector).baseline(identity)!;
    expect(baseline(a)).toBeCloseTo(rows[0].rate, 6);
    await b.alerts.tick();
    expect(baseline(b)).toBeCloseTo(baseline(a), 6);

    await settle('first_use', 1);
    expect(receivedFrom('first_use')).toEqual([
      expect.objectContaining({ subject: `${identity} role db/creds/reader`, severity: 'info' }),
    ]);
    const seen = await adminQuery(
      storeDb,
      `SELECT kind, value FROM credbroker_alert_seen WHERE identity = $1 ORDER BY kind`,
      [identity],
    );
    expect(seen).toEqual([
      { kind: 'network', value: '127.0.0.0/24' },
      { kind: 'role', value: 'db/creds/reader' },
    ]);
  });

  it('a replica shutting down merges its last issues into the shared baseline', async () => {
    const [before] = await adminQuery(storeDb, `SELECT identity, rate FROM credbroker_alert_baselines`);
    const token = await login(b, 'pipeline');
    expect((await api(b, 'PUT', 'db/creds/reader', {}, token)).status).toBe(200);
    await b.close();
    const [after] = await adminQuery(storeDb, `SELECT identity, rate FROM credbroker_alert_baselines`);
    // One more issue: + ln2/3600, less a few seconds' decay of the rest.
    expect(after.rate - before.rate).toBeGreaterThan((Math.LN2 / 3600) * 0.9);
  });
});
