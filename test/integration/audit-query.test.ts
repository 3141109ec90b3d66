import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditQueryStatement } from '../../src/audit/audit-query.js';
import type { Broker } from '../../src/broker.js';
import { randomSecret } from '../../src/random.js';
import { runCli } from '../support/cli.js';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'audq';
const READER = 'system:serviceaccount:etl:reader';
const LOADER = 'system:serviceaccount:etl:loader';

let cluster: JwksServer;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
let storeDb: string;
let broker: Broker;
/** The same store, no postgres audit sink. */
let bare: Broker;

const seen = {
  start: new Date(),
  /** Between the reader's lease and the loader's. */
  mid: new Date(),
  reader: { token: '', leaseId: '', username: '' },
  loader: { token: '', leaseId: '', username: '' },
};

const brokerOptions = (db: string, audit: Record<string, unknown> | undefined) => ({
  storeDatabase: db,
  targetDatabase: target.database,
  prefix: PREFIX,
  roles: {
    reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
    writer: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
  },
  auth: { kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['etl']) }) },
  policies: {
    etl: [
      { path: 'db/creds/reader', capabilities: ['read', 'update'] },
      { path: 'db/creds/writer', capabilities: ['deny'] },
    ],
  },
  audit,
});

type AuditRows = { id: string; time: string; type: string; identity: any; lease_id: string | null; [k: string]: any }[];

async function query(params: Record<string, string>, token = ROOT_TOKEN) {
  const res = await fetch(`${broker.url}/v1/sys/broker/audit?${new URLSearchParams(params)}`, {
    headers: { 'x-vault-token': token },
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function records(params: Record<string, string>): Promise<AuditRows> {
  const res = await query({ limit: '1000', ...params });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  expect(res.body.data.next).toBeNull();
  return res.body.data.records;
}

const cli = (args: string[]) =>
  runCli(['audit', 'query', ...args], {
    env: { ...process.env, CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: ROOT_TOKEN },
  });

async function leaseAs(serviceAccount: string) {
  const jwt = await cluster.sign(kubernetesClaims({ serviceAccount }));
  const login = await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt }, null);
  expect(login.status, JSON.stringify(login.body)).toBe(200);
  const token = login.body.auth.client_token as string;
  const creds = await api(broker, 'PUT', 'db/creds/reader', {}, token);
  expect(creds.status, JSON.stringify(creds.body)).toBe(200);
  return { token, leaseId: creds.body.lease_id as string, username: creds.body.data.username as string };
}

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('audq');
  broker = await startTestBroker(brokerOptions(storeDb, { hmac_key: `audit-key-${randomSecret()}`, postgres: true }));
  bare = await startTestBroker(brokerOptions(storeDb, undefined));

  seen.start = new Date(Date.now() - 1000);
  seen.reader = await leaseAs('reader');
  expect(
    (await api(broker, 'PUT', 'sys/leases/renew', { lease_id: seen.reader.leaseId }, seen.reader.token)).status,
  ).toBe(200);
  expect((await api(broker, 'PUT', 'db/creds/writer', {}, seen.reader.token)).status).toBe(403);
  // Records of the two halves must not share a millisecond with `mid`.
  await new Promise((r) => setTimeout(r, 20));
  seen.mid = new Date();
  await new Promise((r) => setTimeout(r, 20));
  seen.loader = await leaseAs('loader');
  expect(
    (await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: seen.loader.leaseId }, seen.loader.token)).status,
  ).toBe(204);
}, 60_000);

afterAll(async () => {
  await broker?.close();
  await bare?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
});

describe('credbroker audit query', () => {
  it('--username <the pg user> names the identity that leased it and the lease, and nothing of the other lease', async () => {
    const table = await cli(['--username', seen.reader.username]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toContain(READER);
    expect(table.stdout).toContain(seen.reader.leaseId);
    expect(table.stdout).not.toContain(LOADER);
    expect(table.stdout).not.toContain(seen.loader.leaseId);

    const json = await cli(['--username', seen.reader.username, '--json']);
    expect(json.code, json.stderr).toBe(0);
    const lines = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    // The issue's response and the renewal's, at least: who had it, and that they kept it.
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const r of lines) expect(r.lease_id).toBe(seen.reader.leaseId);
    const issue = lines.find((r) => r.type === 'response' && r.path === 'db/creds/reader');
    expect(issue.identity).toMatchObject({ name: READER, auth_mount: 'kubernetes', metadata: { namespace: 'etl' } });
    expect(issue.data.data.username).toBe(seen.reader.username);
  });

  it('a username nobody leased matches nothing; any username is only ever a parameter', async () => {
    for (const username of [`${PREFIX}_nobody`, `x' OR '1'='1`, '%', '']) {
      const res = await query({ username });
      if (username === '') expect(res.status).toBe(400);
      else expect(res.body.data.records, username).toEqual([]);
    }
  });

  it('--outcome denied finds the denied request of that identity, and only denied records', async () => {
    const denied = await records({ outcome: 'denied', identity: READER });
    expect(denied.length).toBeGreaterThan(0);
    expect(denied.every((r) => r.outcome === 'denied' && r.identity.name === READER)).toBe(true);
    expect(denied.some((r) => r.path === 'db/creds/writer')).toBe(true);
    const ok = await records({ outcome: 'ok', identity: READER });
    expect(ok.some((r) => r.path === 'db/creds/writer')).toBe(false);
  });

  it('--since/--until cut the window at a time, and --path selects by prefix', async () => {
    const before = await records({ path: 'db/creds/', since: seen.start.toISOString(), until: seen.mid.toISOString() });
    const after = await records({ path: 'db/creds/', since: seen.mid.toISOString() });
    expect(before.length).toBeGreaterThan(0);
    expect(after.length).toBeGreaterThan(0);
    expect(before.every((r) => r.identity.name === READER && r.path.startsWith('db/creds/'))).toBe(true);
    expect(after.every((r) => r.identity.name === LOADER && r.path.startsWith('db/creds/'))).toBe(true);
    expect(after.some((r) => r.lease_id === seen.loader.leaseId)).toBe(true);
    // Relative: everything here happened within the last hour, nothing before tomorrow's start.
    // Each query is audited too: compare within a window closed before either.
    const until = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 10));
    expect((await records({ since: '1h', until })).length).toBe((await records({ until })).length);
    const cliWindow = await cli(['--since', '1h', '--until', seen.mid.toISOString(), '--path', 'db/creds/', '--json']);
    expect(cliWindow.code, cliWindow.stderr).toBe(0);
    expect(cliWindow.stdout.trim().split('\n').length).toBe(before.length);
  });

  it('paging returns every record exactly once, in (time, id) order, even among records sharing one time', async () => {
    await adminQuery(
      storeDb,
      `INSERT INTO credbroker_audit (time, type, request_id, path, outcome)
       SELECT now(), 'event', 'same-time-' || g, 'sys/same-time', 'ok' FROM generate_series(1, 7) g`,
    );
    // Each page's request is audited too: page through a window closed before the first.
    const until = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 10));
    const all = await records({ until });
    const paged: AuditRows = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const res = await query({ limit: '3', until, ...(after ? { after } : {}) });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      paged.push(...res.body.data.records);
      after = res.body.data.next;
      if (++pages > 1000) throw new Error('paging never ended');
    } while (after);
    expect(paged.map((r) => r.id)).toEqual(all.map((r) => r.id));
    expect(new Set(paged.map((r) => r.id)).size).toBe(paged.length);
    expect(all.filter((r) => r.path === 'sys/same-time')).toHaveLength(7);

    const limited = await cli(['--limit', '4', '--json']);
    expect(limited.code, limited.stderr).toBe(0);
    expect(
      limited.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).id),
    ).toEqual(all.slice(0, 4).map((r) => r.id));
  });

  it('refuses a bad since/until, outcome, limit or cursor with a 400 naming it', async () => {
    for (const [params, name] of [
      [{ since: 'yesterday' }, 'since'],
      [{ until: '2026-13-01' }, 'until'],
      [{ outcome: 'maybe' }, 'outcome'],
      [{ limit: '1001' }, 'limit'],
      [{ limit: 'ten' }, 'limit'],
      [{ after: 'x' }, 'after'],
      [{ idnetity: READER }, 'idnetity'],
    ] as const) {
      const res = await query(params);
      expect(res.status, JSON.stringify(params)).toBe(400);
      expect(res.body.errors.join(' '), JSON.stringify(params)).toContain(name);
    }
    const bad = await cli(['--since', 'yesterday']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--since');
  });

  it('needs sudo on sys/broker/audit, and a broker without the postgres sink says it needs one', async () => {
    expect((await query({}, seen.reader.token)).status).toBe(403);
    const res = await fetch(`${bare.url}/v1/sys/broker/audit`, { headers: { 'x-vault-token': ROOT_TOKEN } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).errors.join(' ')).toMatch(/postgres audit sink/);
  });

  it('--help shows the username example', async () => {
    const help = await runCli(['audit', 'query', '--help']);
    expect(help.stdout).toContain('which pipeline had cb_etl_reader_x7');
    expect(help.stdout).toContain('--username');
  });
});

describe('at 1,000,000 audit rows', () => {
  beforeAll(async () => {
    // Varied like a real trail: a thousand identities, a fifth of the rows issue responses with a username.
    await adminQuery(
      storeDb,
      `INSERT INTO credbroker_audit (time, type, request_id, identity, path, lease_id, outcome, status, data)
       SELECT now() - g * interval '1 second',
              CASE WHEN g % 5 = 0 THEN 'response' ELSE 'request' END,
              'bulk-' || g,
              jsonb_build_object('name', 'bulk-identity-' || (g % 1000), 'auth_mount', 'kubernetes'),
              'db/creds/reader',
              CASE WHEN g % 5 = 0 THEN 'db/creds/reader/bulk' || g END,
              'ok', 200,
              CASE WHEN g % 5 = 0 THEN jsonb_build_object('data', jsonb_build_object('username', 'bulk_user_' || g)) END
         FROM generate_series(1, 1000000) g`,
    );
    await adminQuery(storeDb, 'ANALYZE credbroker_audit');
  }, 300_000);

  /** The plan of the statement the API runs, executed (ANALYZE) so its time is printed for the record. */
  const plan = async (filter: Parameters<typeof auditQueryStatement>[0]) => {
    const { text, values } = auditQueryStatement(filter);
    const rows = await adminQuery<{ 'QUERY PLAN': string }>(storeDb, `EXPLAIN (ANALYZE) ${text}`, values);
    const lines = rows.map((r) => r['QUERY PLAN']);
    console.info(`audit query ${JSON.stringify(filter)} at 1M rows: ${lines.find((l) => l.startsWith('Execution'))}`);
    return lines.join('\n');
  };

  it('the username query goes through the username index, then the lease index; no Seq Scan', async () => {
    const text = await plan({ username: seen.reader.username });
    expect(text).toMatch(/Index Scan .*credbroker_audit_lease_id|Bitmap Index Scan on credbroker_audit_lease_id/);
    expect(text).toMatch(
      /Index (Only )?Scan .*credbroker_audit_username|Bitmap Index Scan on credbroker_audit_username/,
    );
    expect(text).not.toMatch(/Seq Scan/);
  });

  it('the identity query goes through the identity index; no Seq Scan', async () => {
    for (const identity of [READER, 'bulk-identity-7']) {
      const text = await plan({ identity });
      expect(text, identity).toMatch(
        /Index Scan .*credbroker_audit_identity_time|Bitmap Index Scan on credbroker_audit_identity_time/,
      );
      expect(text, identity).not.toMatch(/Seq Scan/);
    }
  });

  it('and `audit query --username` still names the identity that leased it', async () => {
    const res = await cli(['--username', seen.reader.username, '--json']);
    expect(res.code, res.stderr).toBe(0);
    const lines = res.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.find((r) => r.type === 'response' && r.path === 'db/creds/reader').identity.name).toBe(READER);
  });
});
