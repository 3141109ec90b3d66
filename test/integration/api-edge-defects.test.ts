import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { api, baseTestConfig } from '../support/broker.js';
import { startJwksServer, type JwksServer } from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';
import { RawConnection, rawRequest } from '../support/raw-http.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'apiedge';
const DEFAULT_TTL = 600;

let broker: Broker;
let storeDb: string;
let idp: JwksServer;

beforeAll(async () => {
  idp = await startJwksServer({ algs: ['RS256'] });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('apiedge');
  const config = configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: { reader: { member_of: [target.group], default_ttl: `${DEFAULT_TTL}s`, max_ttl: '1h' } },
      },
    },
    auth: {
      jwt: {
        type: 'jwt',
        jwks_url: idp.jwksUrl,
        bound_issuer: idp.issuer,
        roles: {
          ci: {
            bound_audiences: ['credbroker'],
            user_claim: 'sub',
            claim_mappings: { run_id: 'run_id' },
            token_policies: ['ci'],
            token_ttl: '5m',
          },
        },
      },
    },
    policies: { ci: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }] },
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await idp?.close();
  await dropRolesWithPrefix(PREFIX);
});

const leaseCount = async () =>
  (await adminQuery<{ n: number }>(storeDb, 'SELECT count(*)::int AS n FROM credbroker_leases'))[0]!.n;
const tokenCount = async () =>
  (await adminQuery<{ n: number }>(storeDb, 'SELECT count(*)::int AS n FROM credbroker_tokens'))[0]!.n;

async function login(sub: string, extra: Record<string, unknown> = {}) {
  const jwt = await idp.sign({ iss: idp.issuer, aud: 'credbroker', sub, ...extra });
  return api(broker, 'PUT', 'auth/jwt/login', { role: 'ci', jwt }, null);
}

async function tokenFor(sub: string): Promise<string> {
  const res = await login(sub);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.auth.client_token;
}

/** Vault's error shape, a 4xx, and no stack or internals. */
function expectClientError(res: { status: number; body: any }, status: number, message?: RegExp) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(Object.keys(res.body ?? {})).toEqual(['errors']);
  expect(res.body.errors.length).toBeGreaterThan(0);
  if (message) expect(res.body.errors[0]).toMatch(message);
  expect(JSON.stringify(res.body)).not.toMatch(/internal error|\.ts:|node_modules/);
}

describe('health status overrides', () => {
  it('refuses an override that is not the code of a final answer (1xx, out of range, not a number), unauthenticated', async () => {
    for (const query of [
      'activecode=101',
      'activecode=100',
      'activecode=199',
      'activecode=600',
      'activecode=1000',
      'activecode=abc',
      'activecode=',
      'sealedcode=101',
      'activecode=200&activecode=201',
    ]) {
      const c = await RawConnection.open(broker.url);
      try {
        // Raw, so an interim 101 would show as what it is rather than be swallowed by a client.
        await c.write(rawRequest('GET', `/v1/sys/health?${query}`));
        const res = await c.read();
        expectClientError(res, 400, /must be (an HTTP status code from 200 to 599|given once)/);
      } finally {
        c.close();
      }
    }
  });

  it('still answers with any code from 200 to 599', async () => {
    for (const code of [200, 250, 429, 599]) {
      const res = await api(broker, 'GET', `sys/health?activecode=${code}`, undefined, null);
      expect(res.status).toBe(code);
    }
  });
});

describe('revoke-self', () => {
  it('with the root token is refused with a clear 400, and the root token still works', async () => {
    const res = await api(broker, 'PUT', 'auth/token/revoke-self', {});
    expectClientError(res, 400, /root token cannot revoke itself/);
    expect((await api(broker, 'GET', 'auth/token/lookup-self')).status).toBe(200);
  });

  it('with a broker token still revokes it', async () => {
    const token = await tokenFor('revoker');
    expect((await api(broker, 'PUT', 'auth/token/revoke-self', {}, token)).status).toBe(204);
    expect((await api(broker, 'GET', 'auth/token/lookup-self', undefined, token)).status).toBe(403);
  });
});

describe('values PostgreSQL cannot store, and bodies nested without end', () => {
  it('a login whose claim holds \\u0000 is a 400, and no token is stored', async () => {
    const before = await tokenCount();
    expectClientError(await login('nul-run', { run_id: 'run\u00001' }), 400, /NUL/);
    expectClientError(await login('nul\u0000sub'), 400, /NUL/);
    expect(await tokenCount()).toBe(before);
  });

  it('a body with \\u0000 in a value or a key is a 400, and no lease is made', async () => {
    const before = await leaseCount();
    for (const body of [
      '{"ttl":"60s","extra":"a\\u0000b"}',
      '{"ex\\u0000tra":"x"}',
      '{"nested":{"deep":["ok","\\u0000"]}}',
    ]) {
      expectClientError(await api(broker, 'PUT', 'db/creds/reader', body), 400, /NUL/);
    }
    expectClientError(
      await api(broker, 'PUT', 'sys/leases/renew', '{"lease_id":"db/creds/reader/x\\u0000"}'),
      400,
      /NUL/,
    );
    expect(await leaseCount()).toBe(before);
  });

  it('a body nested 5,000 deep is a 400 (not a stack overflow), and so is one just past the limit; one within it is served', async () => {
    const before = await leaseCount();
    const nest = (depth: number) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    expectClientError(
      await api(broker, 'PUT', 'db/creds/reader', `{"x":${'['.repeat(5000)}${']'.repeat(5000)}}`),
      400,
      /deeper than 64/,
    );
    expectClientError(await api(broker, 'PUT', 'db/creds/reader', nest(5000)), 400, /deeper than 64/);
    expectClientError(await api(broker, 'PUT', 'db/creds/reader', nest(65)), 400, /deeper than 64/);
    expect(await leaseCount()).toBe(before);
    const ok = await api(
      broker,
      'PUT',
      'sys/leases/lookup',
      nest(64).replace('{"a":', '{"lease_id":"db/creds/reader/none","a":'),
    );
    expectClientError(ok, 400, /^invalid lease$/); // parsed, routed and answered: the depth was accepted
  });
});

describe("someone else's lease answers as one that does not exist", () => {
  it('lookup: the same status and body for a lease of another caller as for an unknown id', async () => {
    const owner = await tokenFor('owner');
    const other = await tokenFor('other');
    const issued = await api(broker, 'PUT', 'db/creds/reader', {}, owner);
    expect(issued.status).toBe(200);
    const leaseId: string = issued.body.lease_id;
    const unknownId = `${leaseId.slice(0, leaseId.lastIndexOf('/'))}/AAAAAAAAAAAAAAAAAAAAAAAA`;

    expect((await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: leaseId }, owner)).status).toBe(200);
    const theirs = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: leaseId }, other);
    const unknown = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: unknownId }, other);
    expect({ status: theirs.status, body: theirs.body }).toEqual({ status: unknown.status, body: unknown.body });
    expectClientError(theirs, 400, /^invalid lease$/);

    const renewTheirs = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: leaseId }, other);
    const renewUnknown = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: unknownId }, other);
    expect({ status: renewTheirs.status, body: renewTheirs.body }).toEqual({
      status: renewUnknown.status,
      body: renewUnknown.body,
    });
    expect(renewTheirs.status).toBe(400);
  });
});

describe('null means "not given"', () => {
  it('renew with "increment": null renews by the role default', async () => {
    const issued = await api(broker, 'PUT', 'db/creds/reader', { ttl: '60s' });
    expect(issued.body.lease_duration).toBe(60);
    const res = await api(broker, 'PUT', 'sys/leases/renew', { lease_id: issued.body.lease_id, increment: null });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.lease_duration).toBe(DEFAULT_TTL);
    const [row] = await adminQuery(storeDb, 'SELECT expires_at FROM credbroker_leases WHERE id = $1', [
      issued.body.lease_id,
    ]);
    expect(Math.abs(new Date(row.expires_at).getTime() - Date.now() - DEFAULT_TTL * 1000)).toBeLessThan(5000);
  });

  it('creds with "ttl": null issue for the role default', async () => {
    const res = await api(broker, 'PUT', 'db/creds/reader', { ttl: null });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.lease_duration).toBe(DEFAULT_TTL);
  });

  it('renew-self with "increment": null renews the token', async () => {
    const token = await tokenFor('renewer');
    const res = await api(broker, 'PUT', 'auth/token/renew-self', { increment: null }, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.auth.lease_duration).toBeGreaterThan(0);
  });
});
