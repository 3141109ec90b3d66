import http from 'node:http';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'lcbad';
const MAX_TTL_SECONDS = 3600;
const DEFAULT_TTL_SECONDS = 600;

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
interface Res {
  status: number;
  text: string;
  body: any;
}

let broker: TestBroker;
let storeDb: string;
let group: string;
/** A live lease that every refused request must leave alone. */
let sentinel: { leaseId: string; username: string };
/** Every password this file has been handed: no other response may contain one. */
const secrets: string[] = [];

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  group = target.group;
  storeDb = await freshStoreDatabase('lcbad');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      reader: { member_of: [target.group], default_ttl: `${DEFAULT_TTL_SECONDS}s`, max_ttl: `${MAX_TTL_SECONDS}s` },
    },
  });
  const res = await send('PUT', 'db/creds/reader', { body: '{}' });
  expect(res.status, res.text).toBe(200);
  sentinel = { leaseId: res.body.lease_id, username: res.body.data.username };
  secrets.push(res.body.data.password);
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

/**
 * One request through node:http, so the path goes out exactly as written (fetch would resolve
 * `..` segments and refuses verbs like LIST). `path` is relative to /v1/.
 */
function send(
  method: string,
  path: string,
  opts: { body?: string | Buffer; token?: string | null; headers?: Record<string, string> } = {},
): Promise<Res> {
  const url = new URL(broker.url);
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? ROOT_TOKEN : opts.token;
  if (token !== null) headers['x-vault-token'] = token;
  if (opts.body !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(opts.body));
  }
  Object.assign(headers, opts.headers);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: Number(url.port), method, path: `/v1/${path}`, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: any;
          try {
            body = text ? JSON.parse(text) : null;
          } catch {
            body = text;
          }
          resolve({ status: res.statusCode ?? 0, text, body });
        });
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const json = (value: unknown) => ({ body: JSON.stringify(value) });

/** Everything a refused request could have touched: the lease rows and this file's roles. */
async function snapshot() {
  const leases = await adminQuery(
    storeDb,
    'SELECT id, state, expires_at, last_renewal, revoke_reason, attempts FROM credbroker_leases ORDER BY id',
  );
  const roles = await adminQuery(
    'postgres',
    `SELECT rolname, rolvaliduntil FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname`,
    [`${PREFIX}\\_%`],
  );
  return { leaseCount: leases.length, leases: JSON.stringify(leases), roles: JSON.stringify(roles) };
}

function expectNoSecret(res: Res) {
  for (const secret of secrets) expect(res.text).not.toContain(secret);
  expect(res.text).not.toContain('SCRAM-SHA-256');
  expect(res.text).not.toMatch(/"password"/);
}

/** A clear client error in Vault's shape: `{"errors": [non-empty strings]}`, no stack, no secret. */
function expectClientError(res: Res, status: number, message?: string | RegExp) {
  expect(res.status, res.text).toBe(status);
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(500);
  expect(Object.keys(res.body ?? {}), res.text).toEqual(['errors']);
  const errors: unknown[] = res.body.errors;
  expect(errors.length).toBeGreaterThan(0);
  for (const e of errors) {
    expect(typeof e).toBe('string');
    expect((e as string).trim()).not.toBe('');
  }
  if (typeof message === 'string') expect(errors).toContain(message);
  else if (message) expect(errors[0]).toMatch(message);
  expect(res.text).not.toMatch(/\bat .*\.[tj]s:\d+/);
  expect(res.text).not.toContain('.ts:');
  expect(res.text).not.toContain('node_modules');
  expectNoSecret(res);
}

/** Sends the request, expects a clean client error, and that the store and target are unchanged. */
async function expectRefused(request: () => Promise<Res>, status: number, message?: string | RegExp): Promise<Res> {
  const before = await snapshot();
  const res = await request();
  expectClientError(res, status, message);
  expect(await snapshot()).toEqual(before);
  return res;
}

const TTL_ERROR = /^ttl must be a non-negative whole number of seconds or a duration/;

describe('refused requests: a clear 4xx, nothing changed, no secret in the body', () => {
  it('an unknown mount answers 404', async () => {
    await expectRefused(
      () => send('PUT', 'nope/creds/reader', json({})),
      404,
      /^no handler for route "nope\/creds\/reader"/,
    );
    await expectRefused(() => send('GET', 'nope/creds/reader'), 404, /^no handler for route/);
    await expectRefused(() => send('GET', 'sys/creds/reader'), 404, /^no handler for route/);
  });

  it('an unknown role answers 400 "unknown role: x"', async () => {
    await expectRefused(() => send('PUT', 'db/creds/x', json({})), 400, 'unknown role: x');
    await expectRefused(() => send('GET', 'db/creds/x'), 400, 'unknown role: x');
  });

  it('a negative ttl answers 400', async () => {
    for (const ttl of [-5, '-5', '-5s', '-1h']) {
      await expectRefused(() => send('PUT', 'db/creds/reader', json({ ttl })), 400, TTL_ERROR);
    }
    await expectRefused(() => send('GET', 'db/creds/reader?ttl=-5'), 400, TTL_ERROR);
  });

  it('a garbage ttl answers 400', async () => {
    for (const ttl of ['abc', '1x', 1.5, '1.5', 'h', '1h-', '99999999999999999999']) {
      await expectRefused(() => send('PUT', 'db/creds/reader', json({ ttl })), 400, TTL_ERROR);
    }
    // null is "not given" (the role's default), as Vault reads it: api-edge-defects tests it.
    for (const ttl of [true, {}, []]) {
      await expectRefused(() => send('PUT', 'db/creds/reader', json({ ttl })), 400, /^ttl: /);
    }
    await expectRefused(() => send('GET', 'db/creds/reader?ttl=abc'), 400, TTL_ERROR);
    await expectRefused(() => send('GET', 'db/creds/reader?ttl=1&ttl=2'), 400, /^ttl: /);
  });

  it('a malformed JSON body answers 400', async () => {
    for (const body of ['{"ttl": ', '{ttl: 1}', "{'ttl': 1}", '{"ttl":"1h"} trailing', 'null', '"a string"', '42']) {
      await expectRefused(() => send('PUT', 'db/creds/reader', { body }), 400, /^failed to parse JSON input/);
    }
    await expectRefused(
      () => send('PUT', 'db/creds/reader', { body: '[]' }),
      400,
      'the request body must be a JSON object',
    );
    await expectRefused(
      () => send('PUT', 'sys/leases/renew', { body: `{"lease_id": "${sentinel.leaseId}"` }),
      400,
      /^failed to parse JSON input/,
    );
  });

  it('a body over 64 kB answers 413', async () => {
    const big = JSON.stringify({ ttl: '1h', padding: 'x'.repeat(70 * 1024) });
    await expectRefused(() => send('PUT', 'db/creds/reader', { body: big }), 413, 'request body too large');
    await expectRefused(() => send('PUT', 'sys/leases/revoke', { body: big }), 413, 'request body too large');
    await expectRefused(
      () => send('PUT', 'db/creds/reader', { body: big, token: null }),
      413,
      'request body too large',
    );
  });

  it('role names with quotes, semicolons or dot segments answer 400 "unknown role" and create nothing', async () => {
    const names = [
      `a"; DROP ROLE x;--`,
      `'; DROP ROLE ${PREFIX}_readers; --`,
      'reader"',
      'reader;',
      "reader'",
      'READER',
      '..',
      '.',
    ];
    for (const name of names) {
      await expectRefused(
        () => send('PUT', `db/creds/${encodeURIComponent(name)}`, json({})),
        400,
        `unknown role: ${name}`,
      );
    }
    // Dot segments sent literally, as a client that does not normalise the path would.
    await expectRefused(() => send('PUT', 'db/creds/..', json({})), 400, 'unknown role: ..');
    await expectRefused(() => send('GET', 'db/creds/%2E%2E'), 400, 'unknown role: ..');
    // Extra segments make it no route at all.
    await expectRefused(() => send('PUT', 'db/creds/../creds/reader', json({})), 404, /^no handler for route/);
    await expectRefused(
      () => send('PUT', `db/creds/${encodeURIComponent('reader/..')}`, json({})),
      404,
      /^no handler for route/,
    );
    await expectRefused(() => send('GET', 'db/creds/%E0%A4%A'), 400, 'malformed URL encoding in the path');
    expect(await roleExists(group)).toBe(true);
  });

  it('lease ids with quotes or semicolons: lookup answers 400 "invalid lease", renew 400 "lease not found"', async () => {
    const ids = [
      `${sentinel.leaseId}'`,
      `${sentinel.leaseId}"; DROP TABLE credbroker_leases; --`,
      `'; DELETE FROM credbroker_leases; --`,
      `db/creds/reader/x' OR '1'='1`,
      'db/creds/reader/%',
      `db/creds/reader/../reader/${sentinel.leaseId.split('/').pop()}`,
    ];
    for (const id of ids) {
      await expectRefused(() => send('PUT', 'sys/leases/lookup', json({ lease_id: id })), 400, 'invalid lease');
      await expectRefused(
        () => send('PUT', 'sys/leases/renew', json({ lease_id: id, increment: 60 })),
        400,
        'lease not found',
      );
      await expectRefused(
        () => send('PUT', `sys/leases/renew/${encodeURIComponent(id)}`, json({ increment: 60 })),
        400,
        'lease not found',
      );
    }
    const tooLong = `db/creds/reader/${'A'.repeat(300)}`;
    for (const path of ['sys/leases/lookup', 'sys/leases/renew', 'sys/leases/revoke']) {
      await expectRefused(() => send('PUT', path, json({ lease_id: tooLong })), 400, /lease_id is too long/);
    }
  });

  it('revoke of a lease id with quotes or semicolons is a no-op 204, as for any unknown lease', async () => {
    for (const id of [
      `${sentinel.leaseId}'`,
      `${sentinel.leaseId}; DROP ROLE ${sentinel.username}`,
      `'; DELETE FROM credbroker_leases; --`,
      'db/creds/reader/%',
    ]) {
      for (const request of [
        () => send('PUT', 'sys/leases/revoke', json({ lease_id: id })),
        () => send('PUT', `sys/leases/revoke/${encodeURIComponent(id)}`),
      ]) {
        const before = await snapshot();
        const res = await request();
        expect(res.status, res.text).toBe(204);
        expect(res.text).toBe('');
        expect(await snapshot()).toEqual(before);
      }
    }
    expect(await roleExists(sentinel.username)).toBe(true);
  });

  it('revoke-prefix, revoke-force and LIST with ".." segments, quotes or wildcards answer 400 and revoke nothing', async () => {
    const prefixes = [
      '..',
      'db/..',
      'db/creds/../creds/reader',
      `db/creds/reader${encodeURIComponent(`'; DROP ROLE ${sentinel.username}; --`)}`,
      `db/creds/${encodeURIComponent('"')}`,
      'db/creds/%25',
      'db/creds/%2E%2E',
      'db//creds/',
    ];
    for (const prefix of prefixes) {
      await expectRefused(() => send('PUT', `sys/leases/revoke-prefix/${prefix}`), 400, /^invalid lease prefix/);
      await expectRefused(() => send('PUT', `sys/leases/revoke-force/${prefix}`), 400, /^invalid lease prefix/);
      await expectRefused(() => send('GET', `sys/leases/lookup/${prefix}?list=true`), 400, /^invalid lease prefix/);
    }
    // A control character cannot match any route at all.
    await expectRefused(() => send('PUT', 'sys/leases/revoke-prefix/db/creds/reader%0A'), 404, /^no handler for route/);
    expect(await roleExists(sentinel.username)).toBe(true);
    const [row] = await adminQuery(storeDb, 'SELECT state FROM credbroker_leases WHERE id = $1', [sentinel.leaseId]);
    expect(row.state).toBe('active');
  });

  it('a request without a token answers 403 "permission denied"', async () => {
    const requests: [string, string, string?][] = [
      ['PUT', 'db/creds/reader', '{}'],
      ['GET', 'db/creds/reader'],
      ['PUT', 'sys/leases/lookup', JSON.stringify({ lease_id: sentinel.leaseId })],
      ['PUT', 'sys/leases/revoke', JSON.stringify({ lease_id: sentinel.leaseId })],
      ['PUT', 'sys/leases/revoke-prefix/db/creds/reader'],
      ['PUT', 'sys/leases/revoke-force/db/'],
      ['GET', 'sys/leases/lookup/db/creds/?list=true'],
      // An unknown path does not reveal that it is unknown.
      ['GET', 'nope/anything'],
    ];
    for (const [method, path, body] of requests) {
      await expectRefused(() => send(method, path, { body, token: null }), 403, 'permission denied');
    }
  });

  it('a wrong token answers 403 "permission denied"', async () => {
    const wrong: Record<string, string>[] = [
      { 'x-vault-token': 'wrong-token-0123456789' },
      { 'x-vault-token': `${ROOT_TOKEN}x` },
      { 'x-vault-token': ROOT_TOKEN.slice(0, -1) },
      { 'x-vault-token': ROOT_TOKEN.toUpperCase() },
      { authorization: 'Bearer wrong-token-0123456789' },
      { authorization: ROOT_TOKEN },
      { authorization: `Basic ${Buffer.from(`root:${ROOT_TOKEN}`).toString('base64')}` },
      { authorization: `bearer ${ROOT_TOKEN}x` },
    ];
    for (const headers of wrong) {
      await expectRefused(
        () => send('PUT', 'db/creds/reader', { body: '{}', token: null, headers }),
        403,
        'permission denied',
      );
      await expectRefused(
        () => send('PUT', 'sys/leases/revoke-prefix/db/', { token: null, headers }),
        403,
        'permission denied',
      );
    }
  });

  it('a wrong verb on creds answers 405', async () => {
    for (const method of ['DELETE', 'PATCH', 'OPTIONS']) {
      await expectRefused(() => send(method, 'db/creds/reader'), 405, 'unsupported operation');
    }
    await expectRefused(
      () => send('DELETE', 'sys/leases/revoke', json({ lease_id: sentinel.leaseId })),
      405,
      'unsupported operation',
    );
    await expectRefused(() => send('GET', 'db/creds/reader?list=true'), 405, 'unsupported operation');
  });

  it('renew, lookup and revoke without a lease_id answer 400 "lease_id must be specified"', async () => {
    for (const path of ['sys/leases/renew', 'sys/leases/lookup', 'sys/leases/revoke']) {
      await expectRefused(() => send('PUT', path, json({})), 400, 'lease_id must be specified');
      await expectRefused(() => send('PUT', path), 400, 'lease_id must be specified');
      await expectRefused(() => send('PUT', path, json({ lease_id: '' })), 400, 'lease_id must be specified');
      await expectRefused(() => send('PUT', path, json({ lease_id: 42 })), 400, /lease_id must be specified/);
    }
  });
});

describe('accepted edge cases', () => {
  it('a ttl above max_ttl is issued capped at max_ttl, with a warning in warnings', async () => {
    const before = await snapshot();
    const res = await send('PUT', 'db/creds/reader', json({ ttl: '48h' }));
    expect(res.status, res.text).toBe(200);
    secrets.push(res.body.data.password);
    expect(res.body.lease_duration).toBe(MAX_TTL_SECONDS);
    expect(res.body.warnings).toEqual([
      `TTL of "${48 * 3600}s" exceeded the effective max_ttl of "${MAX_TTL_SECONDS}s"; TTL value is capped accordingly`,
    ]);
    const [row] = await adminQuery(storeDb, 'SELECT issued_at, expires_at FROM credbroker_leases WHERE id = $1', [
      res.body.lease_id,
    ]);
    expect(row.expires_at.getTime() - row.issued_at.getTime()).toBe(MAX_TTL_SECONDS * 1000);
    expect((await snapshot()).leaseCount).toBe(before.leaseCount + 1);

    expect((await send('PUT', 'sys/leases/revoke', json({ lease_id: res.body.lease_id }))).status).toBe(204);
    expect(await roleExists(res.body.data.username)).toBe(false);
  });

  it('renew with a increment of ten years is capped at max_ttl, with a warning', async () => {
    const res = await send('PUT', 'sys/leases/renew', json({ lease_id: sentinel.leaseId, increment: '87600h' }));
    expect(res.status, res.text).toBe(200);
    expect(res.body.lease_duration).toBeLessThanOrEqual(MAX_TTL_SECONDS);
    expect(res.body.warnings[0]).toMatch(/capped/);
    expectNoSecret(res);
  });

  it('an empty ttl is taken as no ttl: the role default applies (as in Vault)', async () => {
    const res = await send('PUT', 'db/creds/reader', json({ ttl: '' }));
    expect(res.status, res.text).toBe(200);
    secrets.push(res.body.data.password);
    expect(res.body.lease_duration).toBe(DEFAULT_TTL_SECONDS);
    expect(res.body.warnings).toBeNull();
    expect((await send('PUT', 'sys/leases/revoke', json({ lease_id: res.body.lease_id }))).status).toBe(204);
  });

  it('Authorization: Bearer <root token> is accepted like X-Vault-Token', async () => {
    const headers = { authorization: `Bearer ${ROOT_TOKEN}` };
    const lookup = await send('PUT', 'sys/leases/lookup', {
      ...json({ lease_id: sentinel.leaseId }),
      token: null,
      headers,
    });
    expect(lookup.status, lookup.text).toBe(200);
    expect(lookup.body.data.id).toBe(sentinel.leaseId);
    const list = await send('GET', 'sys/leases/lookup/db/creds/?list=true', { token: null, headers });
    expect(list.status, list.text).toBe(200);
    expect(list.body.data.keys).toEqual(['reader/']);
  });

  it("sys/health answers 200 without a token, with Vault's fields, and honours ?activecode=299", async () => {
    const res = await send('GET', 'sys/health', { token: null });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ initialized: true, sealed: false, standby: false });
    expect(typeof res.body.version).toBe('string');
    expect(res.body.version).not.toBe('');
    expect(typeof res.body.server_time_utc).toBe('number');
    expectNoSecret(res);

    const custom = await send('GET', 'sys/health?activecode=299', { token: null });
    expect(custom.status).toBe(299);
    expect(custom.body).toMatchObject({ initialized: true, sealed: false, standby: false, version: res.body.version });
    // A wrong token does not matter on the public endpoint; a nonsense code is refused (api-edge-defects tests the range).
    expect((await send('GET', 'sys/health?activecode=abc', { token: 'wrong-token-0123456789' })).status).toBe(400);
  });
});

describe('edge cases that once answered 500', () => {
  it('renew with an increment beyond any sensible TTL answers a 4xx, never 500', async () => {
    for (const increment of ['9999999999h', Number.MAX_SAFE_INTEGER]) {
      const res = await send('PUT', 'sys/leases/renew', json({ lease_id: sentinel.leaseId, increment }));
      expectClientError(res, 400);
    }
  });

  it('a body declared gzip that does not inflate answers 400, not 500', async () => {
    const res = await send('PUT', 'db/creds/reader', { body: '{"ttl":"1h"}', headers: { 'content-encoding': 'gzip' } });
    expectClientError(res, 400);
  });

  it('HEAD on creds mints nothing: 405', async () => {
    const res = await send('HEAD', 'db/creds/reader');
    expect(res.status).toBe(405);
  });

  it('a real gzip body is accepted (the control for the case above)', async () => {
    const res = await send('PUT', 'sys/leases/lookup', {
      body: gzipSync(JSON.stringify({ lease_id: sentinel.leaseId })),
      headers: { 'content-encoding': 'gzip' },
    });
    expect(res.status, res.text).toBe(200);
    expect(res.body.data.id).toBe(sentinel.leaseId);
  });
});
