import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema, type BrokerConfig } from '../../src/config/schema.js';
import { randomSecret } from '../../src/random.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/store/embedded-postgres.js';
import { ROOT_TOKEN } from '../support/broker.js';
import { startBrokerProcess } from '../support/broker-process.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';
import { killAndWait, sleep } from '../support/reliability.js';
import { kubernetesPubkeyAuth } from '../support/kubernetes-login.js';
import { waitUntil } from '../support/wait.js';

/**
 * Issue 14's must-show: one identity's 10,000 leases across two mounts revoked by one job. Midway
 * the second mount's target (its own PostgreSQL server) is stopped, and later the broker running
 * the job is killed with SIGKILL and started again. The job must finish on the restarted broker,
 * count every lease once, list as failed exactly the leases whose roles the stopped target still
 * has, and the reaper must revoke those once the target is back. Another identity's leases stay.
 */
const N = 10_000;
const BYSTANDER = 100;
const A = 'rj10a';
const B = 'rj10b';

const dataDir = join(tmpdir(), `credbroker-rj10-${randomSecret().slice(0, 10)}`);
const password = randomSecret();
let serverB: EmbeddedServer | null = null;
let portB: number;
let storeDb: string;
let config: BrokerConfig;
let auditDir: string;
const children = new Set<ChildProcess>();

const queryB = async <R extends pg.QueryResultRow = any>(sql: string, params: unknown[] = []): Promise<R[]> => {
  const client = new pg.Client({ connectionString: serverB!.url('postgres') });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
};

let k8s: Awaited<ReturnType<typeof kubernetesPubkeyAuth>>;

beforeAll(async () => {
  serverB = await startEmbeddedPostgres({ dataDir, password, persistent: true });
  portB = serverB.port;
  await queryB(`CREATE ROLE ${B}_readers NOLOGIN`);
  const targetA = await freshTargetDatabase(A);
  storeDb = await freshStoreDatabase('rj10');
  auditDir = await mkdtemp(join(tmpdir(), 'credbroker-rj10-audit-'));
  k8s = await kubernetesPubkeyAuth(['etl']);
  config = configSchema.parse({
    listen: { address: '127.0.0.1', port: 0 },
    store: { url: pgUrl(storeDb), max_connections: 20 },
    root_token: ROOT_TOKEN,
    log_level: 'silent',
    engine_timeout: 5,
    // Failures retry quickly and never run out while the target is down for a few seconds.
    reaper: { pending_grace: 30, backoff_base: 1, backoff_max: 2, max_attempts: 100, claim_ttl: 10 },
    audit: { hmac_key: 'rj10-audit-hmac-key-0123456789abcdef', file: { path: join(auditDir, 'audit.log') } },
    auth: k8s.auth,
    policies: { etl: [{ path: '+/creds/*', capabilities: ['read', 'update'] }] },
    mounts: {
      a: {
        type: 'postgres',
        connection_url: pgUrl(targetA.database),
        username_prefix: A,
        roles: { reader: { member_of: [targetA.group], default_ttl: 3600 } },
      },
      b: {
        type: 'postgres',
        connection_url: serverB.url('postgres'),
        username_prefix: B,
        roles: { reader: { member_of: [`${B}_readers`], default_ttl: 3600 } },
      },
    },
  });
}, 60_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await serverB?.stop();
  await rm(dataDir, { recursive: true, force: true });
  await rm(auditDir, { recursive: true, force: true });
  await dropRolesWithPrefix(A);
}, 120_000);

const login = (url: string, namespace: string, name: string) => k8s.login(url, namespace, name);

/** `count` leases on `path` at concurrency 16; answers their ids and usernames. */
async function issueMany(url: string, token: string, path: string, count: number) {
  const out: { id: string; username: string }[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < count) {
        next++;
        const res = await fetch(`${url}/v1/${path}`, { method: 'PUT', headers: { 'X-Vault-Token': token } });
        const body = (await res.json()) as any;
        if (res.status !== 200) throw new Error(`issue ${res.status}: ${JSON.stringify(body)}`);
        out.push({ id: body.lease_id, username: body.data.username });
      }
    }),
  );
  return out;
}

const rolesOnB = async (prefix: string) =>
  new Set(
    (
      await queryB<{ rolname: string }>(
        `SELECT rolname FROM pg_roles WHERE rolname LIKE $1 AND rolname NOT LIKE '%\\_readers'`,
        [`${prefix}\\_%`],
      )
    ).map((r) => r.rolname),
  );

describe('a 10,000-lease incident revocation across two mounts, a target outage and a broker kill', () => {
  it('finishes, reports progress, lists exactly the failed leases, and the reaper revokes them later', async () => {
    let broker = await startBrokerProcess({ config }, children, { reaper: true });
    const loader = await login(broker.url, 'etl', 'loader');
    const site = await login(broker.url, 'web', 'site');
    const issueStarted = Date.now();
    const leasesA = await issueMany(broker.url, loader, 'a/creds/reader', N / 2);
    const leasesB = await issueMany(broker.url, loader, 'b/creds/reader', N / 2);
    const bystanders = [
      ...(await issueMany(broker.url, site, 'a/creds/reader', BYSTANDER / 2)),
      ...(await issueMany(broker.url, site, 'b/creds/reader', BYSTANDER / 2)),
    ];
    const issueSeconds = (Date.now() - issueStarted) / 1000;
    const byUsername = new Map([...leasesA, ...leasesB].map((l) => [l.username, l.id]));

    const headers = { 'X-Vault-Token': ROOT_TOKEN };
    const jobStarted = Date.now();
    const start = await fetch(`${broker.url}/v1/sys/broker/revoke`, {
      method: 'PUT',
      headers,
      body: JSON.stringify({ identity: 'system:serviceaccount:etl:loader', mount: ['a', 'b'], reason: 'must-show' }),
    });
    const started = (await start.json()) as any;
    expect(start.status, JSON.stringify(started)).toBe(202);
    expect(started.data.total).toBe(N);
    const jobId: string = started.data.id;

    const show = async (url: string) => {
      const res = await fetch(`${url}/v1/sys/broker/jobs/${jobId}`, { headers });
      return ((await res.json()) as any).data;
    };
    const progress: { done: number; failed: number; state: string }[] = [];
    const watchUntil = async (url: string, done: (job: any) => boolean) =>
      waitUntil(
        async () => {
          const job = await show(url).catch(() => null);
          if (job) progress.push({ done: job.revoked + job.failed, failed: job.failed, state: job.state });
          return job && done(job) ? job : null;
        },
        { timeoutMs: 240_000, what: 'the job to move on', intervalMs: 100 },
      );

    // Midway, the second target goes away.
    // (Pages go in lease id order, so mount a's leases come first: at 60 % a fifth of b's are revoked.)
    await watchUntil(broker.url, (j) => j.revoked + j.failed >= N * 0.6);
    await serverB!.stop();
    const outageStarted = Date.now();
    // Later, the broker running the job is killed, and started again.
    await watchUntil(broker.url, (j) => j.revoked + j.failed >= N * 0.8);
    const killedAt = progress[progress.length - 1]!.done;
    await killAndWait(broker.child);
    broker = await startBrokerProcess({ config }, children, { reaper: true });
    const job = await watchUntil(broker.url, (j) => j.state === 'done');
    const jobSeconds = (Date.now() - jobStarted) / 1000;

    // Progress was visible while it ran.
    expect(progress.some((p) => p.state === 'running' && p.done > 0 && p.done < N)).toBe(true);
    // Every lease counted once: the counts add up to the selection, whatever the kill interrupted.
    expect(job.total).toBe(N);
    expect(job.revoked + job.failed).toBe(N);
    expect(job.remaining).toBe(0);
    const jobRows = await adminQuery(
      storeDb,
      `SELECT outcome, count(*)::int AS n FROM credbroker_job_leases WHERE job_id = $1 GROUP BY outcome ORDER BY outcome`,
      [jobId],
    );
    expect(jobRows).toEqual([
      { outcome: 'failed', n: job.failed },
      { outcome: 'revoked', n: job.revoked },
    ]);
    expect(job.failed).toBeGreaterThan(0);
    // Some of b's leases were revoked before its target stopped.
    expect(job.failed).toBeLessThan(N / 2);

    // Every failure listed (paging the report), and only leases of the stopped target.
    const failed = new Set<string>();
    for (let after = ''; ;) {
      const res = await fetch(`${broker.url}/v1/sys/broker/jobs/${jobId}?failures_after=${encodeURIComponent(after)}`, {
        headers,
      });
      const page = ((await res.json()) as any).data;
      for (const f of page.failures) {
        failed.add(f.lease_id);
        expect(f.error).toMatch(/cannot connect to the target|ECONNREFUSED|shutting down|terminat|Connection/i);
      }
      if (!page.failures_truncated) break;
      after = page.failures[page.failures.length - 1].lease_id;
    }
    expect(failed.size).toBe(job.failed);
    for (const id of failed) expect(id.startsWith('b/creds/reader/')).toBe(true);
    // Mount a lost nothing: every one of its roles is gone.
    const leftOnA = await adminQuery(
      'postgres',
      `SELECT count(*)::int AS n FROM pg_roles WHERE rolname LIKE $1 AND rolname NOT LIKE '%\\_readers'`,
      [`${A}\\_%`],
    );
    expect(leftOnA[0].n).toBe(BYSTANDER / 2);

    // The target returns: its roles are exactly the failed leases' (and the bystanders').
    serverB = await startEmbeddedPostgres({ dataDir, password, persistent: true, port: portB });
    const outageSeconds = (Date.now() - outageStarted) / 1000;
    const present = await rolesOnB(B);
    const bystanderNames = new Set(bystanders.map((l) => l.username));
    const presentOfJob = [...present].filter((r) => !bystanderNames.has(r)).map((r) => byUsername.get(r));
    // The reaper may already have revoked a few since the server came up: those are gone from both.
    for (const id of presentOfJob) expect(failed.has(id!)).toBe(true);
    expect(presentOfJob.length).toBeGreaterThan(failed.size * 0.5);

    // …and the reaper revokes them, through its backoff, now that the target answers.
    const retryStarted = Date.now();
    await waitUntil(async () => (await rolesOnB(B)).size === BYSTANDER / 2, {
      timeoutMs: 120_000,
      what: 'the reaper to revoke the failed leases',
      intervalMs: 250,
    });
    const retrySeconds = (Date.now() - retryStarted) / 1000;
    const states = await adminQuery(
      storeDb,
      `SELECT state, count(*)::int AS n FROM credbroker_leases WHERE identity->>'name' = 'system:serviceaccount:etl:loader' GROUP BY state`,
    );
    expect(states).toEqual([{ state: 'revoked', n: N }]);
    for (const l of bystanders) {
      const { username } = l;
      expect(present.has(username) || username.startsWith(A)).toBe(true);
    }
    expect(
      (await adminQuery(storeDb, `SELECT count(*)::int AS n FROM credbroker_leases WHERE state = 'active'`))[0].n,
    ).toBe(BYSTANDER);

    // Revoked once: one 'revoked' audit event per lease, except those the kill caught between
    // the target's drop and the store's mark (revoked again, a no-op DROP ROLE IF EXISTS).
    await sleep(500);
    const revokedEvents = new Map<string, number>();
    for (const line of readFileSync(join(auditDir, 'audit.log'), 'utf8').split('\n')) {
      if (!line.includes('"operation":"revoked"')) continue;
      const record = JSON.parse(line);
      revokedEvents.set(record.lease_id, (revokedEvents.get(record.lease_id) ?? 0) + 1);
    }
    const ofJob = [...byUsername.values()];
    const twice = ofJob.filter((id) => (revokedEvents.get(id) ?? 0) > 1).length;
    expect(ofJob.filter((id) => !revokedEvents.has(id))).toEqual([]);
    // At most the batches in flight at the kill (256 per mount at a time).
    expect(twice).toBeLessThanOrEqual(512);

    console.log(
      `revoke job 10k: issue ${issueSeconds.toFixed(1)} s; job ${jobSeconds.toFixed(1)} s end to end (store's count: ${job.elapsed_seconds} s) ` +
        `for ${N} leases on 2 mounts, with target b down ${outageSeconds.toFixed(1)} s from 60% and a SIGKILL + restart at ${killedAt}; ` +
        `${job.revoked} revoked, ${job.failed} failed (all on b); the reaper revoked those ${retrySeconds.toFixed(1)} s after b returned; ` +
        `${twice} leases audited as revoked twice (in flight at the kill)`,
    );
  }, 600_000);
});
