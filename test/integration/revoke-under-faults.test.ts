import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startTestBroker, type TestBrokerOptions } from '../support/broker.js';
import { startBrokerProcess } from '../support/broker-process.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

/** Faults on the revoke path of statements-form roles: a broker killed mid-issue, a burst of revokes. */
const PREFIX = 'rvkflt';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
const children = new Set<ChildProcess>();
const brokers: TestBroker[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  target = await freshTargetDatabase(PREFIX);
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const b of brokers) await b.close();
  await dropRolesWithPrefix(PREFIX);
});

const grantingRole = (extra: string[] = []) => ({
  creation_statements: [
    `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`,
    'GRANT SELECT ON public.items TO "{{name}}"',
    ...extra,
  ],
});

const untilTrue = (what: string, check: () => Promise<boolean>, timeoutMs = 10_000) =>
  waitUntil(check, { what, timeoutMs });

describe('a broker killed during a slow statements-form issue', () => {
  it('leaves no role: the cleanup ends the dead issuer transaction before it can commit', async () => {
    const storeDb = await freshStoreDatabase('rvkflt');
    // The statement list outlives the kill by seconds; the engine timeout never fires in the child.
    const opts: TestBrokerOptions = {
      storeDatabase: storeDb,
      targetDatabase: target.database,
      prefix: PREFIX,
      engineTimeout: 20,
      roles: { slow: grantingRole(['SELECT pg_sleep(3)']) },
    };
    const { child, url } = await startBrokerProcess(opts, children);
    const issuing = api({ url }, 'PUT', 'db/creds/slow', {}).catch(() => null);
    // The CREATE ROLE has run inside the still-open transaction: the dead broker's work lives on.
    await untilTrue('the issuing transaction to reach pg_sleep', async () => {
      const rows = await adminQuery(
        'postgres',
        `SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND state = 'active' AND pid <> pg_backend_pid()`,
      );
      return rows.length > 0;
    });
    child.kill('SIGKILL');
    await issuing;
    const [lease] = await adminQuery(
      storeDb,
      `SELECT id, state, revoke_handle->>'username' AS username FROM credbroker_leases`,
    );
    expect(lease.state).toBe('pending');

    // Another replica finds the crashed issue once its grace has passed (backdated here).
    const replica = await startTestBroker(opts);
    brokers.push(replica);
    await adminQuery(
      storeDb,
      "UPDATE credbroker_leases SET next_attempt_at = now() - interval '1 second' WHERE id = $1",
      [lease.id],
    );
    const reaped = await replica.reaper.reapOnce();
    expect(reaped.revoked).toContain(lease.id);

    // Past the moment the dead issuer's transaction would have committed: still no role.
    await sleep(3500);
    expect(await roleExists(lease.username)).toBe(false);
    expect(
      await adminQuery(
        'postgres',
        `SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()`,
      ),
    ).toHaveLength(0);
  });
});

describe('a burst of revocations of one statements-form role', () => {
  let broker: TestBroker;
  let storeDb: string;

  beforeAll(async () => {
    storeDb = await freshStoreDatabase('rvkflt');
    broker = await startTestBroker({
      storeDatabase: storeDb,
      targetDatabase: target.database,
      prefix: PREFIX,
      mount: { max_open_connections: 16 },
      reaper: { pending_grace: 30, concurrency: 16 },
      roles: {
        granting: {
          ...grantingRole(),
          // Concurrent REVOKEs (like concurrent GRANTs) rewrite one ACL row: "tuple concurrently updated".
          revocation_statements: [
            'REVOKE ALL ON public.items FROM "{{name}}"',
            'DROP OWNED BY "{{name}}"',
            'DROP ROLE IF EXISTS "{{name}}"',
          ],
        },
        // No revocation statements: its GRANT makes DROP ROLE fail, so the revoke needs DROP OWNED.
        plain: grantingRole(),
        reader: { member_of: [target.group] },
      },
    });
    brokers.push(broker);
  });

  async function issueMany(n: number, role = 'granting'): Promise<{ leaseId: string; username: string }[]> {
    const out: { leaseId: string; username: string }[] = [];
    for (let i = 0; i < n; i += 16) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(16, n - i) }, () => api(broker, 'PUT', `db/creds/${role}`, {})),
      );
      for (const res of batch) {
        expect(res.status, JSON.stringify(res.body)).toBe(200);
        out.push({ leaseId: res.body.lease_id, username: res.body.data.username });
      }
    }
    return out;
  }

  /** Deadlocks and failed transactions on the target: each retry of a conflict is one of them. */
  const deadlocks = async () =>
    (
      await adminQuery(
        'postgres',
        'SELECT deadlocks::int + xact_rollback::int AS n FROM pg_stat_database WHERE datname = $1',
        [target.database],
      )
    )[0].n as number;

  it.each([
    ['granting', 128],
    ['plain', 64],
  ] as const)(
    'concurrent client revokes of a %s role (%i) all succeed with 0 deadlocks or conflicts, and other roles still issue meanwhile',
    async (role, count) => {
      const leases = await issueMany(count, role);
      const before = await deadlocks();
      const revokes = Promise.all(leases.map((l) => api(broker, 'PUT', 'sys/leases/revoke', { lease_id: l.leaseId })));
      const other = await api(broker, 'PUT', 'db/creds/reader', {});
      expect(other.status, JSON.stringify(other.body)).toBe(200);
      const answers = await revokes;
      expect(answers.filter((a) => a.status !== 204).map((a) => JSON.stringify(a.body))).toEqual([]);
      expect(await deadlocks()).toBe(before);
      for (const l of leases) expect(await roleExists(l.username)).toBe(false);
      const states = await adminQuery(
        storeDb,
        `SELECT state, count(*)::int AS n FROM credbroker_leases WHERE role = $1 GROUP BY state`,
        [role],
      );
      expect(states).toEqual([{ state: 'revoked', n: count }]);
    },
  );

  it('64 of two roles expiring together drain through the reaper with 0 deadlocks or conflicts and none failed', async () => {
    const leases = [...(await issueMany(32)), ...(await issueMany(32, 'plain'))];
    const before = await deadlocks();
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET expires_at = now() - interval '1 second', next_attempt_at = now() - interval '1 second' WHERE state = 'active'`,
    );
    const drained = await broker.reaper.drain();
    expect(drained).toBeGreaterThanOrEqual(64);
    expect(await deadlocks()).toBe(before);
    const states = await adminQuery(
      storeDb,
      `SELECT state, count(*)::int AS n, max(attempts)::int AS attempts FROM credbroker_leases GROUP BY state`,
    );
    expect(states).toEqual([{ state: 'revoked', n: expect.any(Number), attempts: 0 }]);
    for (const l of leases) expect(await roleExists(l.username)).toBe(false);
  });
});
