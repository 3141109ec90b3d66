import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { ROOT_TOKEN, api } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  pgUrl,
  roleExists,
} from '../support/pg.js';
import { kubernetesPubkeyAuth } from '../support/kubernetes-login.js';
import { waitUntil } from '../support/wait.js';

/**
 * Incident revocation as a job (issue 14): a selector over identity, metadata, mount, role and
 * time picks leases across two mounts; a dry run changes nothing; the job revokes exactly the
 * selected leases on their targets and reports its progress and outcome.
 */
const PREFIX = 'rjob';
let k8s: Awaited<ReturnType<typeof kubernetesPubkeyAuth>>;
let broker: Broker;
let storeDb: string;

interface Issued {
  lease_id: string;
  data: { username: string; password: string; host: string; port: number; database: string };
}

beforeAll(async () => {
  k8s = await kubernetesPubkeyAuth(['etl']);
  const [a, b] = [await freshTargetDatabase(PREFIX), await freshTargetDatabase(`${PREFIX}w`)];
  storeDb = await freshStoreDatabase('rjob');
  const config = configSchema.parse({
    listen: { address: '127.0.0.1', port: 0 },
    store: { url: pgUrl(storeDb) },
    root_token: ROOT_TOKEN,
    log_level: 'silent',
    auth: k8s.auth,
    policies: { etl: [{ path: '+/creds/*', capabilities: ['read', 'update'] }] },
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(a.database),
        username_prefix: PREFIX,
        roles: { reader: { member_of: [a.group] } },
      },
      wh: {
        type: 'postgres',
        connection_url: pgUrl(b.database),
        username_prefix: `${PREFIX}w`,
        roles: { reader: { member_of: [b.group] }, loader: { member_of: [b.group] } },
      },
    },
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
  await dropRolesWithPrefix(`${PREFIX}w`);
});

const login = (namespace: string, name: string) => k8s.login(broker.url, namespace, name);

async function issue(token: string, path: string, n: number): Promise<Issued[]> {
  const out: Issued[] = [];
  for (let i = 0; i < n; i++) {
    const res = await api(broker, 'PUT', path, {}, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    out.push(res.body);
  }
  return out;
}

const leaseCounts = async () =>
  (await adminQuery(storeDb, `SELECT state, count(*)::int AS n FROM credbroker_leases GROUP BY state ORDER BY state`))
    .map((r) => `${r.state}=${r.n}`)
    .join(' ');

async function finished(jobId: string) {
  return waitUntil(
    async () => {
      const res = await api(broker, 'GET', `sys/broker/jobs/${jobId}`);
      expect(res.status).toBe(200);
      return res.body.data.state === 'done' ? res.body.data : null;
    },
    { timeoutMs: 30_000, what: `job ${jobId} to finish` },
  );
}

describe('incident revocation jobs', () => {
  let etl: Issued[];
  let etlWh: Issued[];
  let web: Issued[];

  beforeAll(async () => {
    const loader = await login('etl', 'loader');
    const site = await login('web', 'site');
    etl = await issue(loader, 'db/creds/reader', 3);
    etlWh = await issue(loader, 'wh/creds/loader', 2);
    web = [...(await issue(site, 'db/creds/reader', 2)), ...(await issue(site, 'wh/creds/reader', 1))];
  });

  it('refuses a selector that selects nothing by accident, or is malformed, with 400 and the reason', async () => {
    const empty = await api(broker, 'PUT', 'sys/broker/revoke', {});
    expect(empty.status).toBe(400);
    expect(empty.body.errors[0]).toMatch(/select leases with at least one of identity/);
    const onlyState = await api(broker, 'PUT', 'sys/broker/revoke', { state: 'active' });
    expect(onlyState.status).toBe(400);
    const unknown = await api(broker, 'PUT', 'sys/broker/revoke', { identiy: 'x' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors[0]).toMatch(/identiy/);
    const badTime = await api(broker, 'PUT', 'sys/broker/revoke', { mount: 'db', issued_before: 'yesterday' });
    expect(badTime.status).toBe(400);
    expect(badTime.body.errors[0]).toMatch(/issued_before/);
    const badState = await api(broker, 'PUT', 'sys/broker/revoke', { mount: 'db', state: 'revoked' });
    expect(badState.status).toBe(400);
  });

  it('is for operators: a leased identity is refused (403), and so are the listing and the job reports', async () => {
    const loader = await login('etl', 'loader');
    expect((await api(broker, 'PUT', 'sys/broker/revoke', { identity: 'x' }, loader)).status).toBe(403);
    expect((await api(broker, 'GET', 'sys/broker/leases', undefined, loader)).status).toBe(403);
    expect((await api(broker, 'GET', 'sys/broker/jobs', undefined, loader)).status).toBe(403);
  });

  it('a dry run counts by mount and role and changes nothing', async () => {
    const before = await leaseCounts();
    const dry = await api(broker, 'PUT', 'sys/broker/revoke', {
      metadata: { service_account_namespace: 'etl' },
      dry_run: true,
    });
    expect(dry.status, JSON.stringify(dry.body)).toBe(200);
    expect(dry.body.data.total).toBe(5);
    expect(dry.body.data.by_role).toEqual([
      { mount: 'db', role: 'reader', state: 'active', count: 3 },
      { mount: 'wh', role: 'loader', state: 'active', count: 2 },
    ]);
    expect([...dry.body.data.lease_ids].sort()).toEqual([...etl, ...etlWh].map((l) => l.lease_id).sort());
    expect(await leaseCounts()).toBe(before);
    expect((await adminQuery(storeDb, 'SELECT count(*)::int AS n FROM credbroker_jobs'))[0].n).toBe(0);
    for (const l of [...etl, ...etlWh]) expect(await roleExists(l.data.username)).toBe(true);
  });

  it('lists leases by selector as an operator table, with identity and state', async () => {
    const res = await fetch(`${broker.url}/v1/sys/broker/leases?metadata=service_account_name=site&mount=db&mount=wh`, {
      headers: { 'X-Vault-Token': ROOT_TOKEN },
    });
    expect(res.status).toBe(200);
    const { data } = (await res.json()) as any;
    expect(data.leases.map((l: any) => l.lease_id).sort()).toEqual(web.map((l) => l.lease_id).sort());
    expect(data.leases[0]).toMatchObject({ identity: 'system:serviceaccount:web:site', state: 'active' });
    const paged = await api(broker, 'GET', 'sys/broker/leases?limit=2');
    expect(paged.body.data.leases).toHaveLength(2);
    expect(paged.body.data.next_after).toBe(paged.body.data.leases[1].lease_id);
  });

  it('revokes exactly the selected leases on their targets, across two mounts, and reports it', async () => {
    const started = await api(broker, 'PUT', 'sys/broker/revoke', {
      metadata: { service_account_namespace: 'etl' },
      reason: 'INC-42',
    });
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    expect(started.body.data).toMatchObject({
      total: 5,
      state: 'running',
      requested_by: 'token/root',
      reason: 'INC-42',
    });
    const job = await finished(started.body.data.id);
    expect(job).toMatchObject({ total: 5, revoked: 5, failed: 0, remaining: 0, failures: [] });
    for (const l of [...etl, ...etlWh]) {
      expect(await roleExists(l.data.username)).toBe(false);
      await expect(loginAs(l.data)).rejects.toThrow();
    }
    for (const l of web) {
      const client = await loginAs(l.data);
      await client.end();
    }
    const listed = await api(broker, 'GET', 'sys/broker/jobs');
    expect(listed.body.data.keys).toContain(job.id);
  });

  it('selects by mount and role together, and a lease issued after the job started is not its', async () => {
    const site = await login('web', 'site');
    const started = await api(broker, 'PUT', 'sys/broker/revoke', { mount: 'wh', role: 'reader' });
    expect(started.status).toBe(202);
    const later = await issue(site, 'wh/creds/reader', 1);
    const job = await finished(started.body.data.id);
    expect(job).toMatchObject({ total: 1, revoked: 1 });
    expect(await roleExists(web[2]!.data.username)).toBe(false);
    expect(await roleExists(later[0]!.data.username)).toBe(true);
  });

  it('answers 404 for a job that does not exist', async () => {
    const res = await api(broker, 'GET', 'sys/broker/jobs/revoke-nothere');
    expect(res.status).toBe(404);
  });
});
