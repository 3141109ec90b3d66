import { afterAll, beforeAll, expect, it } from 'vitest';
import { Broker } from '../../src/sdk/index.js';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'sdkpool';
const LOOPS = 4;

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let server: TestBroker;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  server = await startTestBroker({
    storeDatabase: await freshStoreDatabase('sdkpool'),
    targetDatabase: target.database,
    prefix: PREFIX,
    // Renewed once or twice, then capped at 5 s: a new login about every 4 s.
    roles: { pool: { member_of: [target.group], default_ttl: '2s', max_ttl: '5s' } },
  });
});

afterAll(async () => {
  await server?.close();
  await dropRolesWithPrefix(PREFIX);
});

it('the rotating pgPool keeps 4 concurrent query loops running across two credential changes with 0 failed queries, then revokes every lease it took', async () => {
  const broker = new Broker({ addr: server.url, token: ROOT_TOKEN, env: {} });
  const pool = await broker.pgPool('db/creds/pool', { max: 6 });
  const rotations: { from: string; to: string }[] = [];
  pool.on('rotated', (r: { from: string; to: string }) => rotations.push(r));
  const poolErrors: unknown[] = [];
  pool.on('error', (err) => poolErrors.push(err));
  const leaseIds = new Set([pool.lease.id]);
  pool.on('rotated', (r: { to: string }) => leaseIds.add(r.to));

  const users = new Set<string>();
  const failures: unknown[] = [];
  let ok = 0;
  let stop = false;
  const loop = async (n: number) => {
    while (!stop) {
      try {
        // Queries in flight while the pool switches: each holds its connection for a while.
        const { rows } = await pool.query(
          'SELECT current_user AS who, count(*)::int AS n FROM public.items, pg_sleep($1::float8)',
          [0.05 + 0.1 * (n % 2)],
        );
        users.add(rows[0].who);
        expect(rows[0].n).toBe(2);
        ok++;
      } catch (err) {
        failures.push(err);
      }
      // One loop checks a client out by hand, as a transaction would.
      if (n === 0 && !stop) {
        const client = await pool.connect().catch((err: unknown) => void failures.push(err));
        if (client) {
          try {
            await client.query('BEGIN');
            await client.query('SELECT pg_sleep(0.2)');
            await client.query('COMMIT');
            ok++;
          } catch (err) {
            failures.push(err);
          } finally {
            client.release();
          }
        }
      }
    }
  };
  const loops = Array.from({ length: LOOPS }, (_, n) => loop(n));
  await waitUntil(() => rotations.length >= 2, { timeoutMs: 30_000, what: 'two credential changes' });
  // Some more queries on the third login.
  const okAtSecond = ok;
  await waitUntil(() => ok > okAtSecond + 8, { timeoutMs: 10_000, what: 'queries after the second change' });
  stop = true;
  await Promise.all(loops);

  expect(failures).toEqual([]);
  expect(poolErrors).toEqual([]);
  expect(ok).toBeGreaterThan(40);
  expect(users.size).toBeGreaterThanOrEqual(3);
  for (const user of users) expect(user.startsWith(`${PREFIX}_pool_`)).toBe(true);

  await pool.end();
  for (const id of leaseIds) {
    const res = await api(server, 'PUT', 'sys/leases/lookup', { lease_id: id });
    expect(res.body.data.state, id).toBe('revoked');
  }
  for (const user of users) expect(await roleExists(user), user).toBe(false);
  await broker.close();
});
