import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomLeaseSuffix } from '../../src/random.js';
import { testConfig } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, randomName } from '../support/pg.js';

const PREFIX = 'tworeap';
const LEASES = 500;
const FIXTURE = fileURLToPath(new URL('./fixtures/reap-until-empty.mjs', import.meta.url));
const DIST_BROKER = fileURLToPath(new URL('../../dist/src/broker.js', import.meta.url));

interface ReaperReport {
  revoked: string[];
  failed: string[];
  batches: number;
}

let storeDb: string;
let targetDb: string;
let group: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  if (!existsSync(DIST_BROKER)) throw new Error(`${DIST_BROKER} is missing: run \`npx tsc -p .\` before these tests`);
  const target = await freshTargetDatabase(PREFIX);
  targetDb = target.database;
  group = target.group;
  storeDb = await freshStoreDatabase('tworeap');
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await dropRolesWithPrefix(PREFIX);
});

/** Real login roles on the target and an expired, active lease row for each, as a broker leaves them. */
async function seedExpiredLeases(count: number): Promise<{ ids: string[]; usernames: string[] }> {
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
  return { ids, usernames };
}

/** Starts a reaper process on the shared store; resolves once it is connected and waiting for "go". */
async function startReaperProcess(config: unknown): Promise<{ child: ChildProcess; report: Promise<ReaperReport> }> {
  const child = spawn(process.execPath, [FIXTURE], {
    env: { ...process.env, FIXTURE_CONFIG: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  child.stdout!.on('data', (chunk) => (stdout += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`reaper process not READY within 15 s; stderr: ${stderr}`)),
      15_000,
    );
    const check = () => {
      if (!stdout.startsWith('READY\n')) return;
      clearTimeout(timer);
      child.stdout!.off('data', check);
      resolve();
    };
    child.stdout!.on('data', check);
    void exited.then((code) => reject(new Error(`reaper process exited (${code}) before READY; stderr: ${stderr}`)));
  });
  const report = exited.then((code) => {
    children.delete(child);
    if (code !== 0) throw new Error(`reaper process exited with ${code}; stderr: ${stderr}`);
    return JSON.parse(stdout.slice('READY\n'.length)) as ReaperReport;
  });
  return { child, report };
}

describe('two reaper processes over one lease table', () => {
  it('revoke every one of 500 due leases, each by exactly one process, and drop every role', async () => {
    const { ids, usernames } = await seedExpiredLeases(LEASES);
    expect(
      (await adminQuery('postgres', 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ANY($1)', [usernames]))[0]
        .n,
    ).toBe(LEASES);

    // Small batches, so the two processes claim in many rounds and contend for the same due rows.
    const config = testConfig({
      storeDatabase: storeDb,
      targetDatabase: targetDb,
      prefix: PREFIX,
      roles: { reader: { member_of: [group] } },
      mount: { max_open_connections: 8 },
      reaper: { batch_size: 20, concurrency: 8 },
    });
    const reapers = await Promise.all([startReaperProcess(config), startReaperProcess(config)]);
    for (const { child } of reapers) child.stdin!.end('go\n');
    const [a, b] = await Promise.all(reapers.map((r) => r.report));

    // Disjoint claims: no lease was taken (and its role dropped) by both processes.
    const claimedByA = [...a!.revoked, ...a!.failed];
    const claimedByB = new Set([...b!.revoked, ...b!.failed]);
    expect(claimedByA.filter((id) => claimedByB.has(id))).toEqual([]);
    expect(a!.failed).toEqual([]);
    expect(b!.failed).toEqual([]);
    const byA = new Set(a!.revoked);
    const byB = new Set(b!.revoked);
    expect(byA.size).toBe(a!.revoked.length); // no lease revoked twice by one process either
    expect(byB.size).toBe(b!.revoked.length);
    expect(new Set([...byA, ...byB])).toEqual(new Set(ids));

    const states = await adminQuery(
      storeDb,
      'SELECT state, revoke_reason, count(*)::int AS n FROM credbroker_leases GROUP BY 1, 2',
    );
    expect(states).toEqual([{ state: 'revoked', revoke_reason: 'expired', n: LEASES }]);
    const left = await adminQuery('postgres', 'SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [usernames]);
    expect(left).toEqual([]);

    // Both should have done part of the work; if one process was simply faster to start, say so
    // rather than fail: the disjointness above is what proves no role was dropped twice.
    if (byA.size === 0 || byB.size === 0)
      console.warn(`two-reapers: one process did all the work (${byA.size} / ${byB.size})`);
  });
});
