import http from 'node:http';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  pgUrl,
  roleExists,
} from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'lclife';
const MAX_TTL_SECONDS = 3600;

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
interface Credential {
  username: string;
  password: string;
  host: string;
  port: number;
  database: string;
}
interface Issued {
  leaseId: string;
  data: Credential;
  body: any;
}

let broker: TestBroker;
let storeDb: string;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

const roles = () => ({
  reader: { member_of: [target.group], default_ttl: '10m', max_ttl: `${MAX_TTL_SECONDS}s` },
  reader2: { member_of: [target.group], default_ttl: '10m', max_ttl: `${MAX_TTL_SECONDS}s` },
});

beforeAll(async () => {
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('lclife');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: roles(),
  });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

async function issue(role: string, body: Record<string, unknown> = {}, on: { url: string } = broker): Promise<Issued> {
  const res = await api(on, 'PUT', `db/creds/${role}`, body);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { leaseId: res.body.lease_id, data: res.body.data, body: res.body };
}

async function leaseRow(id: string, db = storeDb) {
  const rows = await adminQuery(db, 'SELECT * FROM credbroker_leases WHERE id = $1', [id]);
  return rows[0];
}

async function lookup(leaseId: string) {
  const res = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: leaseId });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.data;
}

async function validUntil(username: string): Promise<Date | null> {
  const rows = await adminQuery<{ rolvaliduntil: Date | null }>(
    'postgres',
    'SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1',
    [username],
  );
  return rows[0]?.rolvaliduntil ?? null;
}

/** The SQLSTATE a login attempt fails with; fails the test if the login succeeds. */
async function loginError(data: Credential): Promise<string | undefined> {
  let client: pg.Client | undefined;
  try {
    client = await loginAs(data);
  } catch (err) {
    return (err as { code?: string }).code;
  }
  await client.end();
  throw new Error(`login as ${data.username} unexpectedly succeeded`);
}

async function readItems(data: Credential): Promise<string[]> {
  const client = await loginAs(data);
  try {
    return (await client.query('SELECT name FROM public.items ORDER BY id')).rows.map((r) => r.name);
  } finally {
    await client.end();
  }
}

/** Sends a request with any verb through node:http (fetch refuses `LIST`), raw path included. */
function rawRequest(
  method: string,
  path: string,
  token: string | null = ROOT_TOKEN,
): Promise<{ status: number; body: any }> {
  const url = new URL(broker.url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: Number(url.port),
        method,
        path,
        agent: false,
        headers: token === null ? {} : { 'x-vault-token': token },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: any = text;
          try {
            body = text ? JSON.parse(text) : null;
          } catch {
            /* keep the text */
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('issuing', () => {
  it('an issued credential logs in with pg and reads the granted table; a wrong password is refused with 28P01', async () => {
    const { leaseId, data, body } = await issue('reader');
    expect(leaseId).toMatch(/^db\/creds\/reader\/[A-Za-z0-9]{24}$/);
    expect(body.lease_duration).toBe(600);
    expect(body.renewable).toBe(true);
    expect(data.username.startsWith(`${PREFIX}_reader_`)).toBe(true);
    expect(data.database).toBe(target.database);

    expect(await readItems(data)).toEqual(['one', 'two']);
    expect(await loginError({ ...data, password: `${data.password}x` })).toBe('28P01');

    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId })).status).toBe(204);
  });
});

describe('expiry on the real reaper timer', () => {
  it('drops the role of a 2 s lease within 2 s after it expires, after which the login fails', async () => {
    const timerStore = await freshStoreDatabase('lctimer');
    const timed = await startTestBroker({
      storeDatabase: timerStore,
      targetDatabase: target.database,
      prefix: PREFIX,
      roles: roles(),
      scheduleReaper: true,
    });
    const admin = new pg.Client({ connectionString: pgUrl('postgres') });
    await admin.connect();
    try {
      const res = await api(timed, 'PUT', 'db/creds/reader', { ttl: '2s' });
      expect(res.status).toBe(200);
      expect(res.body.lease_duration).toBe(2);
      const data: Credential = res.body.data;
      // Usable right after the issue.
      expect(await readItems(data)).toEqual(['one', 'two']);

      const row = await leaseRow(res.body.lease_id, timerStore);
      const expiresAt = (row.expires_at as Date).getTime();
      const exists = async () =>
        (await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [data.username])).rowCount! > 0;

      const goneAt = await waitUntil(async () => ((await exists()) ? 0 : Date.now()), {
        timeoutMs: Math.max(0, expiresAt + 4000 - Date.now()),
        intervalMs: 20,
        what: 'the expired role to be dropped',
      });
      const lagMs = goneAt - expiresAt;
      console.info(`[lease-lifecycle] role dropped ${lagMs} ms after expiry`);
      // Not revoked early (20 ms of slack for clock reads), and within 2 s after expiry.
      expect(lagMs).toBeGreaterThanOrEqual(-20);
      expect(lagMs).toBeLessThanOrEqual(2000);

      expect(await loginError(data)).toBe('28P01');
      const after = await leaseRow(res.body.lease_id, timerStore);
      expect(after.state).toBe('revoked');
      expect(after.revoke_reason).toBe('expired');
    } finally {
      await admin.end();
      await timed.close();
    }
  });
});

describe('a broker starting with its reaper', () => {
  it('revokes what is already due at once, without waiting for its first scheduled tick', async () => {
    // Left by a replica that died: an expired lease nobody revoked.
    const { leaseId, data } = await issue('reader');
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET expires_at = now() - interval '1 second', next_attempt_at = now() - interval '1 second' WHERE id = $1`,
      [leaseId],
    );
    // A schedule that never fires during the test: only a tick at start can revoke it.
    const started = await startTestBroker({
      storeDatabase: storeDb,
      targetDatabase: target.database,
      prefix: PREFIX,
      roles: roles(),
      scheduleReaper: true,
      reaper: { pending_grace: 30, schedule: '0 0 0 1 1 *' },
    });
    try {
      await waitUntil(async () => (await leaseRow(leaseId)).state === 'revoked', {
        timeoutMs: 3000,
        intervalMs: 20,
        what: 'the expired lease to be revoked by the tick at start',
      });
      expect(await roleExists(data.username)).toBe(false);
      expect((await leaseRow(leaseId)).revoke_reason).toBe('expired');
    } finally {
      await started.close();
    }
  });
});

describe('renew', () => {
  it('moves rolvaliduntil and the lookup expire_time to the new expiry', async () => {
    const { leaseId, data } = await issue('reader');
    const before = await lookup(leaseId);
    expect(before.last_renewal).toBeNull();

    const res = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: leaseId, increment: 1800 });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.lease_id).toBe(leaseId);
    expect(res.body.renewable).toBe(true);
    expect(res.body.warnings).toBeNull();
    expect(Math.abs(res.body.lease_duration - 1800)).toBeLessThanOrEqual(2);

    const after = await lookup(leaseId);
    const newExpiry = Date.parse(after.expire_time);
    expect(newExpiry - Date.parse(before.expire_time)).toBeGreaterThan(1100 * 1000);
    expect(Math.abs(newExpiry - (Date.now() + 1800 * 1000))).toBeLessThan(5000);
    expect(after.last_renewal).not.toBeNull();
    expect(after.issue_time).toBe(before.issue_time);

    const pgExpiry = await validUntil(data.username);
    expect(pgExpiry).not.toBeNull();
    expect(Math.abs(pgExpiry!.getTime() - newExpiry)).toBeLessThan(2000);

    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId })).status).toBe(204);
  });

  it('caps a renew past max_ttl at issue_time + max_ttl and returns a warning', async () => {
    const { leaseId, data } = await issue('reader');
    const res = await api(broker, 'PUT', `sys/leases/renew/${leaseId}`, { increment: '2h' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.warnings).toHaveLength(1);
    expect(res.body.warnings[0]).toMatch(/max_ttl/);
    expect(res.body.warnings[0]).toMatch(/capped/);
    expect(res.body.lease_duration).toBeLessThanOrEqual(MAX_TTL_SECONDS);
    expect(res.body.lease_duration).toBeGreaterThan(MAX_TTL_SECONDS - 10);

    const after = await lookup(leaseId);
    const cap = Date.parse(after.issue_time) + MAX_TTL_SECONDS * 1000;
    expect(Date.parse(after.expire_time)).toBe(cap);
    expect(after.max_expire_time).toBe(after.expire_time);
    expect(Math.abs((await validUntil(data.username))!.getTime() - cap)).toBeLessThan(2000);

    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId })).status).toBe(204);
  });

  it('refuses to renew an unknown lease with 400 "lease not found"', async () => {
    const res = await api(broker, 'PUT', 'sys/leases/renew', {
      lease_id: 'db/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA',
      increment: 60,
    });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ errors: ['lease not found'] });
  });

  it('refuses to renew an expired lease with 400 "lease expired" and leaves its row alone', async () => {
    const { leaseId, data } = await issue('reader');
    await adminQuery(storeDb, `UPDATE credbroker_leases SET expires_at = now() - interval '1 s' WHERE id = $1`, [
      leaseId,
    ]);
    const backdated = await leaseRow(leaseId);

    const res = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: leaseId, increment: 600 });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ errors: ['lease expired'] });
    const row = await leaseRow(leaseId);
    expect(row.expires_at).toEqual(backdated.expires_at);
    expect(row.last_renewal).toBeNull();

    // The reaper acts on next_attempt_at, which a real expiry moves with expires_at: align it, and
    // the reaper takes the lease as expired.
    await adminQuery(storeDb, 'UPDATE credbroker_leases SET next_attempt_at = expires_at WHERE id = $1', [leaseId]);
    const reaped = await broker.reaper.reapOnce();
    expect(reaped.revoked).toContain(leaseId);
    expect(await roleExists(data.username)).toBe(false);
    expect((await leaseRow(leaseId)).revoke_reason).toBe('expired');
  });
});

describe('revoke', () => {
  it('terminates an open session of the lease user and drops the role', async () => {
    const { leaseId, data } = await issue('reader');
    const session = await loginAs(data);
    const sessionErrors: Error[] = [];
    session.on('error', (err) => sessionErrors.push(err));
    try {
      expect((await session.query('SELECT count(*)::int AS n FROM public.items')).rows[0].n).toBe(2);
      const pid: number = (await session.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;

      const res = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId });
      expect(res.status).toBe(204);

      // Not merely "permission denied" (a dropped role loses its grants, but PostgreSQL keeps its
      // sessions open): the session itself is gone, so even a query needing no privilege fails.
      await expect(session.query('SELECT 1')).rejects.toThrow();
      const backendGone = async () =>
        (await adminQuery('postgres', 'SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).length === 0;
      await waitUntil(backendGone, {
        timeoutMs: 2000,
        intervalMs: 20,
        what: `backend ${pid} of the revoked user to end`,
      });
      expect(await roleExists(data.username)).toBe(false);
      const row = await leaseRow(leaseId);
      expect(row.state).toBe('revoked');
      expect(row.revoke_reason).toBe('revoked');
    } finally {
      await session.end().catch(() => undefined);
    }
  });

  it('answers 204 to revoking the same lease twice and to revoking an unknown lease', async () => {
    const { leaseId, data } = await issue('reader');
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId })).status).toBe(204);
    const first = await leaseRow(leaseId);
    expect((await api(broker, 'PUT', `sys/leases/revoke/${leaseId}`)).status).toBe(204);
    const second = await leaseRow(leaseId);
    expect(second.state).toBe('revoked');
    expect(second.revoked_at).toEqual(first.revoked_at);
    expect(await roleExists(data.username)).toBe(false);

    expect(
      (await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: 'db/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA' })).status,
    ).toBe(204);
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: 'not-a-lease' })).status).toBe(204);
  });

  it('revoke-prefix db/creds/reader revokes exactly the reader leases, not those of reader2', async () => {
    const readers = [await issue('reader'), await issue('reader')];
    const readers2 = [await issue('reader2'), await issue('reader2')];

    const res = await api(broker, 'PUT', 'sys/leases/revoke-prefix/db/creds/reader');
    expect(res.status, JSON.stringify(res.body)).toBe(204);

    for (const l of readers) {
      expect(await roleExists(l.data.username)).toBe(false);
      const row = await leaseRow(l.leaseId);
      expect(row.state).toBe('revoked');
      expect(row.revoke_reason).toBe('prefix');
    }
    for (const l of readers2) {
      expect(await roleExists(l.data.username)).toBe(true);
      expect((await leaseRow(l.leaseId)).state).toBe('active');
      expect(await readItems(l.data)).toEqual(['one', 'two']);
    }
    const live = await adminQuery(
      storeDb,
      `SELECT id FROM credbroker_leases WHERE state <> 'revoked' AND id LIKE 'db/creds/reader/%'`,
    );
    expect(live).toEqual([]);

    // Clean up, through the API too.
    expect((await api(broker, 'PUT', 'sys/leases/revoke-prefix/db/creds/reader2/')).status).toBe(204);
    for (const l of readers2) expect(await roleExists(l.data.username)).toBe(false);
  });

  it('revoke-force marks the lease revoked with reason "forced" without touching the target', async () => {
    const { leaseId, data } = await issue('reader');
    try {
      const res = await api(broker, 'PUT', `sys/leases/revoke-force/${leaseId}`);
      expect(res.status).toBe(204);
      const row = await leaseRow(leaseId);
      expect(row.state).toBe('revoked');
      expect(row.revoke_reason).toBe('forced');
      expect(row.next_attempt_at).toBeNull();
      // The target was not touched: the role is still there and still logs in.
      expect(await roleExists(data.username)).toBe(true);
      expect(await readItems(data)).toEqual(['one', 'two']);
      // Nothing is left for the reaper to do with it.
      expect((await broker.reaper.reapOnce()).revoked).not.toContain(leaseId);
      expect(await roleExists(data.username)).toBe(true);
    } finally {
      await adminQuery('postgres', `DROP ROLE IF EXISTS ${pg.escapeIdentifier(data.username)}`);
    }
  });
});

describe('lookup and list', () => {
  it("lookup returns Vault's fields under data", async () => {
    const { leaseId } = await issue('reader', { ttl: 300 });
    const res = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: leaseId });
    expect(res.status).toBe(200);
    const d = res.body.data;
    expect(d).toMatchObject({ id: leaseId, last_renewal: null, renewable: true });
    for (const f of ['issue_time', 'expire_time'] as const) expect(new Date(d[f]).toISOString()).toBe(d[f]);
    expect(Date.parse(d.expire_time) - Date.parse(d.issue_time)).toBe(300_000);
    expect(typeof d.ttl).toBe('number');
    expect(d.ttl).toBeGreaterThan(290);
    expect(d.ttl).toBeLessThanOrEqual(300);
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId })).status).toBe(204);
  });

  it('lookup of an unknown lease answers 400 "invalid lease"', async () => {
    for (const id of ['db/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA', 'nope']) {
      const res = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: id });
      expect(res.status).toBe(400);
      expect(res.body).toEqual({ errors: ['invalid lease'] });
    }
  });

  it('LIST on sys/leases/lookup/db/creds/ gives the role keys, by ?list=true and by the LIST verb; an empty prefix gives 404', async () => {
    const a = await issue('reader');
    const b = await issue('reader');
    const c = await issue('reader2');
    try {
      const res = await api(broker, 'GET', 'sys/leases/lookup/db/creds/?list=true');
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.data.keys).toEqual(['reader/', 'reader2/']);

      const one = await api(broker, 'GET', 'sys/leases/lookup/db/creds/reader/?list=true');
      expect(one.body.data.keys).toEqual([a.leaseId, b.leaseId].map((id) => id.split('/').pop()).sort());

      const verb = await rawRequest('LIST', '/v1/sys/leases/lookup/db/creds/');
      expect(verb.status, JSON.stringify(verb.body)).toBe(200);
      expect(verb.body.data.keys).toEqual(['reader/', 'reader2/']);
      const verbNoToken = await rawRequest('LIST', '/v1/sys/leases/lookup/db/creds/', null);
      expect(verbNoToken.status).toBe(403);

      const empty = await api(broker, 'GET', 'sys/leases/lookup/db/creds/nosuchrole/?list=true');
      expect(empty.status).toBe(404);
      expect(empty.body).toEqual({ errors: [] });
      const emptyVerb = await rawRequest('LIST', '/v1/sys/leases/lookup/db/creds/nosuchrole/');
      expect(emptyVerb.status).toBe(404);
      expect(emptyVerb.body).toEqual({ errors: [] });
    } finally {
      for (const l of [a, b, c]) await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: l.leaseId });
    }
    // Revoked leases are no longer listed.
    expect((await api(broker, 'GET', 'sys/leases/lookup/db/creds/?list=true')).status).toBe(404);
  });
});

describe('reaper', () => {
  it('cleans up a pending lease older than the pending grace: role dropped, row revoked with reason "cleanup"', async () => {
    const { leaseId, data } = await issue('reader');
    // Simulate an issue that crashed after creating the role: pending, and past its grace.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET state = 'pending', next_attempt_at = now() - interval '1 s' WHERE id = $1`,
      [leaseId],
    );
    expect(await roleExists(data.username)).toBe(true);

    const result = await broker.reaper.reapOnce();
    expect(result.revoked).toContain(leaseId);
    expect(result.failed).toEqual([]);

    expect(await roleExists(data.username)).toBe(false);
    const row = await leaseRow(leaseId);
    expect(row.state).toBe('revoked');
    expect(row.revoke_reason).toBe('cleanup');
    expect(row.next_attempt_at).toBeNull();
  });
});
