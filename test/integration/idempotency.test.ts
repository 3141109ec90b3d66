import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotencyScope } from '../../src/leases/idempotent-insert.js';
import type { Broker } from '../../src/broker.js';
import { ROLE_ARN, startAwsBroker } from '../support/aws-broker.js';
import { startAwsEndpoint, type AwsEndpoint } from '../support/aws-endpoint/index.js';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  randomName,
  roleExists,
} from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'idemkey';
const KEY_HEADER = 'X-Credbroker-Idempotency-Key';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;

let replicaA: TestBroker;
let replicaB: TestBroker;
let storeDb: string;
let cluster: JwksServer;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('idem');
  const role = { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' };
  const options = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      reader: role,
      reader2: role,
      capped: { ...role, max_active_leases_per_identity: 1 },
      // Takes 1.5 s on the target: requests with its key arrive while its row is pending.
      slow: {
        creation_statements: [
          `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE ${target.group}`,
          'SELECT pg_sleep(1.5)',
        ],
      },
      // Fails on the target every time: the issue's pending row goes to cleanup.
      broken: { creation_statements: ['CREATE ROLE "{{name}}" LOGIN IN ROLE no_such_group_idemkey'] },
    },
    auth: { kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['etl']) }) },
    policies: { etl: [{ path: 'db/creds/*', capabilities: ['read', 'update'] }] },
  };
  // Two replicas on one store: the key must hold across them, with no state in either process.
  replicaA = await startTestBroker(options);
  replicaB = await startTestBroker(options);
});

afterAll(async () => {
  await replicaA?.close();
  await replicaB?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
});

/** A body for an assertion's message, without the password it may carry. */
const safe = (body: unknown) => JSON.stringify(body, (k, v: unknown) => (k === 'password' ? '(password)' : v));

interface Answer {
  status: number;
  body: any;
  leaseHeader: string | null;
}

/** A creds request as a client sends it, with the idempotency key header when given. */
async function creds(
  on: { url: string },
  path: string,
  opts: { key?: string; token?: string; method?: 'PUT' | 'GET'; body?: unknown } = {},
): Promise<Answer> {
  const method = opts.method ?? 'PUT';
  const headers: Record<string, string> = { 'x-vault-token': opts.token ?? ROOT_TOKEN };
  if (opts.key !== undefined) headers[KEY_HEADER] = opts.key;
  if (method === 'PUT') headers['content-type'] = 'application/json';
  const res = await fetch(`${on.url}/v1/${path}`, {
    method,
    headers,
    body: method === 'PUT' ? JSON.stringify(opts.body ?? {}) : undefined,
  });
  return { status: res.status, body: await res.json(), leaseHeader: res.headers.get('x-credbroker-lease-id') };
}

async function issued(answer: Promise<Answer>): Promise<{ leaseId: string; data: any }> {
  const res = await answer;
  expect(res.status, safe(res.body)).toBe(200);
  return { leaseId: res.body.lease_id, data: res.body.data };
}

async function loginToken(serviceAccount: string): Promise<string> {
  const jwt = await cluster.sign(kubernetesClaims({ namespace: 'etl', serviceAccount }));
  const res = await api(replicaA, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt }, null);
  expect(res.status, safe(res.body)).toBe(200);
  return res.body.auth.client_token;
}

async function leaseRows(role: string) {
  return adminQuery<{ id: string; state: string; revoke_reason: string | null; idempotency_scope: string | null }>(
    storeDb,
    `SELECT id, state, revoke_reason, idempotency_scope FROM credbroker_leases WHERE mount = 'db' AND role = $1 ORDER BY issued_at`,
    [role],
  );
}

async function targetRoles(): Promise<string[]> {
  const rows = await adminQuery<{ rolname: string }>('postgres', `SELECT rolname FROM pg_roles WHERE rolname LIKE $1`, [
    `${PREFIX}\\_%`,
  ]);
  return rows.map((r) => r.rolname).filter((r) => r !== target.group);
}

/** Roles on the target made for one broker role (usernames are <prefix>_<role>_<random>). */
async function targetRolesOf(role: string): Promise<string[]> {
  return (await targetRoles()).filter((r) => r.startsWith(`${PREFIX}_${role}_`));
}

/** Live (pending or active) leases of a role. */
async function liveRows(role: string) {
  return (await leaseRows(role)).filter((r) => r.state === 'pending' || r.state === 'active');
}

// Each test starts from no live lease and no role on the target.
afterEach(async () => {
  const res = await api(replicaA, 'PUT', 'sys/leases/revoke-prefix/db', {});
  expect(res.status, safe(res.body)).toBe(204);
  expect(await targetRoles()).toEqual([]);
});

const newKey = () => `pod-${randomName(8)}:lease/etl.reader_1`;

describe('idempotent lease requests', () => {
  it('20 concurrent requests with one key across two replicas yield exactly one lease row and one role', async () => {
    const key = newKey();
    const before = new Set((await leaseRows('reader')).map((r) => r.id));
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => creds(i % 2 ? replicaA : replicaB, 'db/creds/reader', { key })),
    );
    const granted = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.status !== 200);
    // Statuses and lease ids only: a failure message must not carry the passwords.
    const summary = JSON.stringify(answers.map((a) => [a.status, a.body?.lease_id ?? a.body?.errors]));
    expect(granted, summary).toHaveLength(1);
    const leaseId: string = granted[0]!.body.lease_id;
    // Every other answer is the documented refusal, naming that very lease.
    for (const a of refused) {
      expect(a.status, safe(a.body)).toBe(409);
      expect(a.body.data.lease_id).toBe(leaseId);
      expect(a.leaseHeader).toBe(leaseId);
      expect(a.body.errors[0]).toContain(leaseId);
      expect(safe(a.body)).not.toContain(granted[0]!.body.data.password);
    }
    const rows = (await leaseRows('reader')).filter((r) => !before.has(r.id));
    expect(rows.map((r) => r.id)).toEqual([leaseId]);
    expect(rows[0]!.state).toBe('active');
    const roles = await targetRolesOf('reader');
    expect(roles).toEqual([granted[0]!.body.data.username]);
    const client = await loginAs(granted[0]!.body.data);
    await client.end();
  });

  it('while the first issue runs on the target, the others wait on both replicas and answer 409 with the active lease', async () => {
    const key = newKey();
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => creds(i % 2 ? replicaA : replicaB, 'db/creds/slow', { key })),
    );
    const granted = answers.filter((a) => a.status === 200);
    const summary = JSON.stringify(answers.map((a) => [a.status, a.body?.lease_id ?? a.body?.errors]));
    expect(granted, summary).toHaveLength(1);
    const leaseId: string = granted[0]!.body.lease_id;
    for (const a of answers.filter((x) => x.status !== 200)) {
      expect(a.status, safe(a.body)).toBe(409);
      // They waited for the pending issue instead of refusing it at once.
      expect(a.body.data).toEqual({ lease_id: leaseId, state: 'active' });
    }
    expect((await leaseRows('slow')).map((r) => r.id)).toEqual([leaseId]);
    expect(await targetRolesOf('slow')).toEqual([granted[0]!.body.data.username]);
  });

  it('a retry with the key gets 409 naming the live lease, which its holder may look up and renew', async () => {
    const token = await loginToken('retrier');
    const key = newKey();
    const first = await issued(creds(replicaA, 'db/creds/reader', { key, token }));
    // On the other replica, and as a GET (Vault's read of the same path): the same request.
    for (const retry of [
      creds(replicaB, 'db/creds/reader', { key, token }),
      creds(replicaA, 'db/creds/reader', { key, token, method: 'GET' }),
      creds(replicaB, 'db/creds/reader', { key, token, body: { ttl: '5m' } }),
    ]) {
      const res = await retry;
      expect(res.status, safe(res.body)).toBe(409);
      expect(res.body.data).toEqual({ lease_id: first.leaseId, state: 'active' });
    }
    const lookup = await api(replicaB, 'PUT', 'sys/leases/lookup', { lease_id: first.leaseId }, token);
    expect(lookup.status, safe(lookup.body)).toBe(200);
    const renew = await api(replicaB, 'PUT', 'sys/leases/renew', { lease_id: first.leaseId, increment: 900 }, token);
    expect(renew.status, safe(renew.body)).toBe(200);
    expect(await liveRows('reader')).toHaveLength(1);
  });

  it('another key, another identity or another path is another request: a lease of its own', async () => {
    const [alice, bob] = [await loginToken('alice'), await loginToken('bob')];
    const key = newKey();
    const base = await issued(creds(replicaA, 'db/creds/reader', { key, token: alice }));
    const otherKey = await issued(creds(replicaB, 'db/creds/reader', { key: newKey(), token: alice }));
    const otherIdentity = await issued(creds(replicaB, 'db/creds/reader', { key, token: bob }));
    const rootIdentity = await issued(creds(replicaA, 'db/creds/reader', { key }));
    const otherPath = await issued(creds(replicaA, 'db/creds/reader2', { key, token: alice }));
    const ids = [base, otherKey, otherIdentity, rootIdentity, otherPath].map((l) => l.leaseId);
    expect(new Set(ids).size).toBe(5);
    expect(await liveRows('reader')).toHaveLength(4);
    expect(await targetRolesOf('reader')).toHaveLength(4);
    expect(await targetRolesOf('reader2')).toHaveLength(1);
  });

  it('after a revoke, the same key mints a new lease; the revoked one stays revoked', async () => {
    const key = newKey();
    const first = await issued(creds(replicaA, 'db/creds/reader', { key }));
    const revoke = await api(replicaB, 'PUT', 'sys/leases/revoke', { lease_id: first.leaseId });
    expect(revoke.status, safe(revoke.body)).toBe(204);
    expect(await roleExists(first.data.username)).toBe(false);
    const second = await issued(creds(replicaB, 'db/creds/reader', { key }));
    expect(second.leaseId).not.toBe(first.leaseId);
    expect(await targetRolesOf('reader')).toEqual([second.data.username]);
    const client = await loginAs(second.data);
    await client.end();
  });

  it('an expired lease no longer holds its key: the next request mints a new lease, and the reaper drops the old role', async () => {
    const key = newKey();
    const first = await issued(creds(replicaA, 'db/creds/reader', { key }));
    // Backdated instead of waited for; the reaper (not scheduled here) has not reached it.
    await adminQuery(storeDb, `UPDATE credbroker_leases SET expires_at = now() - interval '1 second' WHERE id = $1`, [
      first.leaseId,
    ]);
    const second = await issued(creds(replicaB, 'db/creds/reader', { key }));
    expect(second.leaseId).not.toBe(first.leaseId);
    const old = (await leaseRows('reader')).find((r) => r.id === first.leaseId)!;
    expect([old.state, old.revoke_reason]).toEqual(['revoking', 'expired']);
    await replicaA.reaper.reapOnce();
    expect(await roleExists(first.data.username)).toBe(false);
    expect((await leaseRows('reader')).find((r) => r.id === first.leaseId)!.state).toBe('revoked');
    expect(await targetRolesOf('reader')).toEqual([second.data.username]);
  });

  it('a request arriving while the first is pending waits for it: a failed first issue lets it mint the lease', async () => {
    const key = newKey();
    const fake = await fakePendingLease('reader', key);
    const waiting = creds(replicaB, 'db/creds/reader', { key });
    await new Promise((resolve) => setTimeout(resolve, 600));
    // The first issue failed on its target: its row goes to cleanup, as markForCleanup does.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET state = 'revoking', revoke_reason = 'cleanup', next_attempt_at = now() WHERE id = $1`,
      [fake],
    );
    const second = await issued(waiting);
    expect(second.leaseId).not.toBe(fake);
    await finishFake(fake);
  });

  it('a first request still pending after engine_timeout: the second gets 409 with the pending lease, never a credential', async () => {
    const key = newKey();
    const fake = await fakePendingLease('reader', key);
    const started = Date.now();
    const res = await creds(replicaA, 'db/creds/reader', { key });
    expect(res.status, safe(res.body)).toBe(409);
    expect(res.body.data).toEqual({ lease_id: fake, state: 'pending' });
    expect(res.body.errors[0]).toContain('still being issued');
    expect(Date.now() - started).toBeGreaterThanOrEqual(replicaA.config.engine_timeout * 1000 - 200);
    expect(await targetRolesOf('reader')).toEqual([]);
    await finishFake(fake);
  });

  it('a failed issue does not hold its key: the retry tries the target again instead of answering 409', async () => {
    const key = newKey();
    const first = await creds(replicaA, 'db/creds/broken', { key });
    expect(first.status, safe(first.body)).toBe(502);
    const retry = await creds(replicaB, 'db/creds/broken', { key });
    expect(retry.status, safe(retry.body)).toBe(502);
    const rows = await leaseRows('broken');
    expect(rows).toHaveLength(2);
    expect(rows.every((r) => r.state === 'revoking' || r.state === 'revoked')).toBe(true);
  });

  it('with a quota, the key in use answers 409 with the lease, not 429; another key is refused by the quota', async () => {
    const token = await loginToken('capped');
    const key = newKey();
    const first = await issued(creds(replicaA, 'db/creds/capped', { key, token }));
    const retry = await creds(replicaB, 'db/creds/capped', { key, token });
    expect(retry.status, safe(retry.body)).toBe(409);
    expect(retry.body.data.lease_id).toBe(first.leaseId);
    const other = await creds(replicaB, 'db/creds/capped', { key: newKey(), token });
    expect(other.status, safe(other.body)).toBe(429);
    expect(await targetRolesOf('capped')).toEqual([first.data.username]);
    const revoke = await api(replicaA, 'PUT', 'sys/leases/revoke', { lease_id: first.leaseId }, token);
    expect(revoke.status, safe(revoke.body)).toBe(204);
    // The quota's place is free again: the key mints a new lease within it.
    const second = await issued(creds(replicaB, 'db/creds/capped', { key, token }));
    expect(await targetRolesOf('capped')).toEqual([second.data.username]);
  });

  it('a malformed key is a 400 and mints nothing; the whole allowed alphabet, up to 128 characters, is accepted', async () => {
    const before = (await leaseRows('reader')).length;
    const bad = ['', 'a'.repeat(129), 'has space', 'comma,separated', 'quote"d', 'semi;colon', 'tab\tkey', 'ä-latin1'];
    for (const key of bad) {
      const res = await creds(replicaA, 'db/creds/reader', { key });
      expect(res.status, `${JSON.stringify(key)}: ${safe(res.body)}`).toBe(400);
      expect(res.body.errors[0]).toMatch(/x-credbroker-idempotency-key must be 1 to 128 characters/i);
    }
    // A header sent twice arrives joined ("a, b"): refused, not silently one of them.
    const twice = await fetch(`${replicaA.url}/v1/db/creds/reader`, {
      method: 'PUT',
      headers: [
        ['x-vault-token', ROOT_TOKEN],
        [KEY_HEADER, 'first'],
        [KEY_HEADER, 'second'],
      ],
    });
    expect(twice.status).toBe(400);
    expect((await leaseRows('reader')).length).toBe(before);
    for (const key of ['k', 'A-Za-z0-9._:/-', `${'x'.repeat(120)}/pod:1.a`]) {
      await issued(creds(replicaA, 'db/creds/reader', { key }));
    }
  });

  it('without the header nothing changes: each request mints its own lease, and the row carries no scope', async () => {
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => issued(creds(i % 2 ? replicaA : replicaB, 'db/creds/reader2'))),
    );
    expect(new Set(answers.map((a) => a.leaseId)).size).toBe(6);
    const rows = (await leaseRows('reader2')).filter((r) => r.state === 'active');
    expect(rows).toHaveLength(6);
    expect(rows.every((r) => r.idempotency_scope === null)).toBe(true);
    expect(await targetRolesOf('reader2')).toHaveLength(6);
  });
});

describe("idempotent lease requests on the aws engine's paths", () => {
  let endpoint: AwsEndpoint;
  let awsA: Broker;
  let awsB: Broker;
  let awsStore: string;
  const assumeRoleCalls = () => endpoint.calls.filter((c) => c.action === 'AssumeRole' && c.status === 200).length;

  beforeAll(async () => {
    endpoint = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
    awsStore = await freshStoreDatabase('idemaws');
    const roles = { deploy: { credential_type: 'assumed_role', role_arns: [ROLE_ARN], default_ttl: '15m' } };
    awsA = await startAwsBroker(endpoint, awsStore, roles);
    awsB = await startAwsBroker(endpoint, awsStore, roles);
  });
  afterAll(async () => {
    await awsA?.close();
    await awsB?.close();
    await endpoint?.close();
  });

  it('12 concurrent requests with one key on two replicas assume the role once; the sts path is another request', async () => {
    const key = newKey();
    const before = assumeRoleCalls();
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => creds(i % 2 ? awsA : awsB, 'aws/creds/deploy', { key })),
    );
    const granted = answers.filter((a) => a.status === 200);
    expect(granted, JSON.stringify(answers.map((a) => [a.status, a.body?.lease_id ?? a.body?.errors]))).toHaveLength(1);
    for (const a of answers.filter((x) => x.status !== 200)) {
      expect(a.status, JSON.stringify(a.body?.errors)).toBe(409);
      expect(a.body.data.lease_id).toBe(granted[0]!.body.lease_id);
    }
    expect(assumeRoleCalls() - before).toBe(1);
    const sts = await issued(creds(awsB, 'aws/sts/deploy', { key }));
    expect(sts.leaseId).toMatch(/^aws\/sts\/deploy\//);
    expect(assumeRoleCalls() - before).toBe(2);
    const rows = await adminQuery(awsStore, `SELECT id FROM credbroker_leases WHERE mount = 'aws'`);
    expect(rows.map((r) => r.id).sort()).toEqual([granted[0]!.body.lease_id, sts.leaseId].sort());
  });
});

/** A pending lease holding the root token's key on a path, as an issue in flight on another replica leaves it. */
async function fakePendingLease(role: string, key: string): Promise<string> {
  const id = `db/creds/${role}/fake${randomName(12)}`;
  const scope = idempotencyScope({ name: 'root', authMount: 'token' }, `db/creds/${role}`, key);
  await adminQuery(
    storeDb,
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, expires_at, max_expires_at,
                                    next_attempt_at, identity, idempotency_scope)
     VALUES ($1, 'db', $2, 'postgres', 'pending', $3, now() + interval '10 minutes', now() + interval '1 hour',
             now() + interval '1 minute', $4, $5)`,
    [
      id,
      role,
      JSON.stringify({ username: `${PREFIX}_${role}_fake` }),
      JSON.stringify({ name: 'root', auth_mount: 'token' }),
      scope,
    ],
  );
  return id;
}

/** Closes a fake lease's row (it created nothing on the target). */
async function finishFake(id: string): Promise<void> {
  await adminQuery(
    storeDb,
    `UPDATE credbroker_leases SET state = 'revoked', revoke_reason = 'cleanup', next_attempt_at = NULL, revoked_at = now() WHERE id = $1`,
    [id],
  );
}
