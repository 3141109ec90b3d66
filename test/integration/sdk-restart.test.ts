import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Broker, type RetryInfo } from '../../src/sdk/index.js';
import { freePort } from '../../src/store/embedded-postgres.js';
import { ROOT_TOKEN, api, testConfig } from '../support/broker.js';
import { startBrokerProcess } from '../support/broker-process.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, loginAs } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'sdkrest';
// Long enough for a second broker process to start on a loaded machine before the lease runs out.
const TTL_SECONDS = 20;

const children = new Set<ChildProcess>();
let config: ReturnType<typeof testConfig>;
let storeDb: string;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('sdkrest');
  const base = testConfig({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { job: { member_of: [target.group], default_ttl: `${TTL_SECONDS}s`, max_ttl: '5m' } },
  });
  // One port for both processes: the SDK keeps its address across the restart, as behind a Service.
  config = { ...base, listen: { ...base.listen, port: await freePort() } };
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await dropRolesWithPrefix(PREFIX);
});

const exited = (child: ChildProcess) => new Promise((resolve) => child.once('exit', resolve));

it('a broker SIGKILLed during a job and started again on the same store: the SDK retries the renewal through the outage and the lease lives on', async () => {
  const first = await startBrokerProcess({ config }, children);
  const retries: RetryInfo[] = [];
  const broker = new Broker({ addr: first.url, token: ROOT_TOKEN, env: {}, onRetry: (info) => retries.push(info) });
  const lease = await broker.lease('db/creds/job');
  try {
    const issuedExpiry = lease.expiresAt.getTime();
    const renewedAt: number[] = [];
    lease.on('renewed', () => renewedAt.push(Date.now()));
    let lost: unknown;
    lease.on('expiring', (event) => (lost = event));

    first.child.kill('SIGKILL');
    await exited(first.child);
    // Down across the first renewal (at ~2/3 of the TTL): it fails with ECONNREFUSED and is retried.
    await waitUntil(() => retries.some((r) => r.path === 'sys/leases/renew'), {
      timeoutMs: TTL_SECONDS * 1000,
      what: 'a renewal retried while the broker is down',
    });
    expect(renewedAt).toEqual([]);
    const second = await startBrokerProcess({ config }, children);
    expect(second.url).toBe(first.url);
    const upAt = Date.now();

    await waitUntil(() => renewedAt.length > 0, { timeoutMs: TTL_SECONDS * 1000, what: 'the renewal to go through' });
    expect(renewedAt[0]!).toBeGreaterThanOrEqual(upAt);
    expect(lost).toBeUndefined();
    const renewError = retries.find((r) => r.path === 'sys/leases/renew')!.error;
    expect(renewError.message).toContain('ECONNREFUSED');

    // The store the second broker reads agrees, and so does the target.
    const lookup = await api({ url: second.url }, 'PUT', 'sys/leases/lookup', { lease_id: lease.id });
    expect(lookup.body.data.state).toBe('active');
    expect(Date.parse(lookup.body.data.expire_time)).toBeGreaterThan(issuedExpiry + 1000);
    const data = lease.data as { username: string; password: string; host: string; port: number; database: string };
    const [role] = await adminQuery<{ rolvaliduntil: Date }>(
      'postgres',
      'SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1',
      [data.username],
    );
    expect(role!.rolvaliduntil.getTime()).toBeGreaterThan(issuedExpiry + 1000);
    const client = await loginAs(data);
    await client.end();
    expect(
      (await adminQuery(storeDb, `SELECT count(*)::int AS n FROM credbroker_leases WHERE role = 'job'`))[0].n,
    ).toBe(1);
  } finally {
    await lease.revoke();
    await broker.close();
  }
});
