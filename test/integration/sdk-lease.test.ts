import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker, BrokerApiError, BrokerUnreachableError, type ExpiringEvent, type Lease } from '../../src/sdk/index.js';
import { freePort } from '../../src/store/embedded-postgres.js';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  roleExists,
} from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'sdklease';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let server: TestBroker;
let broker: Broker;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  server = await startTestBroker({
    storeDatabase: await freshStoreDatabase('sdklease'),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      // Short: auto-renew runs every two seconds; max 20 s, so renewals move the expiry for a while.
      short: { member_of: [target.group], default_ttl: '3s', max_ttl: '20s' },
      // Reaches its max after one or two renewals.
      capped: { member_of: [target.group], default_ttl: '2s', max_ttl: '4s' },
      reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
    },
  });
  broker = new Broker({ addr: server.url, token: ROOT_TOKEN, env: {} });
});

afterAll(async () => {
  await broker?.close();
  await server?.close();
  await dropRolesWithPrefix(PREFIX);
});

async function lookup(leaseId: string) {
  const res = await api(server, 'PUT', 'sys/leases/lookup', { lease_id: leaseId });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.data as { expire_time: string; state: string };
}

async function validUntil(username: string): Promise<number> {
  const [row] = await adminQuery<{ rolvaliduntil: Date }>(
    'postgres',
    'SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1',
    [username],
  );
  return row!.rolvaliduntil.getTime();
}

const credential = (lease: Lease) =>
  lease.data as { username: string; password: string; host: string; port: number; database: string };

async function canLogIn(lease: Lease): Promise<boolean> {
  try {
    const client = await loginAs(credential(lease));
    await client.query('SELECT 1');
    await client.end();
    return true;
  } catch {
    return false;
  }
}

describe('auto-renew', () => {
  it('moves expire_time in sys/leases/lookup and VALID UNTIL in pg_roles while a job runs, and the login keeps working past the first TTL', async () => {
    const lease = await broker.lease('db/creds/short');
    try {
      const { username } = credential(lease);
      const firstExpiry = Date.parse((await lookup(lease.id)).expire_time);
      const firstValidUntil = await validUntil(username);
      const renewals: Date[] = [];
      lease.on('renewed', (at: Date) => renewals.push(at));
      // Two renewals at ~2/3 of 3 s each: the first TTL has long passed by then.
      await waitUntil(() => renewals.length >= 2, { timeoutMs: 10_000, what: 'two automatic renewals' });
      expect(Date.now()).toBeGreaterThan(firstExpiry);
      expect(Date.parse((await lookup(lease.id)).expire_time)).toBeGreaterThan(firstExpiry + 1000);
      expect(await validUntil(username)).toBeGreaterThan(firstValidUntil + 1000);
      expect(lease.expiresAt.getTime()).toBeGreaterThan(firstExpiry);
      expect(await canLogIn(lease)).toBe(true);
    } finally {
      await lease.revoke();
    }
  });

  it('emits expiring with reason max_ttl once the role max_ttl caps a renewal, and stops renewing', async () => {
    const lease = await broker.lease('db/creds/capped');
    try {
      const event = await new Promise<ExpiringEvent>((resolve) => lease.once('expiring', resolve));
      expect(event.reason).toBe('max_ttl');
      const { expire_time } = await lookup(lease.id);
      expect(Math.abs(Date.parse(expire_time) - event.expiresAt.getTime())).toBeLessThan(1500);
      let renewed = 0;
      lease.on('renewed', () => renewed++);
      await new Promise((r) => setTimeout(r, 1500));
      expect(renewed).toBe(0);
    } finally {
      await lease.revoke();
    }
  });
});

describe('scopes', () => {
  it('await using revokes the lease at the end of the scope: the role is gone and the lease revoked', async () => {
    let leaseId: string;
    let username: string;
    {
      await using lease = await broker.lease('db/creds/reader');
      leaseId = lease.id;
      username = credential(lease).username;
      expect(await canLogIn(lease)).toBe(true);
      expect(await roleExists(username)).toBe(true);
    }
    expect(await roleExists(username)).toBe(false);
    expect((await lookup(leaseId)).state).toBe('revoked');
  });

  it('await using revokes when the scope throws too', async () => {
    let username = '';
    await expect(
      (async () => {
        await using lease = await broker.lease('db/creds/reader');
        username = credential(lease).username;
        throw new Error('the job failed');
      })(),
    ).rejects.toThrow('the job failed');
    expect(username).not.toBe('');
    expect(await roleExists(username)).toBe(false);
  });

  it('withLease revokes after the callback, whatever it returns or throws', async () => {
    let seen = '';
    const rows = await broker.withLease('db/creds/reader', async (lease) => {
      seen = credential(lease).username;
      const client = await loginAs(credential(lease));
      try {
        return (await client.query('SELECT name FROM public.items ORDER BY id')).rows.map((r) => r.name);
      } finally {
        await client.end();
      }
    });
    expect(rows).toEqual(['one', 'two']);
    expect(await roleExists(seen)).toBe(false);
    await expect(
      broker.withLease('db/creds/reader', async (lease) => {
        seen = credential(lease).username;
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await roleExists(seen)).toBe(false);
  });
});

describe('no secret in what a lease or an error shows', () => {
  it('util.inspect, String and JSON.stringify of a lease, and of the broker, carry neither the password nor the token', async () => {
    const lease = await broker.lease('db/creds/reader');
    try {
      const { password, username } = credential(lease);
      expect(password.length).toBeGreaterThan(20);
      const shown = [
        inspect(lease),
        inspect(lease, { depth: Infinity, showHidden: true }),
        String(lease),
        JSON.stringify(lease),
        JSON.stringify({ lease }),
        inspect(broker, { depth: Infinity, showHidden: true }),
        JSON.stringify(broker),
        Object.keys(lease).join(','),
      ];
      for (const text of shown) {
        expect(text).not.toContain(password);
        expect(text).not.toContain(ROOT_TOKEN);
      }
      expect(inspect(lease)).toContain(lease.id);
      expect(JSON.stringify(lease)).toContain('[redacted]');
      // The caller who asks gets it.
      expect(lease.data.password).toBe(password);
      expect(lease.pgConfig()).toMatchObject({ user: username, password });
    } finally {
      await lease.revoke();
    }
  });

  it('errors from a refused renew, a bad token and an unreachable broker: typed, and JSON.stringify / inspect show no secret', async () => {
    const lease = await broker.lease('db/creds/reader', { autoRenew: false });
    const { password } = credential(lease);
    await lease.revoke();
    const errors: unknown[] = [];
    errors.push(await lease.renew().catch((e: unknown) => e));
    const wrongToken = 'not-the-root-token-abcdef0123';
    errors.push(
      await new Broker({ addr: server.url, token: wrongToken, env: {} })
        .lease('db/creds/reader')
        .catch((e: unknown) => e),
    );
    const down = `http://127.0.0.1:${await freePort()}`;
    errors.push(
      await new Broker({ addr: down, token: ROOT_TOKEN, env: {}, retry: { attempts: 2, baseMs: 10 } })
        .lease('db/creds/reader')
        .catch((e: unknown) => e),
    );
    const [renewError, deniedError, downError] = errors;
    expect(renewError).toBeInstanceOf(BrokerApiError);
    expect((renewError as BrokerApiError).status).toBe(400);
    expect(deniedError).toBeInstanceOf(BrokerApiError);
    expect((deniedError as BrokerApiError).status).toBe(403);
    expect((deniedError as BrokerApiError).errors).toContain('permission denied');
    expect(downError).toBeInstanceOf(BrokerUnreachableError);
    expect((downError as BrokerUnreachableError).reason).toContain('ECONNREFUSED');
    for (const err of errors) {
      const json = JSON.stringify(err);
      expect(JSON.parse(json).code).toMatch(/^ERR_BROKER_/);
      for (const text of [json, inspect(err, { depth: Infinity }), String(err)]) {
        expect(text).not.toContain(password);
        expect(text).not.toContain(ROOT_TOKEN);
        expect(text).not.toContain(wrongToken);
      }
    }
  });

  it('a 4xx is not retried: a denied lease fails at once, a 5xx-free path', async () => {
    const retries: string[] = [];
    const denied = new Broker({
      addr: server.url,
      token: 'no-such-token-0123456789',
      env: {},
      onRetry: (r) => retries.push(r.path),
    });
    await expect(denied.lease('db/creds/reader')).rejects.toBeInstanceOf(BrokerApiError);
    expect(retries).toEqual([]);
  });
});
