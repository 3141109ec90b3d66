import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { randomLeaseSuffix } from '../../src/random.js';
import { startTestBroker, testConfig, type TestBrokerOptions } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, randomName } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

const PREFIX = 'takeover';
const LEASES = 64;
const FIXTURE = fileURLToPath(new URL('./fixtures/reap-slowly.mjs', import.meta.url));
const DIST_BROKER = fileURLToPath(new URL('../../dist/src/broker.js', import.meta.url));

let storeDb: string;
let options: TestBrokerOptions;
const children = new Set<ChildProcess>();
const brokers: Broker[] = [];

beforeAll(async () => {
  if (!existsSync(DIST_BROKER)) throw new Error(`${DIST_BROKER} is missing: run \`npx tsc -p .\` before these tests`);
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('takeover');
  options = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
    mount: { max_open_connections: 4 },
    // Default claim settings: what is under test is what an operator gets out of the box.
    reaper: { concurrency: 4 },
  };
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const broker of brokers) await broker.close();
  await dropRolesWithPrefix(PREFIX);
});

/** Real login roles and an expired, active lease row for each, as a broker leaves them. */
async function seedExpiredLeases(count: number): Promise<string[]> {
  const group = `${PREFIX}_readers`;
  const usernames = Array.from({ length: count }, () => `${PREFIX}_reader_${randomName(16)}`);
  const ids = usernames.map(() => `db/creds/reader/${randomLeaseSuffix()}`);
  await adminQuery(
    'postgres',
    usernames
      .map((u) => `CREATE ROLE ${pg.escapeIdentifier(u)} LOGIN IN ROLE ${pg.escapeIdentifier(group)};`)
      .join('\n'),
  );
  await adminQuery(
    storeDb,
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester, issued_at, expires_at, max_expires_at, next_attempt_at)
     SELECT id, 'db', 'reader', 'postgres', 'active', jsonb_build_object('username', username), 'seed',
            now() - interval '1 hour', now() - interval '1 s', now() + interval '1 hour', now() - interval '1 s'
       FROM unnest($1::text[], $2::text[]) AS s(id, username)`,
    [ids, usernames],
  );
  return usernames;
}

async function rolesLeft(usernames: string[]): Promise<number> {
  const [{ n }] = await adminQuery('postgres', 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ANY($1)', [
    usernames,
  ]);
  return n;
}

async function startSlowReaper(slotDelayMs: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [FIXTURE], {
    env: {
      ...process.env,
      FIXTURE_CONFIG: JSON.stringify(testConfig(options)),
      FIXTURE_SLOT_DELAY_MS: String(slotDelayMs),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`slow reaper not READY within 15 s; stderr: ${stderr}`)), 15_000);
    child.stdout!.on('data', (chunk) => {
      if (!String(chunk).includes('READY')) return;
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => reject(new Error(`slow reaper exited (${code}) before READY; stderr: ${stderr}`)));
  });
  return child;
}

async function untilMidBatch(usernames: string[]): Promise<void> {
  await waitUntil(
    async () => {
      const left = await rolesLeft(usernames);
      return left < usernames.length && left > usernames.length / 2;
    },
    {
      timeoutMs: 10_000,
      intervalMs: 25,
      what: `the slow reaper to get mid-batch (between all and half of ${usernames.length} roles left)`,
    },
  );
}

describe('a reaper process killed with SIGKILL in the middle of a batch', () => {
  it('has its leases revoked by another replica within 5 s', async () => {
    const usernames = await seedExpiredLeases(LEASES);
    const child = await startSlowReaper(200);

    // Kill it once it has claimed everything and dropped part of it: mid-batch.
    await untilMidBatch(usernames);
    const [{ claimed }] = await adminQuery(
      storeDb,
      `SELECT count(*)::int AS claimed FROM credbroker_leases WHERE state = 'revoking'`,
    );
    expect(claimed).toBeGreaterThan(0);
    const exited = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    children.delete(child);
    const killedAt = Date.now();
    const leftAtKill = await rolesLeft(usernames);
    expect(leftAtKill).toBeGreaterThan(0);

    // Another replica, reaping as often as it likes: it may only take what the dead one's claims release.
    const survivor = await startTestBroker(options);
    brokers.push(survivor);
    await waitUntil(
      async () => {
        if ((await rolesLeft(usernames)) === 0) return true;
        await survivor.reaper.reapOnce();
        return false;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'the survivor to revoke every role of the killed reaper' },
    );
    const tookMs = Date.now() - killedAt;

    expect(tookMs, `took ${tookMs} ms after the kill (${leftAtKill} roles were left)`).toBeLessThan(5_000);
    const states = await adminQuery(storeDb, 'SELECT state, count(*)::int AS n FROM credbroker_leases GROUP BY 1');
    expect(states).toEqual([{ state: 'revoked', n: LEASES }]);
  });
});

describe('a live reaper whose batch outlasts the claim TTL', () => {
  it('keeps its claims: no other replica takes its leases while it works', async () => {
    const usernames = await seedExpiredLeases(LEASES);
    // 64 leases, 4 at a time, 400 ms each: ~6.4 s of work, twice the default claim TTL (3 s).
    const child = await startSlowReaper(400);
    await untilMidBatch(usernames);
    const startedAt = Date.now();

    const survivor = await startTestBroker(options);
    brokers.push(survivor);
    let survivorClaimed = 0;
    await waitUntil(
      async () => {
        if ((await rolesLeft(usernames)) === 0) return true;
        survivorClaimed += (await survivor.reaper.reapOnce()).claimed;
        return false;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: 'every role to be revoked' },
    );

    expect(survivorClaimed).toBe(0);
    expect(Date.now() - startedAt).toBeGreaterThan(3_000); // the claims did have to be renewed
    expect(child.exitCode).toBeNull();
  });
});
