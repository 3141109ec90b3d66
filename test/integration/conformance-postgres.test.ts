import { describeEngineConformance } from '../conformance/engine-conformance.js';
import { startTestBroker } from '../support/broker.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, loginAs } from '../support/pg.js';

const PREFIX = 'confpg';

describeEngineConformance('postgres', async () => {
  const target = await freshTargetDatabase(PREFIX);
  const broker = await startTestBroker({
    storeDatabase: await freshStoreDatabase(),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
  });
  return {
    broker,
    mount: 'db',
    role: 'reader',
    renewable: true,
    revocableBeforeExpiry: true,
    async use(data) {
      const client = await loginAs(data as never);
      try {
        await client.query('SELECT count(*) FROM public.items');
      } finally {
        await client.end();
      }
    },
    async close() {
      await broker.close();
      await dropRolesWithPrefix(PREFIX);
    },
  };
});
