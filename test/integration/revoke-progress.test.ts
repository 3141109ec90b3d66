import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import type { RevokeRequest } from '../../src/engines.js';
import { randomLeaseSuffix } from '../../src/random.js';
import { withWrappedTarget } from '../support/wrap-engine.js';
import { startTestBroker, type TestBrokerOptions } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  randomName,
  roleExists,
} from '../support/pg.js';

const PREFIX = 'revprog';

let storeDb: string;
let options: TestBrokerOptions;
let broker: Broker;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('revprog');
  options = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
    reaper: { concurrency: 4 },
    engineTimeout: 1,
    // pending_grace must exceed engine_timeout; irrelevant here.
  };
  // An engine that reports each revocation as it finishes, then runs a step shared by the whole
  // batch that outlives the batch's bound (a final sweep on a target that has become slow).
  const engines = withWrappedTarget('postgres', (target) => {
    target.revokeMany = async (reqs: RevokeRequest[], slots, progress) => {
      const errors = await Promise.all(
        reqs.map((req, i) =>
          slots.run(() =>
            target.revoke(req).then(
              () => (progress?.onResult(i, null), null),
              (err: Error) => (progress?.onResult(i, err), err),
            ),
          ),
        ),
      );
      await adminQuery('postgres', 'SELECT pg_sleep(4)');
      return errors;
    };
  });
  broker = await startTestBroker({ ...options, engines });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

/** Expired leases with real roles; the handle of `broken` makes its revocation fail on the target. */
async function seed(count: number, broken: number): Promise<{ ids: string[]; usernames: string[] }> {
  const usernames = Array.from({ length: count }, () => `${PREFIX}_reader_${randomName(16)}`);
  const ids = usernames.map(() => `db/creds/reader/${randomLeaseSuffix()}`);
  await adminQuery('postgres', usernames.map((u) => `CREATE ROLE ${pg.escapeIdentifier(u)} LOGIN;`).join('\n'));
  const handles = usernames.map((username, i) =>
    i === broken ? { username, revocation_statements: ['SELECT no_such_function()'] } : { username },
  );
  await adminQuery(
    storeDb,
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester, issued_at, expires_at, max_expires_at, next_attempt_at)
     SELECT id, 'db', 'reader', 'postgres', 'active', handle::jsonb, 'seed', now() - interval '1 hour', now() - interval '1 s', now() + interval '1 hour', now() - interval '1 s'
       FROM unnest($1::text[], $2::text[]) AS s(id, handle)`,
    [ids, handles.map((h) => JSON.stringify(h))],
  );
  return { ids, usernames };
}

describe('a revocation batch whose shared final step times out', () => {
  it('keeps every revocation the engine reported done, and fails only the one that failed', async () => {
    const { ids, usernames } = await seed(6, 2);

    const result = await broker.reaper.reapOnce();

    expect(result.failed).toEqual([ids[2]]);
    expect(result.revoked.sort()).toEqual(ids.filter((_, i) => i !== 2).sort());
    const rows = await adminQuery(storeDb, 'SELECT id, state, attempts FROM credbroker_leases ORDER BY id');
    for (const row of rows)
      expect(row).toMatchObject(
        row.id === ids[2] ? { state: 'revoking', attempts: 1 } : { state: 'revoked', attempts: 0 },
      );
    for (const [i, username] of usernames.entries()) expect(await roleExists(username)).toBe(i === 2);
  });
});
