import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { ROOT_TOKEN, api, baseTestConfig } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesClaims,
  startJwksServer,
  type JwksServer,
  kubernetesAuthMount,
  kubernetesRole,
} from '../support/jwks-server.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  pgUrl,
  roleExists,
} from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'polenf';

let broker: Broker;
let storeDb: string;
let cluster: JwksServer;
let ci: JwksServer;

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  ci = await startJwksServer();
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('polenf');
  const role = { member_of: [target.group], default_ttl: '10m', max_ttl: '2h' };
  const config = configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: {
          reader: role,
          reader2: role,
          writer: role,
          report: role,
          replica: role,
          prefixed: role,
          alpha_x: role,
          beta_x: role,
          'alpha-b_x': role,
        },
      },
      dbx: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: { reader2: role, replica: role },
      },
    },
    auth: {
      kubernetes: kubernetesAuthMount(cluster, {
        etl: kubernetesRole('etl', ['etl']),
        locked: kubernetesRole('etl', ['etl', 'lockdown']),
        globs: kubernetesRole('globs', ['globs']),
        team: kubernetesRole(['alpha', 'beta', 'alpha-b'], ['team']),
        fenced: kubernetesRole('etl', ['everything', 'teamfence'], {
          claim_mappings: { '/kubernetes.io/namespace': 'namespace', team: 'team' },
        }),
        capped: kubernetesRole('etl', ['capped']),
        ops: kubernetesRole('ops', ['operator']),
      }),
      jwt: {
        type: 'jwt',
        oidc_discovery_url: ci.url,
        bound_issuer: ci.url,
        roles: { ci: { bound_audiences: ['credbroker'], user_claim: 'sub', token_policies: ['etl'] } },
      },
    },
    policies: {
      etl: [
        { path: 'db/creds/reader', capabilities: ['read', 'update'] },
        { path: 'db/creds/prefixed', capabilities: ['update'] },
        { path: 'db/creds/writer', capabilities: ['deny'] },
      ],
      lockdown: [{ path: 'db/*', capabilities: ['deny'] }],
      globs: [
        { path: '+/creds/reader2', capabilities: ['update'] },
        { path: 'db/creds/rep*', capabilities: ['read', 'update'] },
        { path: 'db/creds/report', capabilities: ['read'] },
      ],
      team: [{ path: 'db/creds/{{identity.metadata.namespace}}_*', capabilities: ['read', 'update'] }],
      everything: [{ path: 'db/creds/*', capabilities: ['read', 'update'] }],
      teamfence: [{ path: 'db/creds/{{identity.metadata.team}}_x', capabilities: ['deny'] }],
      operator: [{ path: 'sys/leases/*', capabilities: ['sudo', 'read', 'update', 'list'] }],
      capped: [{ path: 'db/creds/reader', capabilities: ['update'], allowed_ttl: '5m' }],
    },
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await ci?.close();
  await dropRolesWithPrefix(PREFIX);
});

/** Logs in at the kubernetes mount as system:serviceaccount:<namespace>:<serviceAccount>; returns the broker token. */
async function loginAs(role: string, namespace: string, serviceAccount: string): Promise<string> {
  const jwt = await cluster.sign(kubernetesClaims({ namespace, serviceAccount }));
  const res = await api(broker, 'PUT', 'auth/kubernetes/login', { role, jwt }, null);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.auth.client_token;
}

async function issue(path: string, token: string, body: Record<string, unknown> = {}) {
  const res = await api(broker, 'PUT', path, body, token);
  expect(res.status, `${path}: ${JSON.stringify(res.body)}`).toBe(200);
  return { leaseId: res.body.lease_id as string, username: res.body.data.username as string, body: res.body };
}

const status = async (method: string, path: string, token: string, body?: unknown) =>
  (await api(broker, method, path, body ?? (method === 'PUT' ? {} : undefined), token)).status;
const leaseState = async (id: string) =>
  (await adminQuery(storeDb, 'SELECT state FROM credbroker_leases WHERE id = $1', [id]))[0]?.state;
const suffix = (leaseId: string) => leaseId.slice(leaseId.lastIndexOf('/') + 1);

describe('deny wins', () => {
  it('a deny rule refuses its path however the request is made, and creates nothing', async () => {
    const token = await loginAs('etl', 'etl', 'deny-probe');
    expect(await status('PUT', 'db/creds/writer', token)).toBe(403);
    expect(await status('GET', 'db/creds/writer', token)).toBe(403);
    expect(
      (
        await adminQuery(storeDb, `SELECT count(*)::int AS n FROM credbroker_leases WHERE id LIKE 'db/creds/writer/%'`)
      )[0].n,
    ).toBe(0);
  });

  it('a general deny in one policy overrides another policy’s exact grant', async () => {
    const token = await loginAs('locked', 'etl', 'locked');
    expect(await status('PUT', 'db/creds/reader', token)).toBe(403);
    expect(await status('GET', 'db/creds/reader', token)).toBe(403);
    // The same grant without the deny policy works (control).
    await issue('db/creds/reader', await loginAs('etl', 'etl', 'unlocked'));
  });
});

describe('glob rules', () => {
  it('"+" matches exactly one whole segment: +/creds/reader2 grants reader2 on every mount, and nothing else', async () => {
    const token = await loginAs('globs', 'globs', 'globber');
    await issue('db/creds/reader2', token);
    await issue('dbx/creds/reader2', token);
    expect(await status('PUT', 'db/creds/reader', token)).toBe(403);
    expect(await status('PUT', 'dbx/creds/replica', token)).toBe(403);
  });

  it('a trailing "*" matches any suffix: db/creds/rep* grants replica, but not reader or the same role on another mount', async () => {
    const token = await loginAs('globs', 'globs', 'globber');
    await issue('db/creds/replica', token);
    expect(await status('PUT', 'db/creds/reader', token)).toBe(403);
    expect(await status('PUT', 'dbx/creds/replica', token)).toBe(403);
  });

  it('the most specific rule wins over a glob: db/creds/report (read only) refuses PUT though db/creds/rep* allows update', async () => {
    const token = await loginAs('globs', 'globs', 'globber');
    expect(await status('PUT', 'db/creds/report', token)).toBe(403);
    const res = await api(broker, 'GET', 'db/creds/report', undefined, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
  });
});

describe('lease ownership', () => {
  it('one identity cannot look up, renew or revoke another’s lease under the same policy; each can its own', async () => {
    const a = await loginAs('etl', 'etl', 'owner-a');
    const b = await loginAs('etl', 'etl', 'owner-b');
    const la = await issue('db/creds/reader', a);
    const lb = await issue('db/creds/reader', b);

    // Lookup and renew answer as for a lease that does not exist (400); revoke refuses (an unknown id would be a 204).
    expect(await status('PUT', 'sys/leases/lookup', b, { lease_id: la.leaseId })).toBe(400);
    expect(await status('PUT', 'sys/leases/renew', b, { lease_id: la.leaseId, increment: '1h' })).toBe(400);
    expect(await status('PUT', `sys/leases/renew/${la.leaseId}`, b)).toBe(400);
    expect(await status('PUT', 'sys/leases/revoke', b, { lease_id: la.leaseId })).toBe(403);
    expect(await status('PUT', `sys/leases/revoke/${la.leaseId}`, b)).toBe(403);
    expect(await leaseState(la.leaseId)).toBe('active');
    expect(await roleExists(la.username)).toBe(true);

    const lookedUp = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: la.leaseId }, a);
    expect(lookedUp.status).toBe(200);
    expect(lookedUp.body.data.id).toBe(la.leaseId);
    const renewed = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: la.leaseId, increment: '20m' }, a);
    expect(renewed.status, JSON.stringify(renewed.body)).toBe(200);
    expect(renewed.body.lease_duration).toBeGreaterThan(1190);

    expect(await status('PUT', 'sys/leases/lookup', b, { lease_id: lb.leaseId })).toBe(200);
    expect(await status('PUT', 'sys/leases/renew', b, { lease_id: lb.leaseId })).toBe(200);
    expect(await status('PUT', 'sys/leases/revoke', b, { lease_id: lb.leaseId })).toBe(204);
    expect(await roleExists(lb.username)).toBe(false);
    expect(await status('PUT', 'sys/leases/revoke', a, { lease_id: la.leaseId })).toBe(204);
    expect(await roleExists(la.username)).toBe(false);
  });

  it('the same name logged in through another auth mount is another identity', async () => {
    const a = await loginAs('etl', 'etl', 'twin');
    const la = await issue('db/creds/reader', a);
    const jwt = await ci.sign({ iss: ci.url, aud: 'credbroker', sub: 'system:serviceaccount:etl:twin' });
    const login = await api(broker, 'PUT', 'auth/jwt/login', { role: 'ci', jwt }, null);
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    const twin = login.body.auth.client_token;
    expect(await status('PUT', 'sys/leases/lookup', twin, { lease_id: la.leaseId })).toBe(400);
    expect(await status('PUT', 'sys/leases/revoke', twin, { lease_id: la.leaseId })).toBe(403);
    expect(await leaseState(la.leaseId)).toBe('active');
  });

  it('an operator with sudo on sys/leases/* looks up, renews and revokes anyone’s lease, but cannot issue credentials', async () => {
    const a = await loginAs('etl', 'etl', 'operated');
    const la = await issue('db/creds/reader', a);
    const ops = await loginAs('ops', 'ops', 'oncall');
    const looked = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: la.leaseId }, ops);
    expect(looked.status).toBe(200);
    expect(looked.body.data.requester).toBe('system:serviceaccount:etl:operated');
    expect(await status('PUT', 'sys/leases/renew', ops, { lease_id: la.leaseId, increment: '15m' })).toBe(200);
    expect(await status('PUT', 'sys/leases/revoke', ops, { lease_id: la.leaseId })).toBe(204);
    expect(await roleExists(la.username)).toBe(false);
    expect(await status('PUT', 'db/creds/reader', ops)).toBe(403);
  });

  it('LIST on sys/leases/lookup/db/creds/reader/ shows a non-sudo identity only its own lease keys; the operator sees all', async () => {
    const a = await loginAs('etl', 'etl', 'lister-a');
    const b = await loginAs('etl', 'etl', 'lister-b');
    const none = await loginAs('etl', 'etl', 'lister-none');
    const mine = [await issue('db/creds/reader', a), await issue('db/creds/reader', a)]
      .map((l) => suffix(l.leaseId))
      .sort();
    const theirs = suffix((await issue('db/creds/reader', b)).leaseId);

    const listA = await api(broker, 'GET', 'sys/leases/lookup/db/creds/reader/?list=true', undefined, a);
    expect(listA.status, JSON.stringify(listA.body)).toBe(200);
    expect(listA.body.data.keys).toEqual(mine);
    const listB = await api(broker, 'GET', 'sys/leases/lookup/db/creds/reader/?list=true', undefined, b);
    expect(listB.body.data.keys).toEqual([theirs]);
    expect((await api(broker, 'GET', 'sys/leases/lookup/db/creds/reader/?list=true', undefined, none)).status).toBe(
      404,
    );
    // One level up: only the roles it holds leases of.
    expect((await api(broker, 'GET', 'sys/leases/lookup/db/creds/?list=true', undefined, b)).body.data.keys).toEqual([
      'reader/',
    ]);

    const ops = await loginAs('ops', 'ops', 'lister-ops');
    const all = await api(broker, 'GET', 'sys/leases/lookup/db/creds/reader/?list=true', undefined, ops);
    expect(all.body.data.keys).toEqual(expect.arrayContaining([...mine, theirs]));
    const root = await api(broker, 'GET', 'sys/leases/lookup/db/creds/reader/?list=true', undefined, ROOT_TOKEN);
    expect(root.body.data.keys).toEqual(all.body.data.keys);
  });

  it('revoke-prefix (and revoke-force, revoke-issued-before) need sudo: 403 for a lease holder, done for the operator', async () => {
    const a = await loginAs('etl', 'etl', 'prefix-holder');
    const leases = [await issue('db/creds/prefixed', a), await issue('db/creds/prefixed', a)];
    for (const path of [
      'sys/leases/revoke-prefix/db/creds/prefixed',
      'sys/leases/revoke-prefix/db/creds/prefixed/',
      'sys/leases/revoke-force/db/creds/prefixed',
      'sys/broker/revoke-issued-before/db/creds/prefixed',
    ]) {
      expect(await status('PUT', path, a), path).toBe(403);
    }
    // Its own single lease, named as a prefix, is still a prefix operation.
    expect(await status('PUT', `sys/leases/revoke-prefix/${leases[0]!.leaseId}`, a)).toBe(403);
    for (const lease of leases) {
      expect(await leaseState(lease.leaseId)).toBe('active');
      expect(await roleExists(lease.username)).toBe(true);
    }
    const ops = await loginAs('ops', 'ops', 'prefix-ops');
    expect(await status('PUT', 'sys/leases/revoke-prefix/db/creds/prefixed', ops)).toBe(204);
    for (const lease of leases) {
      expect(await leaseState(lease.leaseId)).toBe('revoked');
      expect(await roleExists(lease.username)).toBe(false);
    }
  });
});

describe('templated policy', () => {
  it('db/creds/{{identity.metadata.namespace}}_* lets namespace alpha get alpha_x but not beta_x nor alpha-b_x, and beta the reverse', async () => {
    const alpha = await loginAs('team', 'alpha', 'job');
    const beta = await loginAs('team', 'beta', 'job');
    await issue('db/creds/alpha_x', alpha);
    expect(await status('PUT', 'db/creds/beta_x', alpha)).toBe(403);
    expect(await status('GET', 'db/creds/beta_x', alpha)).toBe(403);
    await issue('db/creds/beta_x', beta);
    expect(await status('PUT', 'db/creds/alpha_x', beta)).toBe(403);
    expect(await status('PUT', 'db/creds/reader', alpha)).toBe(403);
    // The README's old `{{…}}-*` let namespace alpha read alpha-b's roles; "_" ends the value.
    expect(await status('PUT', 'db/creds/alpha-b_x', alpha)).toBe(403);
    await issue('db/creds/alpha-b_x', await loginAs('team', 'alpha-b', 'job'));
    expect(
      (
        await adminQuery(storeDb, `SELECT count(*)::int AS n FROM credbroker_leases WHERE id LIKE 'db/creds/beta_x/%'`)
      )[0].n,
    ).toBe(1);
  });

  it('a templated deny whose claim is an array or missing denies (fails closed); the rest of the grant stands', async () => {
    const login = async (extra: Record<string, unknown>) => {
      const jwt = await cluster.sign({ ...kubernetesClaims({ namespace: 'etl', serviceAccount: 'fenced' }), ...extra });
      const res = await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'fenced', jwt }, null);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return res.body.auth.client_token as string;
    };
    for (const token of [await login({ team: ['alpha', 'beta'] }), await login({}), await login({ team: 'a/b' })]) {
      expect(await status('PUT', 'db/creds/alpha_x', token)).toBe(403);
      expect(await status('PUT', 'db/creds/beta_x', token)).toBe(403);
      await issue('db/creds/reader', token);
    }
    // Resolved, the deny takes only its own path.
    const alphaFenced = await login({ team: 'alpha' });
    expect(await status('PUT', 'db/creds/alpha_x', alphaFenced)).toBe(403);
    await issue('db/creds/beta_x', alphaFenced);
  });
});

describe('allowed_ttl', () => {
  it('caps the lease TTL below the role’s, with a warning in the envelope', async () => {
    const token = await loginAs('capped', 'etl', 'capped');
    const long = await issue('db/creds/reader', token, { ttl: '1h' });
    expect(long.body.lease_duration).toBe(300);
    expect(long.body.warnings).toEqual([
      expect.stringMatching(/TTL of "3600s" exceeded the effective max_ttl of "300s"/),
    ]);
    const rows = await adminQuery<{ rolvaliduntil: Date }>(
      'postgres',
      'SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1',
      [long.username],
    );
    expect(Math.abs(rows[0]!.rolvaliduntil.getTime() - (Date.now() + 300_000))).toBeLessThan(10_000);

    // The role's default (10 m) is over the cap too.
    const byDefault = await issue('db/creds/reader', token);
    expect(byDefault.body.lease_duration).toBe(300);
    expect(byDefault.body.warnings).toHaveLength(1);

    const short = await issue('db/creds/reader', token, { ttl: '2m' });
    expect(short.body.lease_duration).toBe(120);
    expect(short.body.warnings).toBeNull();

    // Without the capped policy the same role gives its default 10 m.
    expect((await issue('db/creds/reader', await loginAs('etl', 'etl', 'uncapped'))).body.lease_duration).toBe(600);
  });

  // Regression test: this once failed (found while writing these tests).
  it('renewing cannot push a lease past its policy’s allowed_ttl', async () => {
    const token = await loginAs('capped', 'etl', 'capped-renew');
    const lease = await issue('db/creds/reader', token);
    const renewed = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: lease.leaseId, increment: '1h' }, token);
    expect(renewed.status, JSON.stringify(renewed.body)).toBe(200);
    expect(renewed.body.lease_duration).toBeLessThanOrEqual(300);
  });
});

describe('the root token', () => {
  it('still works everywhere: denied roles, anyone’s lease, LIST of everything, revoke-prefix', async () => {
    const writer = await issue('db/creds/writer', ROOT_TOKEN);
    await issue('dbx/creds/replica', ROOT_TOKEN);
    const a = await loginAs('etl', 'etl', 'rooted');
    const la = await issue('db/creds/reader', a);
    expect(await status('PUT', 'sys/leases/lookup', ROOT_TOKEN, { lease_id: la.leaseId })).toBe(200);
    expect(await status('PUT', 'sys/leases/renew', ROOT_TOKEN, { lease_id: la.leaseId })).toBe(200);
    expect(await status('PUT', 'sys/leases/revoke', ROOT_TOKEN, { lease_id: la.leaseId })).toBe(204);
    const list = await api(broker, 'GET', 'sys/leases/lookup/db/creds/?list=true', undefined, ROOT_TOKEN);
    expect(list.body.data.keys).toEqual(expect.arrayContaining(['writer/']));
    expect(await status('PUT', 'sys/leases/revoke-prefix/db/creds/writer', ROOT_TOKEN)).toBe(204);
    expect(await roleExists(writer.username)).toBe(false);
    expect(await status('PUT', 'sys/broker/revoke-issued-before/dbx/creds/replica', ROOT_TOKEN)).toBe(200);
  });
});
