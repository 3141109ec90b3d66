import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startTestBroker } from '../../../../test/support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  pgUrl,
  roleExists,
} from '../../../../test/support/pg.js';
import { waitUntil } from '../../../../test/support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'lcstmt';
const CONCURRENT_ISSUES = 16;
/**
 * The broker computes the SCRAM verifier itself. PostgreSQL would hash a plaintext password with
 * its own iteration count (scram_iterations, 4096 by default), so an unusual count here shows in
 * rolpassword whether the verifier came from the broker or the plaintext reached the target.
 */
const BROKER_SCRAM_ITERATIONS = 17;

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;
let storeDb: string;
let targetDb: string;
/** The credentials issued together, revoked together by the next test. */
let burst: Issued[] = [];

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  targetDb = target.database;
  storeDb = await freshStoreDatabase('lcstmt');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    mount: { scram_iterations: BROKER_SCRAM_ITERATIONS },
    roles: {
      stmt: {
        // Vault's statements form: the role holds its own GRANT, so dropping it needs DROP OWNED.
        creation_statements: [
          `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`,
          `GRANT SELECT ON public.items TO "{{name}}"`,
        ],
      },
    },
  });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

interface Issued {
  leaseId: string;
  data: { username: string; password: string; host: string; port: number; database: string };
}

/** Issues `count` credentials at once over HTTP; every one must answer 200. */
async function issueConcurrently(count: number): Promise<Issued[]> {
  const started = performance.now();
  const results = await Promise.all(
    Array.from({ length: count }, () => api(broker, 'PUT', 'db/creds/stmt', { ttl: '10m' })),
  );
  console.info(
    `[statements-concurrency] ${count} concurrent issues took ${Math.round(performance.now() - started)} ms`,
  );
  const errors = results.filter((r) => r.status !== 200).map((r) => `${r.status} ${JSON.stringify(r.body)}`);
  expect(errors).toEqual([]);
  const leases = results.map((r) => ({ leaseId: r.body.lease_id as string, data: r.body.data }));
  expect(new Set(leases.map((l) => l.data.username)).size).toBe(count);
  return leases;
}

/** Waits (up to 4 s, then throws) until a DROP OWNED of the broker is waiting on a lock on the target; how many. */
async function waitForBlockedDropOwned(): Promise<number> {
  return waitUntil(
    async () => {
      const [{ n }] = await adminQuery(
        'postgres',
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = $1 AND application_name = 'credbroker:db' AND wait_event_type = 'Lock' AND query ILIKE '%DROP OWNED BY%'`,
        [targetDb],
      );
      return n as number;
    },
    { timeoutMs: 4000, intervalMs: 20, what: 'a DROP OWNED of the broker to wait behind the GRANT' },
  );
}

describe('roles created by creation_statements', () => {
  it('stores only a SCRAM verifier on the target, never the plaintext password', async () => {
    const res = await api(broker, 'PUT', 'db/creds/stmt', {});
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const { username, password } = res.body.data;
    try {
      const [row] = await adminQuery<{ rolpassword: string }>(
        'postgres',
        'SELECT rolpassword FROM pg_authid WHERE rolname = $1',
        [username],
      );
      expect(row).toBeDefined();
      expect(row!.rolpassword.startsWith('SCRAM-SHA-256$')).toBe(true);
      expect(row!.rolpassword.startsWith(`SCRAM-SHA-256$${BROKER_SCRAM_ITERATIONS}:`), row!.rolpassword).toBe(true);
      expect(row!.rolpassword).not.toContain(password);
      // The verifier is the one for the password handed out: the login works.
      const client = await loginAs(res.body.data);
      expect((await client.query('SELECT count(*)::int AS n FROM public.items')).rows[0].n).toBe(2);
      await client.end();
    } finally {
      expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: res.body.lease_id })).status).toBe(204);
    }
    expect(await roleExists(username)).toBe(false);
  });

  it(`${CONCURRENT_ISSUES} simultaneous issues all answer 200, and every credential logs in and reads the table`, async () => {
    const leases = await issueConcurrently(CONCURRENT_ISSUES);
    burst = leases;
    for (const { data } of leases) {
      const client = await loginAs(data);
      try {
        expect((await client.query('SELECT name FROM public.items ORDER BY id')).rows.map((r) => r.name)).toEqual([
          'one',
          'two',
        ]);
      } finally {
        await client.end();
      }
    }
    // Each role holds its own privilege on the table (what makes its DROP ROLE need DROP OWNED).
    const grantees = await adminQuery(
      leases[0]!.data.database,
      `SELECT grantee FROM information_schema.role_table_grants WHERE table_name = 'items' AND grantee = ANY($1)`,
      [leases.map((l) => l.data.username)],
    );
    expect(grantees).toHaveLength(CONCURRENT_ISSUES);
  });

  it(`revoke-prefix drops all ${CONCURRENT_ISSUES} roles despite the GRANT each holds (the DROP OWNED path)`, async () => {
    expect(burst).toHaveLength(CONCURRENT_ISSUES);
    const res = await api(broker, 'PUT', 'sys/leases/revoke-prefix/db/creds/stmt');
    expect(res.status, JSON.stringify(res.body)).toBe(204);
    for (const { leaseId, data } of burst) {
      expect(await roleExists(data.username), data.username).toBe(false);
      const [row] = await adminQuery(storeDb, 'SELECT state, revoke_reason FROM credbroker_leases WHERE id = $1', [
        leaseId,
      ]);
      expect(row).toEqual({ state: 'revoked', revoke_reason: 'prefix' });
    }
    const grantees = await adminQuery(
      targetDb,
      `SELECT grantee FROM information_schema.role_table_grants WHERE table_name = 'items' AND grantee LIKE $1`,
      [`${PREFIX}\\_stmt\\_%`],
    );
    expect(grantees).toEqual([]);
  });

  /**
   * DROP OWNED revokes the role's privilege by updating the table's pg_class ACL tuple. When
   * another transaction (another revoke, an issue's GRANT, an operator's GRANT) updates that tuple
   * at the same time, PostgreSQL fails the waiting one with XX000 "tuple concurrently updated";
   * the revoke must retry it, not fail. The collision is made deterministic here: an uncommitted
   * GRANT holds the tuple until the broker's DROP OWNED is seen waiting behind it.
   */
  it('a revoke whose DROP OWNED collides with a concurrent GRANT on the same table is retried and succeeds', async () => {
    const leases = await issueConcurrently(4);
    const blocker = new pg.Client({ connectionString: pgUrl(targetDb) });
    await blocker.connect();
    let open = true;
    try {
      await blocker.query('BEGIN');
      await blocker.query(`GRANT UPDATE ON public.items TO ${PREFIX}_readers`);
      const revoking = api(broker, 'PUT', 'sys/leases/revoke-prefix/db/creds/stmt/');
      const blocked = await waitForBlockedDropOwned();
      expect(blocked, 'no DROP OWNED of the broker was seen waiting behind the GRANT').toBeGreaterThan(0);
      await blocker.query('COMMIT');
      open = false;
      const res = await revoking;
      expect(res.status, JSON.stringify(res.body)).toBe(204);
      for (const { leaseId, data } of leases) {
        expect(await roleExists(data.username), data.username).toBe(false);
        const [row] = await adminQuery(storeDb, 'SELECT state, attempts FROM credbroker_leases WHERE id = $1', [
          leaseId,
        ]);
        expect(row).toEqual({ state: 'revoked', attempts: 0 });
      }
    } finally {
      if (open) await blocker.query('ROLLBACK').catch(() => undefined);
      await blocker.query(`REVOKE UPDATE ON public.items FROM ${PREFIX}_readers`).catch(() => undefined);
      await blocker.end();
    }
  });
});
