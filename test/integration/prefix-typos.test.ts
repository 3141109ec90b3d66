import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { api, baseTestConfig } from '../support/broker.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl, roleExists } from '../support/pg.js';

/**
 * During an incident a typo must not look like success: a prefix whose mount is not configured
 * is a 400 naming the configured mounts, revoke-prefix says how many leases it revoked, and a
 * revoke of an id that names no lease is told apart (the status stays Vault's 204).
 */
const PREFIX = 'typos';
let storeDb: string;
let group: string;
let targetDb: string;
/** Mounts `db` and `old`. */
let broker: Broker;
/** Same store, `old` removed from its config: the leases `old` issued are still in the table. */
let withoutOld: Broker;

function config(mounts: string[]) {
  const roles = { reader: { member_of: [group] }, batch: { member_of: [group] } };
  return configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: Object.fromEntries(
      mounts.map((m) => [m, { type: 'postgres', connection_url: pgUrl(targetDb), username_prefix: PREFIX, roles }]),
    ),
  });
}

async function issue(path = 'db/creds/reader', on: Broker = broker) {
  const res = await api(on, 'PUT', path, {});
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { lease_id: string; data: { username: string } };
}

/** Vault's 204, with the broker's count of what it revoked in X-Credbroker-Revoked. */
function revokedCount(res: { status: number; headers: Headers; body: unknown }): number {
  expect(res.status, JSON.stringify(res.body)).toBe(204);
  const count = res.headers.get('x-credbroker-revoked');
  expect(count).toMatch(/^\d+$/);
  return Number(count);
}

const UNKNOWN = (mount: string, configured: string) => `no mount named "${mount}"; configured mounts: ${configured}`;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  group = target.group;
  targetDb = target.database;
  storeDb = await freshStoreDatabase('typos');
  broker = await startBroker(config(['db', 'old']), { log: createLogger('silent'), reaper: false });
  withoutOld = await startBroker(config(['db']), { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  await withoutOld?.close();
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

describe('a prefix whose mount is not configured', () => {
  it('is a 400 naming the configured mounts on LIST, revoke-prefix, revoke-force and revoke-issued-before, and revokes nothing', async () => {
    const bystander = await issue();
    for (const prefix of [
      'dmeo/',
      'dmeo',
      'dmeo/creds/',
      'dmeo/creds/reader',
      'dmeo/creds/reader/',
      'd/',
      'dbx/creds/reader/',
    ]) {
      const mount = prefix.split('/')[0]!;
      const list = await api(broker, 'GET', `sys/leases/lookup/${prefix}?list=true`);
      expect(list, prefix).toMatchObject({ status: 400, body: { errors: [UNKNOWN(mount, 'db, old')] } });
      for (const path of ['sys/leases/revoke-prefix', 'sys/leases/revoke-force', 'sys/broker/revoke-issued-before']) {
        const res = await api(broker, 'PUT', `${path}/${prefix}`, {});
        expect(res, `${path}/${prefix}`).toMatchObject({ status: 400, body: { errors: [UNKNOWN(mount, 'db, old')] } });
      }
    }
    expect(await roleExists(bystander.data.username)).toBe(true);
    expect((await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: bystander.lease_id })).body.data.state).toBe(
      'active',
    );
  });

  it("asking it for a credential keeps Vault's 404 and first error, and names the configured mounts after it", async () => {
    for (const method of ['GET', 'PUT']) {
      const res = await api(broker, method, 'dmeo/creds/reader', method === 'PUT' ? {} : undefined);
      expect(res).toMatchObject({
        status: 404,
        body: {
          errors: ['no handler for route "dmeo/creds/reader". route entry not found.', UNKNOWN('dmeo', 'db, old')],
        },
      });
    }
    // A configured mount without that path is only Vault's 404.
    expect(await api(broker, 'PUT', 'db/sts/reader', {})).toMatchObject({
      status: 404,
      body: { errors: ['no handler for route "db/sts/reader". route entry not found.'] },
    });
  });

  it("a configured mount with nothing under the prefix is not an error: Vault's empty LIST (404 with no errors), 0 revoked", async () => {
    expect(await api(broker, 'GET', 'sys/leases/lookup/old/creds/batch/?list=true')).toMatchObject({
      status: 404,
      body: { errors: [] },
    });
    expect(revokedCount(await api(broker, 'PUT', 'sys/leases/revoke-prefix/old/creds/batch/'))).toBe(0);
    expect(revokedCount(await api(broker, 'PUT', 'sys/leases/revoke-force/old/creds/batch'))).toBe(0);
  });

  it('a mount since removed from the config still lists and force-revokes the leases it left behind', async () => {
    const left = await issue('old/creds/reader');
    const suffix = left.lease_id.split('/').pop();
    expect(await api(withoutOld, 'GET', 'sys/leases/lookup/old/creds/reader/?list=true')).toMatchObject({
      status: 200,
      body: { data: { keys: [suffix] } },
    });
    expect(revokedCount(await api(withoutOld, 'PUT', 'sys/leases/revoke-force/old/'))).toBe(1);
    // Once nothing is left, the removed mount is unknown like any other.
    expect(await api(withoutOld, 'PUT', 'sys/leases/revoke-force/old/')).toMatchObject({
      status: 400,
      body: { errors: [UNKNOWN('old', 'db')] },
    });
    await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: left.lease_id }); // the role itself, through a broker that has the mount
  });
});

describe('revoke-prefix counts what it revoked', () => {
  it('answers 204 with X-Credbroker-Revoked: N, and the N roles are gone; a second run revokes 0', async () => {
    const batch = [await issue('db/creds/batch'), await issue('db/creds/batch'), await issue('db/creds/batch')];
    const reader = await issue();
    const res = await api(broker, 'PUT', 'sys/leases/revoke-prefix/db/creds/batch');
    expect(res.body).toBeNull(); // Vault's 204, no body
    expect(revokedCount(res)).toBe(3);
    for (const lease of batch) expect(await roleExists(lease.data.username)).toBe(false);
    expect(await roleExists(reader.data.username)).toBe(true);
    expect(revokedCount(await api(broker, 'PUT', 'sys/leases/revoke-prefix/db/creds/batch/'))).toBe(0);
  });

  it('on one lease id: 1, then 0 once it is revoked', async () => {
    const lease = await issue();
    expect(revokedCount(await api(broker, 'PUT', `sys/leases/revoke-prefix/${lease.lease_id}`))).toBe(1);
    expect(await roleExists(lease.data.username)).toBe(false);
    expect(revokedCount(await api(broker, 'PUT', `sys/leases/revoke-prefix/${lease.lease_id}`))).toBe(0);
  });

  it('revoke-force counts too', async () => {
    await issue('db/creds/batch');
    await issue('db/creds/batch');
    expect(revokedCount(await api(broker, 'PUT', 'sys/leases/revoke-force/db/creds/batch/'))).toBe(2);
  });
});

describe('revoking one lease id', () => {
  it("keeps Vault's 204 for an id that names no lease, and says which it was in X-Credbroker-Revoke", async () => {
    for (const id of ['db/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA', 'dmeo/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA']) {
      const res = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: id });
      expect(res.status).toBe(204);
      expect(res.headers.get('x-credbroker-revoke')).toBe('not-found');
    }
    const lease = await issue();
    const first = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: lease.lease_id });
    expect(first.status).toBe(204);
    expect(first.headers.get('x-credbroker-revoke')).toBe('revoked');
    expect(await roleExists(lease.data.username)).toBe(false);
    const again = await api(broker, 'PUT', `sys/leases/revoke/${lease.lease_id}`);
    expect(again.status).toBe(204);
    expect(again.headers.get('x-credbroker-revoke')).toBe('already-revoked');
  });
});
