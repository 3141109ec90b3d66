import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { api, startTestBroker } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';

const PREFIX = 'slowdur';

let broker: Broker;
let storeDb: string;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('slowdur');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      slow: {
        creation_statements: [
          `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE ${target.group}`,
          'SELECT pg_sleep(2)',
        ],
      },
    },
  });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

describe('an issue that is slow on the target', () => {
  it('answers lease_duration as the time that really remains, not the TTL asked for', async () => {
    const res = await api(broker, 'GET', 'db/creds/slow?ttl=10s');

    expect(res.status).toBe(200);
    expect(res.body.lease_duration).toBeLessThanOrEqual(8);
    expect(res.body.lease_duration).toBeGreaterThan(0);
    // It agrees with the lease row: what lookup, renew and the reaper go by.
    const [{ remaining }] = await adminQuery(
      storeDb,
      'SELECT extract(epoch FROM expires_at - now())::float8 AS remaining FROM credbroker_leases WHERE id = $1',
      [res.body.lease_id],
    );
    expect(Math.abs(remaining - res.body.lease_duration)).toBeLessThanOrEqual(1.5);
  });
});
