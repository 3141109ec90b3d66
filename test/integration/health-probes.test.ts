import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { baseTestConfig } from '../support/broker.js';
import { adminQuery, freshStoreDatabase } from '../support/pg.js';

/**
 * The probes of deploy/kubernetes/broker.yaml against a real broker whose lease store goes away:
 * readiness (`/v1/sys/health`) follows the store, liveness (`/v1/sys/broker/live`) does not, so a
 * store outage takes replicas out of the Service without restarting them.
 */
let storeDb: string;
let broker: Broker;

async function status(path: string, method = 'GET'): Promise<number> {
  const res = await fetch(`${broker.url}${path}`, { method });
  await res.arrayBuffer();
  return res.status;
}

/** The store refuses every new connection, and the broker's open ones are ended: a store outage. */
async function storeDown(): Promise<void> {
  await adminQuery('postgres', `ALTER DATABASE ${storeDb} ALLOW_CONNECTIONS false`);
  await adminQuery('postgres', 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [storeDb]);
}

async function storeUp(): Promise<void> {
  await adminQuery('postgres', `ALTER DATABASE ${storeDb} ALLOW_CONNECTIONS true`);
}

beforeAll(async () => {
  storeDb = await freshStoreDatabase('probes');
  // As deployed: the audit log goes to the store too (and stdout), so an audited probe would
  // depend on the store twice over.
  const config = configSchema.parse({
    ...baseTestConfig(storeDb),
    audit: { hmac_key: 'probe-test-hmac-key-0123456789abcdef', postgres: true },
    mounts: {},
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  await storeUp().catch(() => undefined);
  await broker?.close();
});

describe('liveness and readiness', () => {
  it('with the store up, both answer 200', async () => {
    expect(await status('/v1/sys/health')).toBe(200);
    expect(await status('/v1/sys/broker/live')).toBe(200);
    const live = await fetch(`${broker.url}/v1/sys/broker/live`);
    expect(await live.json()).toMatchObject({ alive: true, version: expect.any(String) });
  });

  it('with the store down, liveness answers 200 (GET and HEAD) while health/readiness answers 503', async () => {
    await storeDown();
    try {
      expect(await status('/v1/sys/health')).toBe(503);
      expect(await status('/v1/sys/health', 'HEAD')).toBe(503);
      // The manifest's former liveness path: Vault's overrides do not cover a store outage.
      expect(await status('/v1/sys/health?sealedcode=200&uninitcode=200&standbyok=true')).toBe(503);
      for (let i = 0; i < 5; i++) {
        expect(await status('/v1/sys/broker/live')).toBe(200);
        expect(await status('/v1/sys/broker/live', 'HEAD')).toBe(200);
      }
      // The store is really gone for the broker, not only for its health check.
      expect(await status('/v1/sys/leases/lookup/', 'GET')).toBeGreaterThanOrEqual(500);
    } finally {
      await storeUp();
    }
  });

  it('once the store is back, readiness is 200 again without a restart', async () => {
    expect(await status('/v1/sys/health')).toBe(200);
    expect(await status('/v1/sys/broker/live')).toBe(200);
  });
});
