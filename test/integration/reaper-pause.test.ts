import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomLeaseSuffix } from '../../src/random.js';
import { api, startTestBroker } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  randomName,
  roleExists,
} from '../support/pg.js';
import { sleep, waitUntil } from '../support/wait.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'rpause';
const HMAC_KEY = 'reaper-pause-audit-key-0123456789abcdef';
const REASON = 'store restored from the 02:00 backup';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let a: TestBroker;
let b: TestBroker;
let storeDb: string;
let cluster: JwksServer;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('rpause');
  // Two replicas on one store, each reaping on its own timer (every second), as in production.
  const replica = () =>
    startTestBroker({
      storeDatabase: storeDb,
      targetDatabase: target.database,
      prefix: PREFIX,
      roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
      scheduleReaper: true,
      audit: { hmac_key: HMAC_KEY, postgres: true },
      auth: {
        kubernetes: kubernetesAuthMount(cluster, {
          ops: kubernetesRole('ops', ['reaper-ops']),
          etl: kubernetesRole('etl', ['etl']),
          short: kubernetesRole('etl', ['etl-creds'], { token_ttl: '2s' }),
        }),
      },
      policies: {
        'etl-creds': [{ path: 'db/creds/reader', capabilities: ['update'] }],
        'reaper-ops': [{ path: 'sys/broker/reaper/*', capabilities: ['sudo'] }],
        // Everything but sudo on the reaper's paths: not enough.
        etl: [{ path: 'sys/broker/reaper/*', capabilities: ['read', 'update', 'list'] }],
      },
    });
  a = await replica();
  b = await replica();
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
});

async function issue(on: TestBroker, ttl: number) {
  const res = await api(on, 'PUT', 'db/creds/reader', { ttl });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { leaseId: res.body.lease_id as string, data: res.body.data };
}

/** A crashed issue, as a killed broker leaves it: a real role and its pending row, past the grace. */
async function seedCrashedPending(): Promise<{ id: string; username: string }> {
  const username = `${PREFIX}_reader_${randomName(16)}`;
  const id = `db/creds/reader/${randomLeaseSuffix()}`;
  await adminQuery(
    'postgres',
    `CREATE ROLE ${pg.escapeIdentifier(username)} LOGIN IN ROLE ${pg.escapeIdentifier(target.group)}`,
  );
  await adminQuery(
    storeDb,
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester, issued_at, expires_at, max_expires_at, next_attempt_at)
     VALUES ($1, 'db', 'reader', 'postgres', 'pending', jsonb_build_object('username', $2::text), 'seed',
             now() - interval '1 hour', now() + interval '1 hour', now() + interval '1 hour', now() - interval '1 s')`,
    [id, username],
  );
  return { id, username };
}

const states = async (ids: string[]) =>
  (
    await adminQuery<{ state: string }>(storeDb, 'SELECT state FROM credbroker_leases WHERE id = ANY($1) ORDER BY id', [
      ids,
    ])
  ).map((r) => r.state);

/** The reaper-paused gauge as replica `on` exports it to Prometheus. */
async function pausedGauge(on: TestBroker): Promise<string | undefined> {
  const res = await api(on, 'GET', 'sys/metrics?format=prometheus');
  expect(res.status).toBe(200);
  return /^credbroker_reaper_paused (\S+)$/m.exec(String(res.body))?.[1];
}

const existing = async (usernames: string[]) =>
  (await adminQuery('postgres', 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ANY($1)', [usernames]))[0].n;

describe('reaper pause across two replicas', () => {
  it('holds every expiry and crashed issue while paused, still runs explicit revokes, and reaps all within seconds of resume', async () => {
    const paused = await api(a, 'PUT', 'sys/broker/reaper/pause', { reason: REASON });
    expect(paused.status, JSON.stringify(paused.body)).toBe(200);
    expect(paused.body.data).toMatchObject({ paused: true, paused_by: 'token/root', reason: REASON });

    // Replica B sees A's pause: the switch is in the store, not in A's memory.
    const status = await api(b, 'GET', 'sys/broker/reaper/status');
    expect(status.body.data).toMatchObject({ paused: true, paused_by: 'token/root', reason: REASON });
    expect(Date.parse(status.body.data.since)).toBeGreaterThan(Date.now() - 60_000);
    for (const replica of [a, b]) {
      const health = await api(replica, 'GET', 'sys/health', undefined, null);
      expect(health.status).toBe(200);
      expect(health.body).toMatchObject({ initialized: true, sealed: false, lease_store: 'ok', reaper: 'paused' });
    }

    expect(await pausedGauge(b)).toBe('1');

    const expiring = [
      ...(await Promise.all([1, 2, 1].map((ttl) => issue(a, ttl)))),
      ...(await Promise.all([2, 1, 2].map((ttl) => issue(b, ttl)))),
    ];
    const crashed = await seedCrashedPending();
    const ids = [...expiring.map((l) => l.leaseId), crashed.id].sort();
    const usernames = [...expiring.map((l) => l.data.username as string), crashed.username];
    const explicit = await issue(b, 600);

    // Past every expiry, and several ticks of both replicas' reapers.
    await sleep(5000);
    expect(await existing(usernames)).toBe(usernames.length);
    expect(await states(ids)).toEqual(ids.map((id) => (id === crashed.id ? 'pending' : 'active')));
    // Nothing took their power away (ALTER ROLE NOLOGIN is revocation's first step). Their own
    // VALID UNTIL has passed, as the engine set it; on a restored store the target's is the later one.
    const canLogin = await adminQuery(
      'postgres',
      'SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ANY($1) AND rolcanlogin',
      [usernames],
    );
    expect(canLogin[0].n).toBe(usernames.length);
    const queued = await api(a, 'GET', 'sys/broker/reaper/status');
    expect(queued.body.data.due_queued).toBeGreaterThanOrEqual(ids.length);

    // An operator's revoke is not the reaper's decision: it runs while paused.
    const revoked = await api(a, 'PUT', 'sys/leases/revoke', { lease_id: explicit.leaseId });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(204);
    expect(await roleExists(explicit.data.username)).toBe(false);
    expect(await states([explicit.leaseId])).toEqual(['revoked']);

    const resumed = await api(b, 'PUT', 'sys/broker/reaper/resume');
    expect(resumed.status, JSON.stringify(resumed.body)).toBe(200);
    expect(resumed.body.data).toMatchObject({ paused: false, paused_by: null, reason: null });
    const resumedAt = Date.now();
    await waitUntil(async () => (await existing(usernames)) === 0, {
      timeoutMs: 10_000,
      what: 'every held role to be dropped after resume',
    });
    console.log(`reaper-pause: ${usernames.length} held leases reaped ${Date.now() - resumedAt} ms after resume`);
    await waitUntil(async () => (await states(ids)).every((s) => s === 'revoked'), {
      timeoutMs: 5000,
      what: 'every held lease row to be revoked',
    });
    const reasons = await adminQuery(
      storeDb,
      'SELECT revoke_reason, count(*)::int AS n FROM credbroker_leases WHERE id = ANY($1) GROUP BY 1 ORDER BY 1',
      [ids],
    );
    expect(reasons).toEqual([
      { revoke_reason: 'cleanup', n: 1 },
      { revoke_reason: 'expired', n: expiring.length },
    ]);
    for (const replica of [a, b]) {
      expect((await api(replica, 'GET', 'sys/health', undefined, null)).body.reaper).toBe('running');
      expect(await pausedGauge(replica)).toBe('0');
    }

    // The audit trail names who paused and why, and who resumed.
    const audit = await adminQuery(
      storeDb,
      `SELECT path, identity->>'name' AS who, data->>'reason' AS reason FROM credbroker_audit
        WHERE type = 'request' AND path LIKE 'sys/broker/reaper/%' AND path <> 'sys/broker/reaper/status' ORDER BY time`,
    );
    expect(audit).toEqual([
      { path: 'sys/broker/reaper/pause', who: 'root', reason: REASON },
      { path: 'sys/broker/reaper/resume', who: 'root', reason: null },
    ]);
  });

  it('refuses a pause body with unknown fields or an oversized reason as a 400, and leaves the reaper running', async () => {
    await api(a, 'PUT', 'sys/broker/reaper/resume'); // whatever the test before left
    for (const body of [{ reasn: 'typo' }, { reason: 'x'.repeat(2000) }, { reason: 42 }, '[1]']) {
      const res = await api(a, 'PUT', 'sys/broker/reaper/pause', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.errors).toHaveLength(1);
    }
    expect((await api(b, 'GET', 'sys/broker/reaper/status')).body.data.paused).toBe(false);
    expect((await api(a, 'GET', 'sys/broker/reaper/status', undefined, 'not-a-token')).status).toBe(403);
  });
});

describe('who may pause', () => {
  async function tokenFor(role: string, namespace: string, serviceAccount: string): Promise<string> {
    const jwt = await cluster.sign(kubernetesClaims({ namespace, serviceAccount }));
    const res = await api(a, 'PUT', 'auth/kubernetes/login', { role, jwt }, null);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.auth.client_token;
  }

  it('needs sudo on sys/broker/reaper/*: 403 without it, and the operator who has it is named in status and audit', async () => {
    await api(a, 'PUT', 'sys/broker/reaper/resume');
    const etl = await tokenFor('etl', 'etl', 'reader');
    expect((await api(a, 'PUT', 'sys/broker/reaper/pause', {}, etl)).status).toBe(403);
    expect((await api(a, 'PUT', 'sys/broker/reaper/resume', {}, etl)).status).toBe(403);
    expect((await api(a, 'GET', 'sys/broker/reaper/status', undefined, etl)).status).toBe(403);
    expect((await api(b, 'GET', 'sys/broker/reaper/status')).body.data.paused).toBe(false);

    const ops = await tokenFor('ops', 'ops', 'oncall');
    const paused = await api(b, 'PUT', 'sys/broker/reaper/pause', { reason: 'drill' }, ops);
    expect(paused.status, JSON.stringify(paused.body)).toBe(200);
    const who = 'system:serviceaccount:ops:oncall';
    expect((await api(a, 'GET', 'sys/broker/reaper/status', undefined, ops)).body.data).toMatchObject({
      paused: true,
      paused_by: `kubernetes/${who}`,
      reason: 'drill',
    });
    const audit = await adminQuery(
      storeDb,
      `SELECT identity->>'name' AS who, identity->>'auth_mount' AS mount, outcome FROM credbroker_audit
        WHERE type = 'response' AND path = 'sys/broker/reaper/pause'
          AND identity->>'name' <> 'root' ORDER BY time`,
    );
    expect(audit).toEqual([
      { who: 'system:serviceaccount:etl:reader', mount: 'kubernetes', outcome: 'denied' },
      { who, mount: 'kubernetes', outcome: 'ok' },
    ]);
    expect((await api(a, 'PUT', 'sys/broker/reaper/resume', {}, ops)).status).toBe(200);
  });
});

describe('token expiry while paused', () => {
  it("an expired token's leases are held while paused and revoked after resume", async () => {
    await api(a, 'PUT', 'sys/broker/reaper/pause', { reason: 'token expiry' });
    try {
      const jwt = await cluster.sign(kubernetesClaims({ namespace: 'etl', serviceAccount: 'short' }));
      const login = await api(a, 'PUT', 'auth/kubernetes/login', { role: 'short', jwt }, null);
      expect(login.status, JSON.stringify(login.body)).toBe(200);
      const res = await api(a, 'PUT', 'db/creds/reader', { ttl: 600 }, login.body.auth.client_token);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      // The token expires after 2 s; the token-expiry sweep runs every 5 s on each replica.
      await sleep(8000);
      expect(await roleExists(res.body.data.username)).toBe(true);
      expect(await states([res.body.lease_id])).toEqual(['active']);
      await api(b, 'PUT', 'sys/broker/reaper/resume');
      await waitUntil(async () => !(await roleExists(res.body.data.username)), {
        timeoutMs: 12_000,
        what: "the expired token's lease to be revoked after resume",
      });
    } finally {
      await api(a, 'PUT', 'sys/broker/reaper/resume');
    }
  });
});
