import type pg from 'pg';
import {
  describeEngineConformance,
  type HeldSession,
  type TargetProbe,
} from '../../../../test/conformance/engine-conformance.js';
import { startTestBroker } from '../../../../test/support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
} from '../../../../test/support/pg.js';

const PREFIX = 'confpg';

const usernameOf = (handle: unknown) => (handle as { username: string }).username;

/** Reads pg_roles and pg_stat_activity as the cluster's superuser. */
const probe: TargetProbe = {
  async exists(handle) {
    return (await adminQuery('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1', [usernameOf(handle)])).length > 0;
  },
  async validUntil(handle) {
    const rows = await adminQuery<{ rolvaliduntil: Date | null }>(
      'postgres',
      'SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1',
      [usernameOf(handle)],
    );
    return rows[0]?.rolvaliduntil ?? null;
  },
  async openSession(credential): Promise<HeldSession> {
    const client: pg.Client = await loginAs(credential as never);
    client.on('error', () => undefined); // the backend terminated by the revoke: the next query says so
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const pid = rows[0]!.pid;
    return {
      listed: async () =>
        (await adminQuery('postgres', 'SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).length > 0,
      query: async () => void (await client.query('SELECT 1')),
      close: () => client.end().catch(() => undefined),
    };
  },
};

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
    probe,
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
