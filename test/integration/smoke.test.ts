import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { api, startTestBroker } from '../support/broker.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, loginAs } from '../support/pg.js';

const PREFIX = 'smoke';
let broker: Broker;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  broker = await startTestBroker({
    storeDatabase: await freshStoreDatabase(),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
  });
});
afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

describe('issuing a credential', () => {
  it('logs in with the issued password and reads the granted table', async () => {
    const res = await api(broker, 'GET', 'db/creds/reader');
    expect(res.status).toBe(200);
    const client = await loginAs(res.body.data);
    const rows = (await client.query('SELECT name FROM public.items ORDER BY id')).rows;
    await client.end();
    expect(rows.map((r) => r.name)).toEqual(['one', 'two']);
  });
});
