import { createWriteStream } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { ROLE_ARN } from '../support/aws-broker.js';
import { startAwsEndpoint, type AwsEndpoint } from '../support/aws-endpoint/index.js';
import { ROOT_TOKEN, api, baseTestConfig } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';
import { sweepLogPath } from '../support/secret-recorder.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'discov';
const POLICY_ARN = 'arn:aws:iam::aws:policy/ReadOnlyAccess';

let broker: Broker;
let storeDb: string;
let cluster: JwksServer;
let aws: AwsEndpoint;

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  aws = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('discov');
  const ttls = { default_ttl: '10m', max_ttl: '2h' };
  const config = configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: {
          reader: { member_of: [target.group], connection_limit: 3, ...ttls },
          replica: { member_of: [target.group], ...ttls },
          // A role named like the path: `db/creds/roles` issues, `db/roles/roles` reads it.
          roles: { member_of: [target.group], ...ttls },
          stmts: {
            creation_statements: [
              `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE "${target.group}"`,
            ],
            revocation_statements: ['DROP ROLE IF EXISTS "{{name}}"'],
            default_ttl: '5m',
            max_ttl: '1h',
          },
        },
      },
      cloud: {
        type: 'aws',
        region: aws.region,
        endpoint: aws.url,
        access_key_id: aws.baseCredentials.accessKeyId,
        secret_access_key: aws.baseCredentials.secretAccessKey,
        roles: {
          deployer: {
            credential_type: 'assumed_role',
            role_arns: [ROLE_ARN],
            policy_arns: [POLICY_ARN],
            external_id: 'deploy-ext',
            default_ttl: '15m',
            max_ttl: '1h',
          },
          machine: { credential_type: 'iam_user', policy_arns: [POLICY_ARN], iam_groups: ['ops'] },
        },
      },
    },
    auth: {
      kubernetes: kubernetesAuthMount(cluster, {
        lister: kubernetesRole('etl', ['lister']),
        reader: kubernetesRole('etl', ['roleread']),
        caps: kubernetesRole('etl', ['caps']),
        ops: kubernetesRole('etl', ['ops']),
        nobody: kubernetesRole('etl', []),
      }),
      ci: {
        type: 'jwt',
        jwks_url: cluster.jwksUrl,
        roles: { build: { bound_audiences: ['credbroker'], token_policies: [] } },
      },
    },
    policies: {
      lister: [
        { path: 'db/roles', capabilities: ['list'] },
        { path: 'cloud/roles/', capabilities: ['list'] },
      ],
      roleread: [{ path: 'db/roles/reader', capabilities: ['read'] }],
      caps: [
        { path: 'db/creds/rep*', capabilities: ['read', 'update'] },
        { path: 'db/creds/*', capabilities: ['read'] },
        { path: 'db/creds/stmts', capabilities: ['deny'] },
        { path: 'db/roles/*', capabilities: ['list', 'read'] },
        { path: 'db/roles/reader', capabilities: ['deny'] },
      ],
      ops: [
        { path: 'sys/leases/count', capabilities: ['read'] },
        { path: 'sys/leases', capabilities: ['read'] },
        { path: 'sys/mounts', capabilities: ['read'] },
        { path: 'sys/auth', capabilities: ['read'] },
      ],
    },
  });
  const logPath = sweepLogPath('broker');
  const log = logPath ? createLogger('info', createWriteStream(logPath, { flags: 'a' })) : createLogger('silent');
  broker = await startBroker(config, { log, reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await aws?.close();
  await dropRolesWithPrefix(PREFIX);
});

async function loginAs(role: string): Promise<string> {
  const jwt = await cluster.sign(kubernetesClaims({ namespace: 'etl', serviceAccount: `discovery-${role}` }));
  const res = await api(broker, 'PUT', 'auth/kubernetes/login', { role, jwt }, null);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.auth.client_token;
}

/** Every secret the broker's config holds: none may appear in any discovery answer. */
const configSecrets = () => [
  inject('pg').password,
  encodeURIComponent(inject('pg').password),
  aws.baseCredentials.secretAccessKey,
  'connection_url',
  'secret_access_key',
];
function expectNoSecret(body: unknown) {
  const text = JSON.stringify(body);
  for (const secret of configSecrets()) expect(text).not.toContain(secret);
  expect(text).not.toMatch(/postgres(ql)?:\/\//);
}

describe('sys/mounts and sys/auth', () => {
  it('lists each configured mount keyed "<name>/", with Vault\'s type, the real engine, and no secret', async () => {
    const res = await api(broker, 'GET', 'sys/mounts');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(Object.keys(res.body.data).sort()).toEqual(['cloud/', 'db/']);
    const db = res.body.data['db/'];
    expect(db).toMatchObject({
      type: 'database',
      options: { plugin_name: 'postgresql-database-plugin', credbroker_engine: 'postgres' },
      config: { default_lease_ttl: 0, max_lease_ttl: 0 },
      local: false,
      seal_wrap: false,
    });
    expect(db.accessor).toMatch(/^database_[0-9a-f]{8}$/);
    expect(res.body.data['cloud/']).toMatchObject({ type: 'aws', options: { credbroker_engine: 'aws' } });
    // Both at the top level and under data, as Vault answers it.
    expect(res.body['db/']).toEqual(db);
    expectNoSecret(res.body);
    // Stable: the same accessor on every call (and every replica: it is derived from the name).
    expect((await api(broker, 'GET', 'sys/mounts')).body.data['db/'].accessor).toBe(db.accessor);
  });

  it('lists token/ and each auth mount with its configured type', async () => {
    const res = await api(broker, 'GET', 'sys/auth');
    expect(res.status).toBe(200);
    expect(Object.keys(res.body.data).sort()).toEqual(['ci/', 'kubernetes/', 'token/']);
    expect(res.body.data['token/'].type).toBe('token');
    expect(res.body.data['kubernetes/'].type).toBe('kubernetes');
    expect(res.body.data['ci/'].type).toBe('jwt');
    expect(res.body['ci/']).toEqual(res.body.data['ci/']);
  });

  it('refuses both to a token without read on them, and answers one that has it', async () => {
    const nobody = await loginAs('nobody');
    expect((await api(broker, 'GET', 'sys/mounts', undefined, nobody)).status).toBe(403);
    expect((await api(broker, 'GET', 'sys/auth', undefined, nobody)).status).toBe(403);
    const ops = await loginAs('ops');
    expect((await api(broker, 'GET', 'sys/mounts', undefined, ops)).status).toBe(200);
    expect((await api(broker, 'GET', 'sys/auth', undefined, ops)).status).toBe(200);
  });
});

describe('<mount>/roles', () => {
  it('LISTs the roles of a mount, with a policy written as Vault writes it or as the broker does', async () => {
    const lister = await loginAs('lister');
    const db = await api(broker, 'LIST', 'db/roles', undefined, lister);
    expect(db.status, JSON.stringify(db.body)).toBe(200);
    expect(db.body.data.keys).toEqual(['reader', 'replica', 'roles', 'stmts']);
    // `cloud/roles/` in the policy (Vault's LIST path), asked without the slash and with it.
    expect((await api(broker, 'LIST', 'cloud/roles', undefined, lister)).body.data.keys).toEqual([
      'deployer',
      'machine',
    ]);
    expect((await api(broker, 'GET', 'cloud/roles/?list=true', undefined, lister)).status).toBe(200);
  });

  it('refuses LIST with 403 to a token without list on <mount>/roles, even one that may read a role', async () => {
    const reader = await loginAs('reader');
    const res = await api(broker, 'LIST', 'db/roles', undefined, reader);
    expect(res.status).toBe(403);
    expect(res.body.errors).toEqual(['permission denied']);
    expect((await api(broker, 'GET', 'db/roles/reader', undefined, reader)).status).toBe(200);
    expect((await api(broker, 'GET', 'db/roles/replica', undefined, reader)).status).toBe(403);
  });

  it("reads a group-form role in Vault's database shape, with member_of and no secret", async () => {
    const res = await api(broker, 'GET', 'db/roles/reader');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.data).toEqual({
      db_name: 'db',
      default_ttl: 600,
      max_ttl: 7200,
      creation_statements: [],
      revocation_statements: [],
      renew_statements: [],
      rollback_statements: [],
      credential_type: 'password',
      credential_config: {},
      member_of: [expect.stringMatching(/^discov/)],
      connection_limit: 3,
    });
    expectNoSecret(res.body);
  });

  it('reads a statements-form role with its statements, placeholders and all', async () => {
    const res = await api(broker, 'GET', 'db/roles/stmts');
    expect(res.status).toBe(200);
    expect(res.body.data.creation_statements[0]).toContain("PASSWORD '{{password}}'");
    expect(res.body.data.revocation_statements).toEqual(['DROP ROLE IF EXISTS "{{name}}"']);
    expect(res.body.data).toMatchObject({ default_ttl: 300, max_ttl: 3600, credential_type: 'password' });
    expect(res.body.data).not.toHaveProperty('member_of');
    expectNoSecret(res.body);
  });

  it("reads aws roles in Vault's aws shape", async () => {
    const assumed = await api(broker, 'GET', 'cloud/roles/deployer');
    expect(assumed.status).toBe(200);
    expect(assumed.body.data).toMatchObject({
      credential_type: 'assumed_role',
      role_arns: [ROLE_ARN],
      policy_arns: [POLICY_ARN],
      default_sts_ttl: 900,
      max_sts_ttl: 3600,
      external_id: 'deploy-ext',
    });
    const user = await api(broker, 'GET', 'cloud/roles/machine');
    expect(user.body.data).toMatchObject({
      credential_type: 'iam_user',
      role_arns: [],
      iam_groups: ['ops'],
      user_path: '/credbroker/',
      default_sts_ttl: 0,
    });
    expectNoSecret([assumed.body, user.body]);
  });

  it('answers 404 for an unknown role and for an unknown mount, as Vault does', async () => {
    const role = await api(broker, 'GET', 'db/roles/nope');
    expect(role.status).toBe(404);
    expect(role.body).toEqual({ errors: [] });
    expect((await api(broker, 'GET', 'nomount/roles/reader')).status).toBe(404);
    expect((await api(broker, 'LIST', 'nomount/roles')).status).toBe(404);
    // GET on the collection is not Vault's read: 405, as an unsupported operation.
    expect((await api(broker, 'GET', 'db/roles')).status).toBe(405);
  });

  it('shadows no issue path, nor is shadowed: a role named "roles" issues on creds and reads on roles', async () => {
    const issued = await api(broker, 'GET', 'db/creds/roles');
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    expect(issued.body.lease_id).toMatch(/^db\/creds\/roles\//);
    const read = await api(broker, 'GET', 'db/roles/roles');
    expect(read.body.data.db_name).toBe('db');
    // No lease was issued by the read.
    const rows = await adminQuery(storeDb, `SELECT count(*)::int AS n FROM credbroker_leases WHERE role = 'roles'`);
    expect(rows[0].n).toBe(1);
  });
});

describe('sys/capabilities-self', () => {
  const capabilities = async (token: string, body: unknown) => {
    const res = await api(broker, 'PUT', 'sys/capabilities-self', body, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body;
  };

  it('answers ["root"] for the root token, on any path', async () => {
    const body = await capabilities(ROOT_TOKEN, { paths: ['db/creds/reader', 'sys/anything'] });
    expect(body.data).toEqual({ 'db/creds/reader': ['root'], 'sys/anything': ['root'] });
  });

  it('answers what the policy grants: the most specific glob, a deny, and ["deny"] where nothing matches', async () => {
    const token = await loginAs('caps');
    const body = await capabilities(token, {
      paths: [
        'db/creds/replica',
        'db/creds/reader',
        'db/creds/stmts',
        'db/roles/replica',
        'db/roles/reader',
        'sys/mounts',
      ],
    });
    expect(body.data).toEqual({
      'db/creds/replica': ['read', 'update'],
      'db/creds/reader': ['read'],
      'db/creds/stmts': ['deny'],
      'db/roles/replica': ['list', 'read'],
      'db/roles/reader': ['deny'],
      'sys/mounts': ['deny'],
    });
    expect(body['db/creds/replica']).toEqual(['read', 'update']);
    // What it says is what the broker does.
    expect((await api(broker, 'PUT', 'db/creds/replica', {}, token)).status).toBe(200);
    expect((await api(broker, 'PUT', 'db/creds/stmts', {}, token)).status).toBe(403);
    expect((await api(broker, 'GET', 'db/roles/reader', undefined, token)).status).toBe(403);
  });

  it('adds "capabilities" for one path, takes the older {path}, and needs no policy to ask about oneself', async () => {
    const nobody = await loginAs('nobody');
    const one = await capabilities(nobody, { paths: ['db/creds/reader'] });
    expect(one.capabilities).toEqual(['deny']);
    expect(one.data.capabilities).toEqual(['deny']);
    const caps = await loginAs('caps');
    expect((await capabilities(caps, { path: '/db/creds/replica' })).capabilities).toEqual(['read', 'update']);
  });

  it('refuses a request without paths with 400, and an unknown token with 403', async () => {
    const res = await api(broker, 'PUT', 'sys/capabilities-self', {}, ROOT_TOKEN);
    expect(res.status).toBe(400);
    expect(res.body.errors.join(' ')).toContain('paths must be supplied');
    expect((await api(broker, 'PUT', 'sys/capabilities-self', { paths: ['x'] }, 'not-a-token')).status).toBe(403);
  });
});

describe('sys/leases/count and sys/leases?type=irrevocable', () => {
  it('counts and lists irrevocable leases by mount accessor, and needs type=irrevocable', async () => {
    const accessor = (await api(broker, 'GET', 'sys/mounts')).body.data['db/'].accessor;
    const ops = await loginAs('ops');
    const empty = await api(broker, 'GET', 'sys/leases/count?type=irrevocable', undefined, ops);
    expect(empty.status, JSON.stringify(empty.body)).toBe(200);
    expect(empty.body.data).toMatchObject({ lease_count: 0, counts: {} });

    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await api(broker, 'GET', 'db/creds/replica')).body.lease_id);
    // What the reaper leaves after its last failed attempt.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET state = 'irrevocable', next_attempt_at = NULL, attempts = 8, last_error = 'target refused: boom' WHERE id = ANY($1)`,
      [ids],
    );

    const count = await api(broker, 'GET', 'sys/leases/count?type=irrevocable', undefined, ops);
    expect(count.body.data).toEqual({ lease_count: 3, counts: { [accessor]: 3 }, counts_by_mount: { db: 3 } });

    const list = await api(broker, 'GET', 'sys/leases?type=irrevocable', undefined, ops);
    expect(list.status).toBe(200);
    expect(list.body.data.lease_count).toBe(3);
    expect(list.body.data.leases.map((l: { lease_id: string }) => l.lease_id)).toEqual([...ids].sort());
    expect(list.body.data.leases[0]).toMatchObject({
      mount_id: accessor,
      error: 'target refused: boom',
      mount: 'db',
      role: 'replica',
    });
    expect(list.body.warnings).toBeNull();

    const cut = await api(broker, 'GET', 'sys/leases?type=irrevocable&limit=2', undefined, ops);
    expect(cut.body.data.lease_count).toBe(2);
    expect(cut.body.warnings[0]).toContain('limit=none');
    expect(
      (await api(broker, 'GET', 'sys/leases?type=irrevocable&limit=none', undefined, ops)).body.data.lease_count,
    ).toBe(3);
    expect((await api(broker, 'GET', 'sys/leases?type=irrevocable&limit=0', undefined, ops)).status).toBe(400);

    const untyped = await api(broker, 'GET', 'sys/leases/count', undefined, ops);
    expect(untyped.status).toBe(404);
    expect(untyped.body.errors[0]).toContain('type=irrevocable is required');
    expect((await api(broker, 'GET', 'sys/leases?type=active', undefined, ops)).status).toBe(404);
    const nobody = await loginAs('nobody');
    expect((await api(broker, 'GET', 'sys/leases/count?type=irrevocable', undefined, nobody)).status).toBe(403);
    expect((await api(broker, 'GET', 'sys/leases?type=irrevocable', undefined, nobody)).status).toBe(403);
  });
});

describe('sys/seal-status and sys/leader', () => {
  it('answer without a token what an unsealed Vault without HA answers', async () => {
    const seal = await api(broker, 'GET', 'sys/seal-status', undefined, null);
    expect(seal.status).toBe(200);
    expect(seal.body).toMatchObject({
      type: 'shamir',
      initialized: true,
      sealed: false,
      t: 1,
      n: 1,
      progress: 0,
      storage_type: 'postgresql',
      cluster_name: 'credbroker',
    });
    const leader = await api(broker, 'GET', 'sys/leader', undefined, null);
    expect(leader.status).toBe(200);
    expect(leader.body).toMatchObject({ ha_enabled: false, is_self: false, leader_address: '' });
  });
});

describe('auth/token/renew-self', () => {
  it('answers with the presented token as client_token, which still works', async () => {
    const token = await loginAs('nobody');
    const res = await api(broker, 'PUT', 'auth/token/renew-self', { increment: '5m' }, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.auth.client_token).toBe(token);
    expect(res.body.auth.lease_duration).toBeGreaterThan(0);
    const lookup = await api(broker, 'GET', 'auth/token/lookup-self', undefined, res.body.auth.client_token);
    expect(lookup.status).toBe(200);
    expect(lookup.body.data.accessor).toBe(res.body.auth.accessor);
  });

  it('answers with the token given as a bearer too', async () => {
    const token = await loginAs('nobody');
    const res = await fetch(`${(broker as { url: string }).url}/v1/auth/token/renew-self`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: '{}',
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { auth: { client_token: string } }).auth.client_token).toBe(token);
  });
});

describe('any input to the discovery routes', () => {
  it('is answered without a 5xx, and capabilities-self answers exactly the paths asked', async () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 40 });
    const value = fc.oneof(text, fc.integer(), fc.constant(null), fc.array(text, { maxLength: 4 }), fc.boolean());
    const request = fc.oneof(
      fc.record({ kind: fc.constant('caps'), body: fc.dictionary(fc.constantFrom('paths', 'path', 'x'), value) }),
      fc.record({
        kind: fc.constant('leases'),
        path: fc.constantFrom('sys/leases', 'sys/leases/count'),
        query: fc.dictionary(fc.constantFrom('type', 'limit', 'include_child_namespaces'), text),
      }),
      fc.record({
        kind: fc.constant('roles'),
        mount: fc.constantFrom('db', 'cloud', 'sys', 'auth', 'nomount'),
        role: fc.option(text, { nil: undefined }),
        method: fc.constantFrom('GET', 'LIST', 'PUT'),
      }),
    );
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        if (r.kind === 'caps') {
          const res = await api(broker, 'PUT', 'sys/capabilities-self', r.body);
          expect(res.status, JSON.stringify([r, res.body])).toBeLessThan(500);
          if (res.status === 200) {
            const given = r.body.paths ?? r.body.path;
            const asked = (typeof given === 'string' ? given.split(',') : (given as string[]))
              .map((p) => p.trim().replace(/^\/+/, ''))
              .filter(Boolean);
            // One path asked: Vault's older `capabilities` field repeats its answer.
            if (asked.length === 1) expect(res.body.data.capabilities).toEqual(res.body.data[asked[0]!]);
            const keys = Object.keys(res.body.data).filter((k) => k !== 'capabilities' || asked.includes(k));
            expect(new Set(keys)).toEqual(new Set(asked));
          } else expect(res.status).toBe(400);
        } else if (r.kind === 'leases') {
          const res = await api(broker, 'GET', `${r.path}?${new URLSearchParams(r.query)}`);
          expect(res.status, JSON.stringify([r, res.body])).toBeLessThan(500);
        } else {
          const path = `${r.mount}/roles${r.role === undefined ? '' : `/${encodeURIComponent(r.role)}`}`;
          const res = await api(broker, r.method, path, r.method === 'PUT' ? {} : undefined);
          expect(res.status, JSON.stringify([r, res.body])).toBeLessThan(500);
          expectNoSecret(res.body);
        }
      }),
      { numRuns: 300 },
    );
  });
});
