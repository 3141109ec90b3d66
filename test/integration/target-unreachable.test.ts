import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema, type BrokerConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { freePort } from '../../src/store/embedded-postgres.js';
import { ROOT_TOKEN, api } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  pgUrl,
  randomName,
  roleExists,
} from '../support/pg.js';

const PREFIX = 'unreach';
const MAX_ATTEMPTS = 3;
const BACKOFF_BASE = 1;
const BACKOFF_MAX = 2;
/** The admin password in the dead mount's connection_url: it must never surface in an error. */
const DEAD_PASSWORD = `deadpw${randomName(12)}`;

let storeDb: string;
/** Both mounts on the live target. */
let live: Broker;
/** Same store, same mount names, but mount `db` points at a port nothing listens on. */
let dead: Broker;

function brokerConfig(dbUrl: string, db2Url: string, group: string): BrokerConfig {
  const roles = { reader: { member_of: [group] }, bulk: { member_of: [group] } };
  return configSchema.parse({
    listen: { address: '127.0.0.1', port: 0 },
    store: { url: pgUrl(storeDb), max_connections: 10 },
    root_token: ROOT_TOKEN,
    log_level: 'silent',
    engine_timeout: 1,
    reaper: { max_attempts: MAX_ATTEMPTS, backoff_base: BACKOFF_BASE, backoff_max: BACKOFF_MAX, pending_grace: 30 },
    mounts: {
      db: { type: 'postgres', connection_url: dbUrl, username_prefix: PREFIX, roles },
      db2: { type: 'postgres', connection_url: db2Url, username_prefix: PREFIX, roles },
    },
  });
}

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('unreach');
  const targetUrl = pgUrl(target.database);
  const deadUrl = `postgres://postgres:${DEAD_PASSWORD}@127.0.0.1:${await freePort()}/${target.database}`;
  live = await startBroker(brokerConfig(targetUrl, targetUrl, target.group), {
    log: createLogger('silent'),
    reaper: false,
  });
  dead = await startBroker(brokerConfig(deadUrl, targetUrl, target.group), {
    log: createLogger('silent'),
    reaper: false,
  });
});

afterAll(async () => {
  await dead?.close();
  await live?.close();
  await dropRolesWithPrefix(PREFIX);
});

async function issue(path: string): Promise<{ leaseId: string; username: string; password: string }> {
  const res = await api(live, 'GET', path);
  expect(res.status).toBe(200);
  return { leaseId: res.body.lease_id, username: res.body.data.username, password: res.body.data.password };
}

async function leaseRow(id: string) {
  const [row] = await adminQuery(storeDb, 'SELECT * FROM credbroker_leases WHERE id = $1', [id]);
  return row;
}

/** Makes the lease due now, as if it had expired (or its backoff had passed). */
async function makeDue(id: string): Promise<void> {
  await adminQuery(
    storeDb,
    `UPDATE credbroker_leases SET expires_at = least(expires_at, now() - interval '1 s'), next_attempt_at = now() - interval '1 s' WHERE id = $1`,
    [id],
  );
}

const dbNow = async (): Promise<number> => (await adminQuery(storeDb, 'SELECT clock_timestamp() AS t'))[0].t.getTime();

describe('revocation while the target is unreachable', () => {
  it('retries with jittered backoff, gives up as irrevocable after max_attempts, and an operator retry revokes once the target is back', async () => {
    const lease = await issue('db/creds/reader');
    expect(await roleExists(lease.username)).toBe(true);
    const secrets = [lease.password, inject('pg').password, DEAD_PASSWORD];

    // Each failed attempt: at most `base * 2^(attempt-1)`, capped at backoff_max, jittered down to half of it.
    const windows: [number, number][] = [
      [BACKOFF_BASE * 0.5, BACKOFF_BASE],
      [Math.min(BACKOFF_MAX, BACKOFF_BASE * 2) * 0.5, Math.min(BACKOFF_MAX, BACKOFF_BASE * 2)],
    ];
    for (let attempt = 1; attempt < MAX_ATTEMPTS; attempt++) {
      await makeDue(lease.leaseId);
      const before = await dbNow();
      const result = await dead.reaper.reapOnce();
      const after = await dbNow();
      expect(result).toEqual({ claimed: 1, revoked: [], failed: [lease.leaseId] });

      const row = await leaseRow(lease.leaseId);
      expect(row).toMatchObject({ state: 'revoking', attempts: attempt, revoke_reason: 'expired' });
      expect(row.last_error).toMatch(/\S/);
      for (const secret of secrets) expect(row.last_error).not.toContain(secret);
      // next_attempt_at = (the failure's now(), somewhere in [before, after]) + delay.
      const next = row.next_attempt_at.getTime();
      const [low, high] = windows[attempt - 1]!;
      expect(next).toBeGreaterThan(after);
      expect(next - before).toBeGreaterThanOrEqual(low * 1000);
      expect(next - after).toBeLessThanOrEqual(high * 1000);

      // Not due again before its backoff.
      expect((await dead.reaper.reapOnce()).claimed).toBe(0);
    }

    await makeDue(lease.leaseId);
    expect(await dead.reaper.reapOnce()).toEqual({ claimed: 1, revoked: [], failed: [lease.leaseId] });
    const irrevocable = await leaseRow(lease.leaseId);
    expect(irrevocable).toMatchObject({ state: 'irrevocable', attempts: MAX_ATTEMPTS, next_attempt_at: null });
    for (const secret of secrets) expect(irrevocable.last_error).not.toContain(secret);
    expect(await roleExists(lease.username)).toBe(true);
    // Nothing schedules an irrevocable lease again: it waits for an operator, who can list it.
    expect((await dead.reaper.reapOnce()).claimed).toBe(0);
    const listed = await api(live, 'GET', 'sys/broker/irrevocable/db/');
    expect(listed.body.data.leases).toEqual([
      expect.objectContaining({ lease_id: lease.leaseId, attempts: MAX_ATTEMPTS, last_error: irrevocable.last_error }),
    ]);

    const retry = await api(live, 'PUT', 'sys/leases/revoke', { lease_id: lease.leaseId });
    expect(retry.status).toBe(204);
    expect(await leaseRow(lease.leaseId)).toMatchObject({ state: 'revoked', next_attempt_at: null });
    expect(await roleExists(lease.username)).toBe(false);
    expect((await api(live, 'GET', 'sys/broker/irrevocable/db/')).body.data.leases).toEqual([]);
  });

  it('revoke-prefix reports 502 with every lease it could not revoke, and still revokes the reachable mount', async () => {
    const onDead = [await issue('db/creds/bulk'), await issue('db/creds/bulk')];
    const onLive = [await issue('db2/creds/bulk'), await issue('db2/creds/bulk')];

    const failed = await api(dead, 'PUT', 'sys/leases/revoke-prefix/db/creds/bulk');
    expect(failed.status).toBe(502);
    const ids = onDead.map((l) => l.leaseId).sort();
    expect(failed.body.errors[0]).toMatch(/failed to revoke 2 of 2 leases/);
    expect(
      failed.body.errors
        .slice(1)
        .map((e: string) => e.slice(0, e.indexOf(': ')))
        .sort(),
    ).toEqual(ids);
    expect(failed.body.data.revoked).toBe(0);
    expect(failed.body.data.failed.map((f: { lease_id: string }) => f.lease_id).sort()).toEqual(ids);
    expect(JSON.stringify(failed.body)).not.toContain(DEAD_PASSWORD);
    for (const lease of onDead) {
      expect(JSON.stringify(failed.body)).not.toContain(lease.password);
      expect(await leaseRow(lease.leaseId)).toMatchObject({ state: 'revoking', revoke_reason: 'prefix', attempts: 1 });
      expect((await leaseRow(lease.leaseId)).next_attempt_at).not.toBeNull(); // queued for retry
      expect(await roleExists(lease.username)).toBe(true);
    }

    const ok = await api(dead, 'PUT', 'sys/leases/revoke-prefix/db2/creds/bulk');
    expect(ok.status).toBe(204);
    for (const lease of onLive) {
      expect(await leaseRow(lease.leaseId)).toMatchObject({ state: 'revoked', revoke_reason: 'prefix' });
      expect(await roleExists(lease.username)).toBe(false);
    }

    // The queued failures are revoked by a reaper that can reach the target.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET next_attempt_at = now() - interval '1 s' WHERE id = ANY($1)`,
      [ids],
    );
    expect((await live.reaper.reapOnce()).revoked.sort()).toEqual(ids);
    for (const lease of onDead) expect(await roleExists(lease.username)).toBe(false);
  });
});
