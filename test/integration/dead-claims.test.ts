import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimLease } from '../../src/leases/sql/claims.js';
import { api, startTestBroker, type TestBrokerOptions } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';

/**
 * A claim names the process holding it (its advisory lock on the store): a claim whose holder is
 * gone is taken over at once, one whose holder lives is left alone, however long either has left.
 */
const PREFIX = 'deadclm';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let options: TestBrokerOptions;
let storeDb: string;
const brokers: TestBroker[] = [];

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('deadclm');
  options = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
  };
});

afterAll(async () => {
  for (const b of brokers) await b.close();
  await dropRolesWithPrefix(PREFIX);
});

async function start(): Promise<TestBroker> {
  const broker = await startTestBroker(options);
  brokers.push(broker);
  return broker;
}

/** An issued lease, then claimed by `holder` for a minute, as a reaper mid-batch leaves it. */
async function claimedBy(issuer: TestBroker, holder: TestBroker): Promise<{ id: string; username: string }> {
  const res = await api(issuer, 'PUT', 'db/creds/reader', {});
  expect(res.status).toBe(200);
  const id = res.body.lease_id as string;
  const claimed = await claimLease(holder.store.pool, id, 'expired', 60, { holder: holder.store.holder() });
  expect(claimed?.claimed_by, 'a claim records its holder').toEqual(expect.any(Number));
  return { id, username: res.body.data.username };
}

const leaseState = async (id: string) =>
  (await adminQuery(storeDb, 'SELECT state FROM credbroker_leases WHERE id = $1', [id]))[0]!.state as string;

describe('claims of a process that is gone', () => {
  it('are taken over by the next reaper pass, although their TTL has a minute left', async () => {
    const survivor = await start();
    const doomed = await start();
    const { id, username } = await claimedBy(survivor, doomed);
    await doomed.close(); // its connection, and so its process lock, are gone (as with SIGKILL)

    const reaped = await survivor.reaper.reapOnce();
    expect(reaped.revoked).toContain(id);
    expect(await leaseState(id)).toBe('revoked');
    expect(await roleExists(username)).toBe(false);
  });

  it('of a live process are left to it', async () => {
    const a = await start();
    const b = await start();
    const { id, username } = await claimedBy(a, b);
    const reaped = await a.reaper.reapOnce();
    expect(reaped.revoked).not.toContain(id);
    expect(await leaseState(id)).toBe('revoking');
    expect(await roleExists(username)).toBe(true);
  });
});
