import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { api, startTestBroker, testConfig, type TestBrokerOptions } from '../support/broker.js';
import { withWrappedTarget } from '../support/wrap-engine.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

const PREFIX = 'crashrec';
const FIXTURE = fileURLToPath(new URL('./fixtures/issue-then-hang.mjs', import.meta.url));
const DIST_BROKER = fileURLToPath(new URL('../../dist/src/broker.js', import.meta.url));

let storeDb: string;
let brokerOptions: TestBrokerOptions;
const children = new Set<ChildProcess>();
const brokers: Broker[] = [];

beforeAll(async () => {
  if (!existsSync(DIST_BROKER)) throw new Error(`${DIST_BROKER} is missing: run \`npx tsc -p .\` before these tests`);
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('crash');
  brokerOptions = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
    // Far longer than the test needs between the child's line and its SIGKILL: the child's own
    // engine timeout must never fire and clean up the issue we are freezing.
    engineTimeout: 20,
    reaper: { pending_grace: 30 },
  };
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const broker of brokers) await broker.close();
  await dropRolesWithPrefix(PREFIX);
});

async function startBroker(engines?: TestBrokerOptions['engines']): Promise<Broker> {
  const broker = await startTestBroker({ ...brokerOptions, engines });
  brokers.push(broker);
  return broker;
}

async function leaseRow(id: string) {
  const [row] = await adminQuery(storeDb, 'SELECT * FROM credbroker_leases WHERE id = $1', [id]);
  return row;
}

/** Starts a broker process that freezes its one issue at `mode`; resolves with the line it prints there. */
async function issueThenHang(
  mode: 'before-issue' | 'after-issue',
): Promise<{ child: ChildProcess; leaseId: string; username: string }> {
  const child = spawn(process.execPath, [FIXTURE], {
    env: { ...process.env, FIXTURE_MODE: mode, FIXTURE_CONFIG: JSON.stringify(testConfig(brokerOptions)) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const expected = mode === 'before-issue' ? 'PENDING' : 'ISSUED';
  const line = await new Promise<string>((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(
      () => reject(new Error(`no ${expected} line from the fixture within 20 s; stderr: ${stderr}`)),
      20_000,
    );
    child.stdout!.on('data', (chunk) => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline === -1) return;
      clearTimeout(timer);
      resolve(stdout.slice(0, newline));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the fixture exited (${code}) before printing ${expected}; stderr: ${stderr}`));
    });
  });
  const [word, leaseId, username] = line.split(' ');
  if (word !== expected || !leaseId || !username)
    throw new Error(`the fixture printed "${line}", expected "${expected} <leaseId> <username>"; stderr: ${stderr}`);
  return { child, leaseId, username };
}

async function sigkill(child: ChildProcess): Promise<void> {
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.once('exit', (_code, signal) => resolve(signal)),
  );
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  children.delete(child);
}

describe('a broker process killed with SIGKILL in the middle of an issue', () => {
  it('leaves no role behind once a reaper runs, when killed between the pending row and the engine issue', async () => {
    const { child, leaseId, username } = await issueThenHang('before-issue');
    await sigkill(child);

    expect(await leaseRow(leaseId)).toMatchObject({ state: 'pending', revoke_handle: { username } });
    expect(await roleExists(username)).toBe(false);

    const survivor = await startBroker();
    // Within the pending grace the row is an issue possibly still in flight: not touched.
    expect((await survivor.reaper.reapOnce()).claimed).toBe(0);
    expect((await leaseRow(leaseId)).state).toBe('pending');

    await adminQuery(storeDb, `UPDATE credbroker_leases SET next_attempt_at = now() - interval '1 s' WHERE id = $1`, [
      leaseId,
    ]);
    const reaped = await survivor.reaper.reapOnce();

    expect(reaped.revoked).toEqual([leaseId]);
    expect(await roleExists(username)).toBe(false);
    expect(await leaseRow(leaseId)).toMatchObject({
      state: 'revoked',
      revoke_reason: 'cleanup',
      next_attempt_at: null,
    });
  });

  it('leaves no role behind once a reaper runs, when killed between the engine issue and `active`', async () => {
    const { child, leaseId, username } = await issueThenHang('after-issue');
    await sigkill(child);

    expect(await leaseRow(leaseId)).toMatchObject({ state: 'pending', revoke_handle: { username } });
    expect(await roleExists(username)).toBe(true); // the orphan the reaper must clean up

    const survivor = await startBroker();
    expect((await survivor.reaper.reapOnce()).claimed).toBe(0);
    expect(await roleExists(username)).toBe(true);

    await adminQuery(storeDb, `UPDATE credbroker_leases SET next_attempt_at = now() - interval '1 s' WHERE id = $1`, [
      leaseId,
    ]);
    const reaped = await survivor.reaper.reapOnce();

    expect(reaped.revoked).toEqual([leaseId]);
    expect(await roleExists(username)).toBe(false);
    const row = await leaseRow(leaseId);
    expect(row).toMatchObject({ state: 'revoked', revoke_reason: 'cleanup', next_attempt_at: null });
    expect(row.revoked_at).toBeInstanceOf(Date);
  });
});

describe('an issuer whose pending row was taken by the reaper before it could activate', () => {
  it('revokes the credential it created and answers 502 without the secret', async () => {
    let created: { username: string; password: string } | undefined;
    const engines = withWrappedTarget('postgres', (target) => {
      const realIssue = target.issue.bind(target);
      target.issue = async (req) => {
        const issued = await realIssue(req);
        created = { username: String(issued.data.username), password: String(issued.data.password) };
        // What a reaper does to a pending row it judges crashed: claim it for cleanup.
        await adminQuery(
          storeDb,
          `UPDATE credbroker_leases SET state = 'revoking', revoke_reason = 'cleanup', next_attempt_at = now() + interval '300 s'
            WHERE revoke_handle->>'username' = $1 AND state = 'pending'`,
          [created.username],
        );
        return issued;
      };
    });
    const broker = await startBroker(engines);

    const res = await api(broker, 'GET', 'db/creds/reader');

    expect(created).toBeDefined();
    expect(res.status).toBe(502);
    expect(res.body.errors).toEqual([expect.stringContaining('revoked')]);
    const body = JSON.stringify(res.body);
    expect(body).not.toContain('password');
    expect(body).not.toContain(created!.password);
    expect(res.body).not.toHaveProperty('data');
    expect(await roleExists(created!.username)).toBe(false);
    const [row] = await adminQuery(
      storeDb,
      `SELECT state FROM credbroker_leases WHERE revoke_handle->>'username' = $1`,
      [created!.username],
    );
    expect(row.state).toBe('revoking'); // still the reaper's: it finishes the bookkeeping
  });
});

/** A role whose statements each stay under a 1 s statement timeout but together take ~0.9 s × `sleeps`. */
function slowRole(sleeps: number) {
  return {
    creation_statements: [
      `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE ${PREFIX}_readers`,
      ...Array.from({ length: sleeps }, () => 'SELECT pg_sleep(0.9)'),
    ],
  };
}

/** True while a broker transaction is still open on the target database. */
async function targetWorkInFlight(): Promise<boolean> {
  const rows = await adminQuery(
    brokerOptions.targetDatabase,
    `SELECT 1 FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'credbroker:db' AND state IN ('active', 'idle in transaction')`,
  );
  return rows.length > 0;
}

/** Waits (at most 8 s, then throws) until the timed-out issue's transaction has ended and its row has left 'pending'. */
async function untilIssueWorkEnded(id: string): Promise<void> {
  await waitUntil(async () => !(await targetWorkInFlight()) && (await leaseRow(id)).state !== 'pending', {
    timeoutMs: 8000,
    intervalMs: 100,
    what: "the timed-out issue's transaction to end and its row to leave 'pending'",
  });
}

async function slowLease(): Promise<{ id: string; username: string }> {
  const [lease] = await adminQuery(
    storeDb,
    `SELECT id, revoke_handle->>'username' AS username FROM credbroker_leases WHERE role = 'slow' ORDER BY issued_at DESC LIMIT 1`,
  );
  return lease;
}

describe('an issue whose engine work outlives the engine call', () => {
  it('is cleaned up only once its late work has finished, so a reaper run leaves no role behind', async () => {
    const broker = await startTestBroker({ ...brokerOptions, engineTimeout: 1, roles: { slow: slowRole(2) } });
    brokers.push(broker);

    const res = await api(broker, 'GET', 'db/creds/slow'); // gives up after 1 s; the work goes on ~0.8 s
    expect(res.status).toBe(502);
    expect(JSON.stringify(res.body)).not.toContain('password');
    const { id, username } = await slowLease();

    await broker.reaper.reapOnce(); // a scheduled reaper runs within a second of the failure
    await untilIssueWorkEnded(id);
    await broker.reaper.reapOnce();

    expect(await roleExists(username)).toBe(false);
    expect(await leaseRow(id)).toMatchObject({ state: 'revoked', revoke_reason: 'cleanup' });
  });

  // Each statement is bounded (statement_timeout), but a statement list can run longer than
  // reaper.pending_grace. The live issuer's heartbeat keeps its pending row from the reaper until
  // the work has ended, so the role committed late is still cleaned up.
  it('leaves no role behind when the engine work outlives pending_grace', async () => {
    // A valid config: pending_grace (2 s) > engine_timeout (1 s). The work takes ~3.6 s.
    const broker = await startTestBroker({
      ...brokerOptions,
      engineTimeout: 1,
      reaper: { pending_grace: 2 },
      roles: { slow: slowRole(4) },
    });
    brokers.push(broker);

    const res = await api(broker, 'GET', 'db/creds/slow');
    expect(res.status).toBe(502);
    const { id, username } = await slowLease();

    // A scheduled reaper runs as soon as the row is due (or the work is over, whichever is first).
    await waitUntil(
      async () => {
        const [{ due }] = await adminQuery(
          storeDb,
          'SELECT next_attempt_at <= now() AS due FROM credbroker_leases WHERE id = $1',
          [id],
        );
        return due || !(await targetWorkInFlight());
      },
      { timeoutMs: 6000, intervalMs: 100, what: 'the pending row to fall due or the engine work to end' },
    );
    await broker.reaper.reapOnce();
    await untilIssueWorkEnded(id);
    await broker.reaper.reapOnce();

    expect(await roleExists(username)).toBe(false);
    expect(await leaseRow(id)).toMatchObject({ state: 'revoked' });
  });
});
