import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { startBroker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { randomName, randomSecret } from '../../src/random.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/store/embedded-postgres.js';
import { api, baseTestConfig } from '../support/broker.js';
import { freezeCluster, thawCluster } from '../support/cluster.js';
import { dropRolesWithPrefix, freshTargetDatabase, pgUrl } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

const PREFIX = 'frozen';
const QUERY_TIMEOUT_S = 2;

// The store is a PostgreSQL server of its own, so freezing it stops nothing but this broker's store.
const dataDir = join(tmpdir(), `credbroker-frozen-store-${randomName(8)}`);
let store: EmbeddedServer;
let broker: Broker;
let frozen: number[] = [];

beforeAll(async () => {
  store = await startEmbeddedPostgres({ dataDir, password: randomSecret(), persistent: false });
  const target = await freshTargetDatabase(PREFIX);
  const config = configSchema.parse({
    ...baseTestConfig('postgres'),
    store: { url: store.url('postgres'), max_connections: 4, query_timeout: QUERY_TIMEOUT_S },
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: { reader: { member_of: [target.group] } },
      },
    },
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  thaw();
  await broker?.close();
  await store?.stop();
  await dropRolesWithPrefix(PREFIX);
});

function freeze(): void {
  frozen = freezeCluster(dataDir);
}

function thaw(): void {
  thawCluster(frozen);
  frozen = [];
}

/** A request with its own hard limit, so a hang is a failure with a time, not a stuck test. */
async function timedRequest(method: string, path: string, body?: unknown) {
  const started = Date.now();
  const res = await Promise.race([
    api(broker, method, path, body),
    new Promise<never>((_, reject) =>
      setTimeout(
        () => reject(new Error(`${method} ${path} still unanswered after 15 s with the store frozen`)),
        15_000,
      ),
    ),
  ]);
  return { ...res, ms: Date.now() - started };
}

describe('a lease store that freezes (SIGSTOP of every process of its cluster)', () => {
  it('answers 503 within store.query_timeout, and serves again once the store thaws, without a restart', async () => {
    const issued = await timedRequest('GET', 'db/creds/reader');
    expect(issued.status).toBe(200);
    const leaseId = issued.body.lease_id as string;

    freeze();
    try {
      for (const [method, path, body] of [
        ['PUT', 'sys/leases/lookup', { lease_id: leaseId }],
        ['GET', 'db/creds/reader', undefined],
        ['PUT', 'sys/leases/renew', { lease_id: leaseId }],
      ] as const) {
        const res = await timedRequest(method, path, body);
        expect({ path, status: res.status }).toEqual({ path, status: 503 });
        // The bound, plus time to get a connection slot and answer, on a loaded 2-core machine.
        expect(res.ms).toBeLessThan(QUERY_TIMEOUT_S * 1000 * 2 + 1000);
      }
    } finally {
      thaw();
    }

    // Connections stuck on the frozen server are dropped and new ones opened: no restart needed.
    await waitUntil(
      async () => (await timedRequest('PUT', 'sys/leases/lookup', { lease_id: leaseId })).status === 200,
      {
        timeoutMs: 5000,
        intervalMs: 250,
        what: 'a lookup to succeed once the store is thawed',
      },
    );
    expect((await timedRequest('GET', 'db/creds/reader')).status).toBe(200);
    expect((await timedRequest('PUT', 'sys/leases/revoke', { lease_id: leaseId })).status).toBe(204);
  });
});
