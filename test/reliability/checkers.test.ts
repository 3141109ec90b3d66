import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startTestBroker } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';
import {
  findViolations,
  FORMS,
  loadRoles,
  ROLE_OF_FORM,
  sleep,
  type InvariantInput,
  type ReceivedLease,
  type Violations,
} from '../support/reliability.js';

/**
 * A checker that cannot fail is a defect (issue 10). A clean little run — two leases of each form,
 * expired and reaped — passes every invariant; then each violation is planted on the real store,
 * target or audit file, one at a time, and the checker that owns it must report it (and only
 * that checker), before the plant is undone.
 */
const PREFIX = 'rcheck';
const LOG_TABLE = 'public.rcheck_drops';
const auditFile = join(mkdtempSync(join(tmpdir(), 'rcheck-audit-')), 'audit.log');

let broker: Awaited<ReturnType<typeof startTestBroker>>;
let input: InvariantInput;
let storeDb: string;
let targetDb: string;
const received: ReceivedLease[] = [];

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  targetDb = target.database;
  storeDb = await freshStoreDatabase('rcheck');
  await adminQuery(
    targetDb,
    `CREATE TABLE ${LOG_TABLE} (name text NOT NULL, dropped_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: targetDb,
    prefix: PREFIX,
    roles: loadRoles({ group: target.group, logTable: LOG_TABLE, ttlSeconds: 1, maxTtlSeconds: 5 }),
    audit: { hmac_key: 'checkers-audit-hmac-key-0123456789abcdef', file: { path: auditFile } },
  });
  for (const form of FORMS) {
    for (let i = 0; i < 2; i++) {
      const started = Date.now();
      const res = await api(broker, 'PUT', `db/creds/${ROLE_OF_FORM[form]}`, {});
      expect(res.status).toBe(200);
      received.push({
        id: res.body.lease_id,
        username: res.body.data.username,
        form,
        toldExpiresAt: started + res.body.lease_duration * 1000,
      });
    }
  }
  await sleep(1200);
  while ((await broker.reaper.reapOnce()).claimed > 0);
  input = {
    label: 'checkers',
    storeDb,
    targetDb,
    prefix: PREFIX,
    group: target.group,
    logTable: LOG_TABLE,
    received,
    maxOutliveMs: 5000,
    minReceivedPerForm: 2,
    minExpiredPerForm: 2,
    auditFiles: [auditFile],
  };
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

/** The non-empty violation lists, by name. */
async function found(over: Partial<InvariantInput> = {}): Promise<Partial<Violations>> {
  const { violations } = await findViolations({ ...input, ...over });
  return Object.fromEntries(Object.entries(violations).filter(([, list]) => list.length > 0));
}

const statementsLease = () => received.find((l) => l.form === 'statements')!;

describe('the reliability invariant checkers', () => {
  it('find nothing wrong with a clean run, which reaped every lease and audited each revocation', async () => {
    const { violations, figures } = await findViolations(input);
    expect(Object.values(violations).flat()).toEqual([]);
    expect(figures.reaperRevocations).toBe(4);
    expect(figures.auditLines).toBeGreaterThanOrEqual(4);
  });

  it('(b) catch a planted orphan role', async () => {
    await adminQuery('postgres', `CREATE ROLE ${PREFIX}_planted LOGIN`);
    try {
      expect(await found()).toEqual({ orphans: [`${PREFIX}_planted`] });
    } finally {
      await adminQuery('postgres', `DROP ROLE ${PREFIX}_planted`);
    }
  });

  it('(c) catch a lease left pending', async () => {
    const id = received[0]!.id;
    await adminQuery(storeDb, `UPDATE credbroker_leases SET state = 'pending', next_attempt_at = now() WHERE id = $1`, [
      id,
    ]);
    try {
      expect(await found()).toEqual({ stuck: [`${id}: pending`] });
    } finally {
      await adminQuery(
        storeDb,
        `UPDATE credbroker_leases SET state = 'revoked', next_attempt_at = NULL WHERE id = $1`,
        [id],
      );
    }
  });

  it('(d) catch a role that outlived its lease past the bound', async () => {
    const id = received[0]!.id;
    const [{ revoked_at }] = await adminQuery(storeDb, `SELECT revoked_at FROM credbroker_leases WHERE id = $1`, [id]);
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET revoked_at = expires_at + interval '9 seconds' WHERE id = $1`,
      [id],
    );
    try {
      expect(await found()).toEqual({ late: [`${id}: 9000 ms`] });
    } finally {
      await adminQuery(storeDb, `UPDATE credbroker_leases SET revoked_at = $2 WHERE id = $1`, [id, revoked_at]);
    }
  });

  it('(e) catch a role dropped twice, and a revoked role whose drop never committed', async () => {
    const { username } = statementsLease();
    await adminQuery(targetDb, `INSERT INTO ${LOG_TABLE} (name) VALUES ($1)`, [username]);
    try {
      expect(await found()).toEqual({ doubleDrops: [username] });
    } finally {
      await adminQuery(targetDb, `DELETE FROM ${LOG_TABLE} WHERE name = $1`, [username]);
    }
    // Both rows are gone now: the lease is revoked, but its revocation statements never ran.
    try {
      expect(await found()).toEqual({ undropped: [statementsLease().id] });
    } finally {
      await adminQuery(targetDb, `INSERT INTO ${LOG_TABLE} (name) VALUES ($1)`, [username]);
    }
  });

  it('(f) catch a torn last line, a garbled line, and a reaper revocation without its event', async () => {
    const whole = readFileSync(auditFile, 'utf8');
    try {
      appendFileSync(auditFile, '{"type":"event","operation":"revo');
      expect(Object.keys(await found())).toEqual(['tornAuditLines']);
      writeFileSync(auditFile, `${whole}not json\n`);
      expect(Object.keys(await found())).toEqual(['tornAuditLines']);
      const { id } = received[1]!;
      writeFileSync(
        auditFile,
        whole
          .split('\n')
          .filter((line) => !line.includes(id))
          .join('\n'),
      );
      expect(await found()).toEqual({ unaudited: [id] });
    } finally {
      writeFileSync(auditFile, whole);
    }
  });

  it('(a) catch a lease the store ends before the client was told, and a dropped lease row', async () => {
    const early = { ...received[0]!, toldExpiresAt: received[0]!.toldExpiresAt + 5000 };
    expect(await found({ received: [early, ...received.slice(1)] })).toEqual({ endsEarly: [early.id] });
    // Last: the row is gone for good.
    const { id } = received.find((l) => l.form === 'member_of')!;
    await adminQuery(storeDb, `DELETE FROM credbroker_leases WHERE id = $1`, [id]);
    expect(await found()).toEqual({ lost: [id] });
  });
});
