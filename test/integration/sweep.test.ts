import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  pgUrl,
  randomName,
  roleExists,
} from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'swp';
/** Unprefixed, so no sweep may touch it; still this file's own (dropped after). */
const UNPREFIXED = `other${PREFIX}_manual_${randomName(16)}`;

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;
let storeDb: string;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

/** A role as the broker would name it, made behind its back. */
const orphanName = (label: string) => `${PREFIX}_${label}_${randomName(16)}`;

async function issue(): Promise<{ leaseId: string; data: any }> {
  const res = await api(broker, 'PUT', 'db/creds/reader', {});
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { leaseId: res.body.lease_id, data: res.body.data };
}

async function sweep(body: Record<string, unknown>) {
  const res = await api(broker, 'PUT', 'sys/broker/sweep', body);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.data.mounts as { mount: string; found: any[]; skipped_reason?: string }[];
}

async function canLogIn(data: any): Promise<boolean> {
  const client = await loginAs(data).catch(() => null);
  if (!client) return false;
  const { rows } = await client.query('SELECT count(*)::int AS n FROM public.items');
  await client.end();
  return rows[0].n === 2;
}

async function auditEvents(operation: string): Promise<any[]> {
  return adminQuery(storeDb, "SELECT * FROM credbroker_audit WHERE type = 'event' AND operation = $1 ORDER BY id", [
    operation,
  ]);
}

beforeAll(async () => {
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('sweep');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
    audit: { hmac_key: `sweep-audit-key-${randomName(24)}`, postgres: true },
    sweep: { grace: '0s' },
  });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
  await adminQuery('postgres', `DROP ROLE IF EXISTS ${UNPREFIXED}`);
});

describe('orphan sweep', () => {
  it('finds only the prefixed roles no live lease owns, and drops exactly those with apply', async () => {
    const leased = [await issue(), await issue()];
    const plain = orphanName('manual');
    const owner = orphanName('owner');
    await adminQuery('postgres', `CREATE ROLE ${plain} LOGIN; CREATE ROLE ${UNPREFIXED} LOGIN`);
    // One orphan owns a table it made, so the drop has to go through the engine's DROP OWNED.
    await adminQuery(
      target.database,
      `CREATE ROLE ${owner} LOGIN; GRANT CREATE ON SCHEMA public TO ${owner};
       SET ROLE ${owner}; CREATE TABLE public.${owner}_t (id int); RESET ROLE;`,
    );

    const report = await sweep({});
    expect(report).toHaveLength(1);
    expect(report[0]!.mount).toBe('db');
    expect(report[0]!.skipped_reason).toBeUndefined();
    expect(report[0]!.found.map((f) => f.name).sort()).toEqual([owner, plain].sort());
    for (const f of report[0]!.found) {
      expect(f.dropped).toBeUndefined();
      expect(Date.parse(f.first_seen)).not.toBeNaN();
    }
    expect(await roleExists(plain)).toBe(true);
    expect(await roleExists(owner)).toBe(true);
    expect(await auditEvents('sweep-found')).toHaveLength(2);

    const applied = await sweep({ apply: true, mount: 'db' });
    expect(applied[0]!.found.map((f) => [f.name, f.dropped, f.error]).sort()).toEqual(
      [
        [owner, true, undefined],
        [plain, true, undefined],
      ].sort(),
    );
    expect(await roleExists(plain)).toBe(false);
    expect(await roleExists(owner)).toBe(false);
    expect(await roleExists(UNPREFIXED)).toBe(true);
    for (const lease of leased) {
      expect(await roleExists(lease.data.username)).toBe(true);
      expect(await canLogIn(lease.data)).toBe(true);
    }
    const dropped = await auditEvents('sweep-dropped');
    expect(dropped.map((e) => e.data.object).sort()).toEqual([owner, plain].sort());
    expect(dropped.every((e) => e.data.mount === 'db' && e.outcome === 'ok')).toBe(true);

    const metrics = await fetch(`${broker.url}/v1/sys/metrics?format=prometheus`, {
      headers: { 'x-vault-token': ROOT_TOKEN },
    }).then((r) => r.text());
    expect(metrics).toMatch(/^credbroker_sweep_orphans\{mount="db"\} 2$/m);
    expect(metrics).toMatch(/^credbroker_sweep_dropped_total\{mount="db"\} 2$/m);

    // Nothing left to find: the leased roles stay owned, run after run.
    expect((await sweep({ apply: true }))[0]!.found).toEqual([]);
    expect(await sweep({ apply: true })).toEqual([{ mount: 'db', found: [] }]);
  });

  it('never touches a role whose lease row is still pending (an issue in flight)', async () => {
    const inFlight = orphanName('reader');
    await adminQuery('postgres', `CREATE ROLE ${inFlight} LOGIN`);
    await adminQuery(
      storeDb,
      `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, expires_at, max_expires_at, next_attempt_at)
       VALUES ($1, 'db', 'reader', 'postgres', 'pending', $2, now() + interval '10 minutes',
               now() + interval '1 hour', now() + interval '1 minute')`,
      [`db/creds/reader/${randomName(20)}`, JSON.stringify({ username: inFlight })],
    );
    const applied = await sweep({ apply: true });
    expect(applied[0]!.found).toEqual([]);
    expect(await roleExists(inFlight)).toBe(true);
  });

  it('counts the grace from first sight where the target records no creation time', async () => {
    // A broker with the default hour of grace, on the same store: the orphan is seen now, so not yet due.
    const young = orphanName('young');
    await adminQuery('postgres', `CREATE ROLE ${young} LOGIN`);
    const patient = await startTestBroker({
      storeDatabase: storeDb,
      targetDatabase: target.database,
      prefix: PREFIX,
      roles: { reader: { member_of: [target.group] } },
    });
    try {
      const first = await patient.sweeper.sweepOnce({ apply: true });
      expect(first[0]!.found).toEqual([]);
      expect(await roleExists(young)).toBe(true);
      // Seen an hour ago (backdated, not slept): due now, and dropped.
      await adminQuery(
        storeDb,
        "UPDATE credbroker_sweep_seen SET first_seen = now() - interval '61 minutes' WHERE name = $1",
        [young],
      );
      const later = await patient.sweeper.sweepOnce({ apply: true });
      expect(later[0]!.found.map((f) => [f.name, f.dropped])).toEqual([[young, true]]);
      expect(await roleExists(young)).toBe(false);
    } finally {
      await patient.close();
    }
  });

  it('runs on its schedule in a replica and drops on a mount that says sweep: drop', async () => {
    // The real timer is what is tested here: every second, on a second broker of the same store.
    const orphan = orphanName('timer');
    await adminQuery('postgres', `CREATE ROLE ${orphan} LOGIN`);
    const leased = await issue();
    const scheduled = await startTestBroker({
      storeDatabase: storeDb,
      targetDatabase: target.database,
      prefix: PREFIX,
      roles: { reader: { member_of: [target.group] } },
      mount: { sweep: 'drop' },
      sweep: { schedule: '* * * * * *', grace: '0s' },
      scheduleReaper: true,
    });
    try {
      await waitUntil(async () => !(await roleExists(orphan)), {
        timeoutMs: 15_000,
        what: 'the scheduled sweep to drop the orphan',
        intervalMs: 200,
      });
      expect(await canLogIn(leased.data)).toBe(true);
    } finally {
      await scheduled.close();
    }
  });

  it('skips a mount another replica is sweeping, and refuses an unknown mount', async () => {
    const orphan = orphanName('locked');
    await adminQuery('postgres', `CREATE ROLE ${orphan} LOGIN`);
    const other = new pg.Client({ connectionString: pgUrl(storeDb) });
    await other.connect();
    try {
      await other.query("SELECT pg_advisory_lock(hashtext('credbroker sweep'), hashtext('db'))");
      const skipped = await sweep({ apply: true });
      expect(skipped).toEqual([{ mount: 'db', found: [], skipped_reason: 'another replica is sweeping this mount' }]);
      expect(await roleExists(orphan)).toBe(true);
    } finally {
      await other.end();
    }
    const res = await api(broker, 'PUT', 'sys/broker/sweep', { mount: 'nope' });
    expect(res.status).toBe(400);
    expect((await sweep({ apply: true }))[0]!.found.map((f) => f.name)).toEqual([orphan]);
  });
});
