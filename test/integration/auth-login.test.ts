import { createHash } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { api, baseTestConfig } from '../support/broker.js';
import {
  K8S_ISSUER,
  b64url,
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
  loginAs,
  pgUrl,
  roleExists,
} from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'authlg';
const SA_UID = '6f1c2a77-2a0e-4a5c-9d1e-0d3c2b1a0f99';

let broker: Broker;
let storeDb: string;
let cluster: JwksServer;
let ci: JwksServer;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

beforeAll(async () => {
  cluster = await startJwksServer({ algs: ['RS256'], issuer: K8S_ISSUER });
  ci = await startJwksServer({ algs: ['RS256'] });
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('authlg');
  const etlRole = kubernetesRole('etl', ['etl'], { token_max_ttl: '20m' });
  const config = configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: {
          reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
          writer: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
          admin: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
        },
      },
    },
    auth: {
      // Every unknown kid refetches: rotation is picked up at once.
      kubernetes: kubernetesAuthMount(cluster, {
        etl: etlRole,
        'etl-keep': { ...etlRole, revoke_leases_with_token: false },
      }),
      jwt: {
        type: 'jwt',
        oidc_discovery_url: ci.url,
        bound_issuer: ci.url,
        // jwks_refresh_interval left at its default (10 s).
        roles: {
          ci: {
            bound_audiences: ['credbroker'],
            bound_claims: { repository: 'acme/warehouse' },
            user_claim: 'sub',
            claim_mappings: { repository: 'repository', run_id: 'run_id' },
            token_policies: ['etl'],
            token_ttl: '5m',
          },
        },
      },
    },
    policies: {
      etl: [
        { path: 'db/creds/reader', capabilities: ['read', 'update'] },
        { path: 'db/creds/writer', capabilities: ['deny'] },
      ],
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

const login = (body: unknown, mount = 'kubernetes') => api(broker, 'PUT', `auth/${mount}/login`, body, null);

async function loginOk(jwt: string, role = 'etl', mount = 'kubernetes'): Promise<{ token: string; auth: any }> {
  const res = await login({ role, jwt }, mount);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { token: res.body.auth.client_token, auth: res.body.auth };
}

const tokenCount = async () =>
  (await adminQuery<{ n: number }>(storeDb, 'SELECT count(*)::int AS n FROM credbroker_tokens'))[0]!.n;
const leaseRow = async (id: string) =>
  (await adminQuery(storeDb, 'SELECT * FROM credbroker_leases WHERE id = $1', [id]))[0];
const rolesOf = async (role: string) =>
  (
    await adminQuery<{ n: number }>('postgres', 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname LIKE $1', [
      `${PREFIX}\\_${role}\\_%`,
    ])
  )[0]!.n;

describe('kubernetes login', () => {
  it('a projected service-account token logs in and gets Vault’s auth block with the service account in its metadata', async () => {
    const claims = kubernetesClaims({ uid: SA_UID });
    const jwt = await cluster.sign(claims);
    const res = await login({ role: 'etl', jwt });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.data).toBeNull();
    expect(res.body.lease_id).toBe('');
    const auth = res.body.auth;
    expect(auth.client_token).toMatch(/^cbt\./);
    expect(auth.client_token.length).toBeGreaterThan(20);
    expect(auth.accessor).toEqual(expect.any(String));
    expect(auth.accessor.length).toBeGreaterThan(8);
    expect(auth.accessor).not.toBe(auth.client_token);
    expect(auth.policies).toEqual(['etl']);
    expect(auth.token_policies).toEqual(['etl']);
    expect(auth.metadata).toEqual({
      role: 'etl',
      namespace: 'etl',
      service_account_namespace: 'etl',
      service_account_name: 'reader',
      service_account_uid: SA_UID,
    });
    expect(auth.lease_duration).toBeGreaterThanOrEqual(598);
    expect(auth.lease_duration).toBeLessThanOrEqual(600);
    expect(auth.renewable).toBe(true);
  });

  it('the token issues db/creds/reader, a credential that logs in to the target', async () => {
    const { token } = await loginOk(await cluster.sign(kubernetesClaims()));
    const res = await api(broker, 'PUT', 'db/creds/reader', {}, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.lease_id).toMatch(/^db\/creds\/reader\//);
    const client = await loginAs(res.body.data);
    try {
      expect((await client.query('SELECT name FROM public.items ORDER BY id')).rows.map((r) => r.name)).toEqual([
        'one',
        'two',
      ]);
    } finally {
      await client.end();
    }
    const row = await leaseRow(res.body.lease_id);
    expect(row.identity).toMatchObject({
      name: 'system:serviceaccount:etl:reader',
      auth_mount: 'kubernetes',
      metadata: { namespace: 'etl' },
    });
    expect(row.token_accessor).toEqual(expect.any(String));
  });

  it('the token is refused db/creds/writer (denied) and every path its policy does not name, and creates no role there', async () => {
    const { token } = await loginOk(await cluster.sign(kubernetesClaims()));
    const writersBefore = await rolesOf('writer');
    const adminsBefore = await rolesOf('admin');
    for (const [method, path] of [
      ['PUT', 'db/creds/writer'],
      ['GET', 'db/creds/writer'],
      ['PUT', 'db/creds/admin'],
      ['GET', 'db/creds/admin'],
      ['PUT', 'sys/leases/revoke-prefix/db/'],
      ['PUT', 'sys/leases/revoke-force/db/'],
      ['PUT', 'sys/broker/revoke-issued-before/db/'],
    ] as const) {
      const res = await api(broker, method, path, method === 'PUT' ? {} : undefined, token);
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBe(403);
      expect(res.body.errors).toEqual(['permission denied']);
    }
    expect(await rolesOf('writer')).toBe(writersBefore);
    expect(await rolesOf('admin')).toBe(adminsBefore);
  });

  it('lookup-self describes the token without revealing it; renew-self extends it, never past token_max_ttl, answering with the token', async () => {
    const { token, auth } = await loginOk(await cluster.sign(kubernetesClaims({ uid: SA_UID })));
    const looked = await api(broker, 'GET', 'auth/token/lookup-self', undefined, token);
    expect(looked.status, JSON.stringify(looked.body)).toBe(200);
    expect(looked.body.data).toMatchObject({
      accessor: auth.accessor,
      display_name: 'kubernetes-system:serviceaccount:etl:reader',
      path: 'auth/kubernetes/login',
      policies: ['etl'],
      meta: { namespace: 'etl', service_account_name: 'reader', service_account_uid: SA_UID },
      renewable: true,
      type: 'service',
    });
    expect(looked.body.data.ttl).toBeGreaterThan(590);
    expect(looked.body.data.ttl).toBeLessThanOrEqual(600);
    expect(looked.body.data.explicit_max_ttl).toBe(1200);
    expect(JSON.stringify(looked.body)).not.toContain(token);

    const renewed = await api(broker, 'PUT', 'auth/token/renew-self', { increment: '15m' }, token);
    expect(renewed.status, JSON.stringify(renewed.body)).toBe(200);
    expect(renewed.body.auth.accessor).toBe(auth.accessor);
    expect(renewed.body.auth.lease_duration).toBeGreaterThanOrEqual(898);
    expect(renewed.body.auth.lease_duration).toBeLessThanOrEqual(900);
    // As Vault: renew-self gives the caller its own token back (issue 12), and nothing else of it.
    expect(renewed.body.auth.client_token).toBe(token);

    const capped = await api(broker, 'PUT', 'auth/token/renew-self', { increment: '1h' }, token);
    expect(capped.status, JSON.stringify(capped.body)).toBe(200);
    expect(capped.body.auth.lease_duration).toBeGreaterThan(1100);
    expect(capped.body.auth.lease_duration).toBeLessThanOrEqual(1200);
    const after = await api(broker, 'GET', 'auth/token/lookup-self', undefined, token);
    expect(after.body.data.ttl).toBeLessThanOrEqual(1200);
  });

  // Regression test: this once failed (found while writing these tests).
  it('renew-self without an increment renews for the role’s token_ttl (10 m), not an hour', async () => {
    const { token } = await loginOk(await cluster.sign(kubernetesClaims()));
    const renewed = await api(broker, 'PUT', 'auth/token/renew-self', undefined, token);
    expect(renewed.status, JSON.stringify(renewed.body)).toBe(200);
    expect(renewed.body.auth.lease_duration).toBeLessThanOrEqual(600);
  });

  it('revoke-self ends the token at once and, with revoke_leases_with_token (the default), revokes its leases and drops their roles', async () => {
    const { token } = await loginOk(await cluster.sign(kubernetesClaims()));
    const issued = await api(broker, 'PUT', 'db/creds/reader', {}, token);
    expect(issued.status).toBe(200);
    const username: string = issued.body.data.username;
    expect(await roleExists(username)).toBe(true);

    const revoked = await api(broker, 'PUT', 'auth/token/revoke-self', {}, token);
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(204);

    expect((await api(broker, 'GET', 'auth/token/lookup-self', undefined, token)).status).toBe(403);
    expect((await api(broker, 'PUT', 'db/creds/reader', {}, token)).status).toBe(403);
    expect((await api(broker, 'PUT', 'auth/token/renew-self', {}, token)).status).toBe(403);
    expect(await roleExists(username)).toBe(false);
    const row = await leaseRow(issued.body.lease_id);
    expect(row.state).toBe('revoked');
    expect(row.revoke_reason).toBe('revoked');
  });

  it('revoke-self of a role with revoke_leases_with_token false leaves its leases alive', async () => {
    const { token } = await loginOk(await cluster.sign(kubernetesClaims()), 'etl-keep');
    const issued = await api(broker, 'PUT', 'db/creds/reader', {}, token);
    expect(issued.status).toBe(200);
    expect((await api(broker, 'PUT', 'auth/token/revoke-self', {}, token)).status).toBe(204);
    expect((await api(broker, 'GET', 'auth/token/lookup-self', undefined, token)).status).toBe(403);
    expect(await roleExists(issued.body.data.username)).toBe(true);
    expect((await leaseRow(issued.body.lease_id)).state).toBe('active');
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: issued.body.lease_id })).status).toBe(204);
  });

  it('only a SHA-256 of the token is stored: neither the token, its secret part nor the login JWT appear in any column', async () => {
    const jwt = await cluster.sign(kubernetesClaims());
    const { token, auth } = await loginOk(jwt);
    const rows = await adminQuery<{ row: string }>(storeDb, 'SELECT t::text AS row FROM credbroker_tokens t');
    expect(rows.length).toBeGreaterThan(0);
    const secretPart = token.slice('cbt.'.length);
    for (const { row } of rows) {
      expect(row).not.toContain(token);
      expect(row).not.toContain(secretPart);
      expect(row).not.toContain(jwt);
      // Not hex- or base64-encoded as is either.
      expect(row).not.toContain(Buffer.from(token).toString('hex'));
      expect(row).not.toContain(Buffer.from(token).toString('base64'));
    }
    const digest = createHash('sha256').update(token).digest();
    const mine = await adminQuery(storeDb, 'SELECT accessor FROM credbroker_tokens WHERE token_hash = $1', [digest]);
    expect(mine).toEqual([{ accessor: auth.accessor }]);
  });

  it('a signing-key rotation at the JWKS (new kid, old one dropped) is picked up without a restart; the dropped kid is then refused', async () => {
    const oldKid = cluster.kids()[0]!;
    const oldToken = await cluster.sign(kubernetesClaims(), { kid: oldKid });
    await loginOk(oldToken);
    const fetchesBefore = cluster.jwksFetches;

    const newKid = await cluster.rotate({ alg: 'ES256', dropOld: true });
    expect(cluster.kids()).toEqual([newKid]);
    const fresh = await loginOk(await cluster.sign(kubernetesClaims(), { kid: newKid }));
    expect((await api(broker, 'PUT', 'db/creds/reader', {}, fresh.token)).status).toBe(200);
    expect(cluster.jwksFetches).toBeGreaterThan(fetchesBefore);

    // A token still signed by the retired key (valid otherwise) no longer logs in.
    const res = await login({ role: 'etl', jwt: await cluster.sign(kubernetesClaims(), { kid: oldKid }) });
    expect(res.status).toBe(400);
    expect(res.body.errors[0]).toMatch(/no key matches the token's key id/);
  });

  // Regression test: this once failed (found while writing these tests).
  it('a JWKS endpoint answering 503 makes the login fail with 502 (key fetch), not a 400 blaming the token', async () => {
    const kid = await cluster.addKey({ alg: 'RS256' });
    const jwt = await cluster.sign(kubernetesClaims(), { kid });
    cluster.failJwksWith(503);
    try {
      const res = await login({ role: 'etl', jwt });
      expect(res.body.auth ?? null).toBeNull();
      expect(res.status).toBe(502);
      expect(res.body.errors[0]).toMatch(/signing keys/);
    } finally {
      cluster.failJwksWith(undefined);
    }
  });
});

describe('kubernetes claims: one source for the bound check and the metadata', () => {
  it('a legacy token (flat claims only) is bound and described by the same namespace', async () => {
    const { ['kubernetes.io']: _, ...rest } = kubernetesClaims();
    const legacy = {
      ...rest,
      'kubernetes.io/serviceaccount/namespace': 'etl',
      'kubernetes.io/serviceaccount/service-account.name': 'old-reader',
      'kubernetes.io/serviceaccount/service-account.uid': SA_UID,
    };
    const { auth } = await loginOk(await cluster.sign(legacy));
    expect(auth.metadata).toMatchObject({
      namespace: 'etl',
      service_account_namespace: 'etl',
      service_account_name: 'old-reader',
      service_account_uid: SA_UID,
    });
  });

  it('a legacy token of another namespace fails the bound check that reads /kubernetes.io/namespace', async () => {
    const { ['kubernetes.io']: _, ...rest } = kubernetesClaims();
    const res = await login({
      role: 'etl',
      jwt: await cluster.sign({ ...rest, 'kubernetes.io/serviceaccount/namespace': 'admin' }),
    });
    expect(res.status).toBe(400);
    expect(res.body.errors[0]).toMatch(/claim "\/kubernetes.io\/namespace" does not match/);
  });

  it('a token with both forms agreeing logs in', async () => {
    await loginOk(await cluster.sign({ ...kubernetesClaims(), 'kubernetes.io/serviceaccount/namespace': 'etl' }));
  });
});

describe('jwt login with OIDC discovery', () => {
  it('a CI token logs in through the discovered JWKS; discovery is fetched once for many logins', async () => {
    const claims = {
      iss: ci.url,
      aud: 'credbroker',
      sub: 'repo:acme/warehouse:ref:refs/heads/main',
      repository: 'acme/warehouse',
      run_id: 4242,
    };
    const first = await loginOk(await ci.sign(claims), 'ci', 'jwt');
    expect(first.auth.policies).toEqual(['etl']);
    expect(first.auth.metadata).toEqual({ role: 'ci', repository: 'acme/warehouse', run_id: '4242' });
    expect(first.auth.lease_duration).toBeLessThanOrEqual(300);
    await loginOk(await ci.sign(claims), 'ci', 'jwt');
    expect(ci.discoveryFetches).toBe(1);
    expect(ci.jwksFetches).toBe(1);

    const other = await login({ role: 'ci', jwt: await ci.sign({ ...claims, repository: 'evil/fork' }) }, 'jwt');
    expect(other.status).toBe(400);
    expect(other.body.errors[0]).toMatch(/claim "repository" does not match/);
  });

  it('a burst of tokens with unknown key ids refetches the JWKS at most once per refresh interval', async () => {
    const claims = {
      iss: ci.url,
      aud: 'credbroker',
      sub: 'repo:acme/warehouse:ref:refs/heads/main',
      repository: 'acme/warehouse',
    };
    await loginOk(await ci.sign(claims), 'ci', 'jwt');
    const before = ci.jwksFetches;
    const tokens = await Promise.all(
      Array.from({ length: 6 }, async () => ci.sign(claims, { kid: await ci.addKey({ published: false }) })),
    );
    const results = await Promise.all(tokens.map((jwt) => login({ role: 'ci', jwt }, 'jwt')));
    for (const res of results) {
      expect(res.status).toBe(400);
      expect(res.body.errors[0]).toMatch(/no key matches/);
    }
    expect(ci.jwksFetches - before).toBeLessThanOrEqual(1);
  });
});

describe('refused logins: a 400 naming the reason, and no token', () => {
  const now = () => Math.floor(Date.now() / 1000);

  /** Sends the login and checks the refusal: 400, the reason, no auth block, no new token row. */
  async function refused(body: unknown, reason: RegExp, mount = 'kubernetes') {
    const before = await tokenCount();
    const res = await login(body, mount);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.errors).toHaveLength(1);
    expect(res.body.errors[0]).toMatch(reason);
    expect(res.body.auth ?? null).toBeNull();
    expect(JSON.stringify(res.body)).not.toMatch(/cbt\./);
    expect(await tokenCount()).toBe(before);
  }

  it('an expired token (exp beyond the 30 s leeway)', async () => {
    const claims = { ...kubernetesClaims(), iat: now() - 900, nbf: now() - 900, exp: now() - 120 };
    await refused({ role: 'etl', jwt: await cluster.sign(claims) }, /error validating token: token is expired/);
  });

  it('a token expired 10 s ago is still inside the leeway and logs in (control for the case above)', async () => {
    const claims = { ...kubernetesClaims(), iat: now() - 900, nbf: now() - 900, exp: now() - 10 };
    await loginOk(await cluster.sign(claims));
  });

  it('a not-yet-valid token (nbf beyond the leeway)', async () => {
    const claims = { ...kubernetesClaims(), nbf: now() + 300, exp: now() + 900 };
    await refused({ role: 'etl', jwt: await cluster.sign(claims) }, /error validating token: token is not yet valid/);
  });

  it('a token whose nbf is 10 s ahead is inside the leeway and logs in (control for the case above)', async () => {
    await loginOk(await cluster.sign({ ...kubernetesClaims(), nbf: now() + 10 }));
  });

  it('a token without exp', async () => {
    const { exp: _exp, ...claims } = kubernetesClaims();
    const jwt = await cluster.sign(claims, { expiresIn: null });
    expect(JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()).exp).toBeUndefined();
    await refused({ role: 'etl', jwt }, /error validating token: invalid "exp" claim/);
  });

  it('a wrong issuer', async () => {
    await refused(
      { role: 'etl', jwt: await cluster.sign(kubernetesClaims({ issuer: 'https://evil.example' })) },
      /issuer does not match bound_issuer/,
    );
  });

  it('a wrong audience', async () => {
    await refused(
      { role: 'etl', jwt: await cluster.sign(kubernetesClaims({ audience: ['vault', 'other'] })) },
      /invalid audience \(aud\) claim/,
    );
  });

  it('no audience at all', async () => {
    const { aud: _aud, ...claims } = kubernetesClaims();
    await refused({ role: 'etl', jwt: await cluster.sign(claims) }, /invalid audience \(aud\) claim/);
  });

  it('a namespace the role is not bound to', async () => {
    await refused(
      { role: 'etl', jwt: await cluster.sign(kubernetesClaims({ namespace: 'other' })) },
      /claim "\/kubernetes\.io\/namespace" does not match/,
    );
  });

  it('a token with alg "none" and an empty signature', async () => {
    const jwt = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(kubernetesClaims())}.`;
    await refused({ role: 'etl', jwt }, /signing algorithm not allowed/);
    const bare = `${b64url({ alg: 'none' })}.${b64url(kubernetesClaims())}.`;
    await refused({ role: 'etl', jwt: bare }, /signing algorithm not allowed/);
  });

  it('HS256 signed with the RSA public key (PEM, JWK) as the HMAC secret', async () => {
    // A published RSA key the broker has verified a genuine RS256 token with.
    const kid = await cluster.addKey({ alg: 'RS256' });
    await loginOk(await cluster.sign(kubernetesClaims(), { kid }));
    const jwk = cluster.publicJwk(kid);
    const secrets = [
      await cluster.publicKeyPem(kid),
      JSON.stringify(jwk),
      JSON.stringify({ kty: jwk.kty, n: jwk.n, e: jwk.e }),
      jwk.n!,
    ];
    for (const secret of secrets) {
      const jwt = await new SignJWT(kubernetesClaims())
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid })
        .sign(new TextEncoder().encode(secret));
      await refused({ role: 'etl', jwt }, /signing algorithm not allowed/);
    }
  });

  it('a token whose kid the JWKS does not have, even after a refetch', async () => {
    const kid = await cluster.addKey({ published: false });
    const before = cluster.jwksFetches;
    await refused(
      { role: 'etl', jwt: await cluster.sign(kubernetesClaims(), { kid }) },
      /no key matches the token's key id/,
    );
    expect(cluster.jwksFetches).toBeGreaterThan(before);
  });

  it('a token signed by another issuer’s key (the CI provider) at the kubernetes mount', async () => {
    await refused({ role: 'etl', jwt: await ci.sign(kubernetesClaims()) }, /no key matches the token's key id/);
  });

  it('a valid signature over a payload that was changed afterwards', async () => {
    const jwt = await cluster.sign(kubernetesClaims({ namespace: 'other' }));
    const [header, , signature] = jwt.split('.');
    const forged = `${header}.${b64url(kubernetesClaims({ namespace: 'etl' }))}.${signature}`;
    await refused({ role: 'etl', jwt: forged }, /signature is invalid/);
  });

  it('a token over max_jwt_bytes', async () => {
    const jwt = await cluster.sign({ ...kubernetesClaims(), padding: 'x'.repeat(20_000) });
    expect(Buffer.byteLength(jwt)).toBeGreaterThan(16_384);
    const before = cluster.jwksFetches;
    await refused({ role: 'etl', jwt }, /jwt is too large \(over 16384 bytes\)/);
    expect(cluster.jwksFetches).toBe(before);
  });

  it('garbage in place of a JWT', async () => {
    for (const jwt of [
      'garbage',
      'a.b.c',
      '...',
      'eyJ.eyJ.',
      `${b64url({ alg: 'RS256' })}.not-base64!.sig`,
      `${b64url('not json')}.${b64url({})}.x`,
      'cbt.' + 'A'.repeat(43),
    ]) {
      await refused({ role: 'etl', jwt }, /^error validating token: /);
    }
  });

  it('an unknown role', async () => {
    await refused({ role: 'nope', jwt: await cluster.sign(kubernetesClaims()) }, /role "nope" could not be found/);
  });

  it('missing or mistyped role and jwt: a 400 naming the field', async () => {
    const jwt = await cluster.sign(kubernetesClaims());
    await refused({}, /role/);
    await refused({ jwt }, /role/);
    await refused({ role: '', jwt }, /missing role/);
    await refused({ role: ['etl'], jwt }, /missing role/);
    await refused({ role: 'etl' }, /jwt/);
    await refused({ role: 'etl', jwt: '' }, /missing jwt/);
    await refused({ role: 'etl', jwt: 12345 }, /missing jwt/);
    await refused({ role: 'etl', jwt: { token: jwt } }, /missing jwt/);
  });

  // Regression test: this once failed (found while writing these tests).
  it('an absent role or jwt is refused with the clear "missing role" / "missing jwt"', async () => {
    const jwt = await cluster.sign(kubernetesClaims());
    await refused({ jwt }, /^missing role$/);
    await refused({ role: 'etl' }, /^missing jwt$/);
  });

  it('a body that is not JSON', async () => {
    const before = await tokenCount();
    const res = await login('role=etl&jwt=x');
    expect(res.status).toBe(400);
    expect(res.body.errors[0]).toMatch(/not valid JSON/);
    expect(await tokenCount()).toBe(before);
  });

  it('a token issued in the future (iat beyond the leeway), even with a past nbf', async () => {
    const claims = { ...kubernetesClaims(), iat: now() + 300, nbf: now() - 10, exp: now() + 900 };
    await refused(
      { role: 'etl', jwt: await cluster.sign(claims) },
      /error validating token: token is not yet valid \(issued in the future\)/,
    );
  });

  it('a token whose iat is 10 s ahead is inside the leeway and logs in (control for the case above)', async () => {
    await loginOk(await cluster.sign({ ...kubernetesClaims(), iat: now() + 10 }));
  });

  it.each([
    ['namespace', { 'kubernetes.io/serviceaccount/namespace': 'admin' }],
    ['service account name', { 'kubernetes.io/serviceaccount/service-account.name': 'root-ish' }],
    ['service account uid', { 'kubernetes.io/serviceaccount/service-account.uid': 'another-uid' }],
  ])('a Kubernetes token whose nested and legacy %s claims disagree', async (_, legacy) => {
    await refused(
      { role: 'etl', jwt: await cluster.sign({ ...kubernetesClaims(), ...legacy }) },
      /error validating claims: the token's Kubernetes claims disagree/,
    );
  });

  it('a Kubernetes token whose nested namespace is not a string', async () => {
    const claims = kubernetesClaims();
    (claims['kubernetes.io'] as Record<string, unknown>).namespace = ['etl', 'admin'];
    await refused(
      { role: 'etl', jwt: await cluster.sign(claims) },
      /error validating claims: the token's Kubernetes claim "namespace" is not a string/,
    );
  });

  it('an auth mount that does not exist answers 404', async () => {
    const res = await login({ role: 'etl', jwt: await cluster.sign(kubernetesClaims()) }, 'nosuch');
    expect(res.status).toBe(404);
  });
});
