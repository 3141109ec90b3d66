import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { api, startTestBroker } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';

const PREFIX = 'rvbefore';
let broker: Broker;
let storeDb: string;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase();
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
  });
});
afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

it('revokes only the leases under the prefix issued before the cut-off, one by one where the target has no bulk cut', async () => {
  const old = (await api(broker, 'PUT', 'db/creds/reader')).body;
  const fresh = (await api(broker, 'PUT', 'db/creds/reader')).body;
  await adminQuery(storeDb, `UPDATE credbroker_leases SET issued_at = issued_at - interval '1 hour' WHERE id = $1`, [
    old.lease_id,
  ]);
  const cutoff = new Date(Date.now() - 30 * 60_000).toISOString();
  const res = await api(broker, 'PUT', 'sys/broker/revoke-issued-before/db/creds/reader/', { issued_before: cutoff });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  expect(res.body.data.revoked).toBe(1);
  expect(await roleExists(old.data.username)).toBe(false);
  expect(await roleExists(fresh.data.username)).toBe(true);
});
