import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { randomName, randomSecret } from '../../src/random.js';
import { freePort, startEmbeddedPostgres, type EmbeddedServer } from '../../src/store/embedded-postgres.js';
import { api, baseTestConfig } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { dropRolesWithPrefix, freshTargetDatabase, pgUrl } from '../support/pg.js';

const PREFIX = 'storedown';

// The store is a PostgreSQL server of its own, so stopping it stops nothing but this broker's store.
const dataDir = join(tmpdir(), `credbroker-down-store-${randomName(8)}`);
const password = randomSecret();
let port: number;
let store: EmbeddedServer | null = null;
let cluster: JwksServer;
let broker: Broker;

const startStore = async () => {
  store = await startEmbeddedPostgres({ dataDir, password, port, persistent: true });
};
const stopStore = async () => {
  await store?.stop();
  store = null;
};

beforeAll(async () => {
  port = await freePort();
  await startStore();
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  const target = await freshTargetDatabase(PREFIX);
  const config = configSchema.parse({
    ...baseTestConfig('postgres'),
    store: { url: store!.url('postgres'), max_connections: 4, query_timeout: 2 },
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: { reader: { member_of: [target.group] } },
      },
    },
    auth: { kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['etl']) }) },
    policies: {
      etl: [
        { path: 'db/creds/reader', capabilities: ['read', 'update'] },
        { path: 'sys/leases/*', capabilities: ['update'] },
      ],
    },
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await stopStore();
  await rm(dataDir, { recursive: true, force: true });
  await dropRolesWithPrefix(PREFIX);
});

async function login(): Promise<{ status: number; token?: string; body: unknown }> {
  const jwt = await cluster.sign(kubernetesClaims({ namespace: 'etl', serviceAccount: 'loader' }));
  const res = await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt }, null);
  return { status: res.status, token: res.body?.auth?.client_token, body: res.body };
}

describe('a lease store that is down (its server stopped)', () => {
  it('answers a broker token’s requests 503 with a clear error, not 500, and serves them again once it is back, without a restart', async () => {
    const { token } = await login();
    expect(token).toMatch(/^cbt\./);
    const issued = await api(broker, 'GET', 'db/creds/reader', undefined, token!);
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    const leaseId = issued.body.lease_id as string;

    await stopStore();
    // Past the token cache (1 s): every request below must reach the store to know the token.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const requests = [
      ['GET', 'db/creds/reader', undefined],
      ['PUT', 'sys/leases/lookup', { lease_id: leaseId }],
      ['PUT', 'sys/leases/renew', { lease_id: leaseId }],
      ['GET', 'auth/token/lookup-self', undefined],
      ['PUT', 'auth/token/renew-self', {}],
    ] as const;
    for (const [method, path, body] of requests) {
      const res = await api(broker, method, path, body, token!);
      expect({ path, status: res.status, body: res.body }).toEqual({
        path,
        status: 503,
        body: { errors: ['lease store unavailable'] },
      });
    }
    // A login needs the store to record its token: the same answer.
    const refused = await login();
    expect({ status: refused.status, body: refused.body }).toEqual({
      status: 503,
      body: { errors: ['lease store unavailable'] },
    });

    await startStore();
    for (const [method, path, body] of requests) {
      const res = await api(broker, method, path, body, token!);
      expect({ path, status: res.status }).toEqual({ path, status: 200 });
    }
    expect((await login()).status).toBe(200);
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId }, token!)).status).toBe(204);
  });
});
