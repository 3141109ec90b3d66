import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Broker, SdkConfigError } from '../../src/sdk/index.js';
import { startTestBroker } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, loginAs } from '../support/pg.js';
import { sleep } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'sdkauth';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let server: TestBroker;
let cluster: JwksServer;
let storeDb: string;
const dir = mkdtempSync(join(tmpdir(), 'credbroker-sdk-auth-'));
const jwtFile = join(dir, 'token');

beforeAll(async () => {
  cluster = await startJwksServer({ algs: ['RS256'], issuer: K8S_ISSUER });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('sdkauth');
  server = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
    auth: {
      // Tokens of 3 s, renewable up to 7 s after the login.
      kubernetes: kubernetesAuthMount(cluster, {
        etl: kubernetesRole('etl', ['etl'], { token_ttl: '3s', token_max_ttl: '7s' }),
      }),
    },
    policies: { etl: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }] },
  });
  writeFileSync(jwtFile, await cluster.sign(kubernetesClaims()));
});

afterAll(async () => {
  await server?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

const tokens = () =>
  adminQuery<{ accessor: string; expires_at: Date }>(
    storeDb,
    'SELECT accessor, expires_at FROM credbroker_tokens ORDER BY issued_at',
  );

it('logs in with the JWT file, renews its token past two thirds of its TTL, logs in again near its max TTL and when the broker forgets it; every lease works', async () => {
  const broker = new Broker({ addr: server.url, auth: { mount: 'kubernetes', role: 'etl', jwtFile }, env: {} });
  const check = async () => {
    const lease = await broker.lease('db/creds/reader', { autoRenew: false });
    const client = await loginAs(lease.data as never);
    await client.end();
    return lease;
  };
  await check();
  const [first] = await tokens();
  expect(first).toBeDefined();

  await sleep(2300);
  await check();
  // Renewed, not a second login: a token that expired would take its leases with it.
  const renewed = await tokens();
  expect(renewed.map((t) => t.accessor)).toEqual([first!.accessor]);
  expect(renewed[0]!.expires_at.getTime()).toBeGreaterThan(first!.expires_at.getTime() + 1000);

  // Past the token's max TTL (7 s from the login) only a new login goes on.
  for (let i = 0; i < 6; i++) {
    await sleep(1000);
    await check();
  }
  const later = await tokens();
  expect(later.length).toBeGreaterThanOrEqual(2);

  // A token the broker no longer knows: the next request logs in again instead of failing.
  await adminQuery(storeDb, 'DELETE FROM credbroker_tokens');
  await sleep(1100); // the broker caches a token check for a second
  writeFileSync(jwtFile, await cluster.sign(kubernetesClaims()));
  await check();
  expect(await tokens()).toHaveLength(1);
  await broker.close();
});

it('an unreadable JWT file is an SdkConfigError naming the file, not a request', async () => {
  const broker = new Broker({
    addr: server.url,
    auth: { mount: 'kubernetes', role: 'etl', jwtFile: join(dir, 'missing') },
    env: {},
  });
  const err = await broker.lease('db/creds/reader').catch((e: unknown) => e);
  expect(err).toBeInstanceOf(SdkConfigError);
  expect((err as Error).message).toContain('missing: ENOENT');
});
