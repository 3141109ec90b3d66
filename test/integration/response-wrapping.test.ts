import { createHash } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodeVault from 'node-vault';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hmacField } from '../../src/audit/hmac.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { randomSecret } from '../../src/random.js';
import { tidyOnce } from '../../src/store/tidy.js';
import { open } from '../../src/wrapping/seal.js';
import { ROOT_TOKEN, baseTestConfig } from '../support/broker.js';
import { sweepLogPath } from '../support/secret-recorder.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  pgUrl,
} from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'rspwrap';
const HMAC_KEY = `audit-key-${randomSecret()}`;
const INVALID = 'wrapping token is not valid or does not exist';
const dir = mkdtempSync(join(tmpdir(), 'credbroker-wrapping-'));
const auditPath = join(dir, 'audit.jsonl');

let broker: Broker;
let storeDb: string;
let cluster: JwksServer;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('rspwrap');
  const config = configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
      },
    },
    auth: { kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['etl']) }) },
    policies: { etl: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }] },
    audit: { hmac_key: HMAC_KEY, file: { path: auditPath }, postgres: true },
  });
  // Logged at the production level into the run's secret sweep, when one runs.
  const logPath = sweepLogPath('broker');
  const log = logPath ? createLogger('info', createWriteStream(logPath, { flags: 'a' })) : createLogger('silent');
  broker = await startBroker(config, { log, reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  body: any;
  text: string;
}

/** One request as a Vault client sends it; `wrapTtl` sets X-Vault-Wrap-TTL. */
async function call(
  method: string,
  path: string,
  opts: { body?: unknown; token?: string | null; wrapTtl?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const token = opts.token === undefined ? ROOT_TOKEN : opts.token;
  if (token !== null) headers['x-vault-token'] = token;
  if (opts.wrapTtl !== undefined) headers['x-vault-wrap-ttl'] = opts.wrapTtl;
  const res = await fetch(`${broker.url}/v1/${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, text };
}

async function wrappedIssue(wrapTtl = '300s'): Promise<{ token: string; answer: Answer }> {
  const answer = await call('PUT', 'db/creds/reader', { body: {}, wrapTtl });
  expect(answer.status, answer.text).toBe(200);
  return { token: answer.body.wrap_info.token, answer };
}

const unwrap = (token: string) => call('PUT', 'sys/wrapping/unwrap', { token });
const hashOf = (token: string) => createHash('sha256').update(token).digest();
const leaseCount = async () =>
  (await adminQuery<{ n: number }>(storeDb, 'SELECT count(*)::int AS n FROM credbroker_leases'))[0]!.n;
const leaseState = async (id: string) =>
  (await adminQuery<{ state: string }>(storeDb, 'SELECT state FROM credbroker_leases WHERE id = $1', [id]))[0]?.state;
const roleExists = async (name: string) =>
  (await adminQuery('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).length > 0;

async function readsItems(data: { username: string; password: string; host: string; port: number; database: string }) {
  const client = await loginAs(data);
  try {
    return (await client.query('SELECT name FROM public.items ORDER BY id')).rows.map((r) => r.name);
  } finally {
    await client.end();
  }
}

/** Every row of every table of the store, as JSON text (bytea as \x hex). */
async function everyStoreRow(): Promise<{ table: string; row: string }[]> {
  const tables = await adminQuery<{ table_name: string }>(
    storeDb,
    `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`,
  );
  expect(tables.map((t) => t.table_name)).toContain('credbroker_wrapped_responses');
  const out: { table: string; row: string }[] = [];
  for (const { table_name } of tables) {
    const rows = await adminQuery<{ j: string }>(
      storeDb,
      `SELECT row_to_json(t)::text AS j FROM ${pg.escapeIdentifier(table_name)} t`,
    );
    out.push(...rows.map((r) => ({ table: table_name, row: r.j })));
  }
  return out;
}

/** The ways a secret could sit in a row: as it is, base64, base64url, hex (a bytea column). */
const encodings = (secret: string) => {
  const bytes = Buffer.from(secret, 'utf8');
  return [secret, bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('hex')];
};

function auditRecords(): AuditRecord[] {
  return readFileSync(auditPath, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditRecord);
}

describe('a wrapped creds request', () => {
  it('answers Vault’s wrapped shape with no secret in it, and the lease it wraps is issued and active', async () => {
    const before = await leaseCount();
    const { answer } = await wrappedIssue('5m');
    const { body } = answer;
    expect(Object.keys(body).sort()).toEqual(
      ['auth', 'data', 'lease_duration', 'lease_id', 'renewable', 'request_id', 'warnings', 'wrap_info'].sort(),
    );
    expect(body).toMatchObject({
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data: null,
      warnings: null,
      auth: null,
    });
    expect(body.request_id).toEqual(expect.any(String));
    const info = body.wrap_info;
    expect(info.token).toMatch(/^cbw\.[A-Za-z0-9_-]{43}$/);
    expect(info.accessor).toMatch(/^[a-z0-9]{24}$/);
    expect(info.ttl).toBe(300);
    expect(info.creation_path).toBe('db/creds/reader');
    expect(info.creation_time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
    expect(Math.abs(Date.parse(info.creation_time) - Date.now())).toBeLessThan(60_000);
    expect(info.wrapped_accessor).toBeUndefined();
    expect(answer.text).not.toMatch(/password|username/);
    // Intent first, unchanged: the lease is in the table, active, before its answer is sealed.
    expect(await leaseCount()).toBe(before + 1);
    const [lease] = await adminQuery(
      storeDb,
      'SELECT id, state FROM credbroker_leases ORDER BY issued_at DESC LIMIT 1',
    );
    expect(lease.state).toBe('active');
    expect(lease.id).toMatch(/^db\/creds\/reader\//);
  });

  it('unwraps once, with the token as X-Vault-Token, to a credential that logs in to PostgreSQL; a second unwrap is refused', async () => {
    const { token } = await wrappedIssue();
    const first = await unwrap(token);
    expect(first.status, first.text).toBe(200);
    expect(first.body.lease_id).toMatch(/^db\/creds\/reader\//);
    expect(first.body.wrap_info).toBeNull();
    expect(first.body.warnings).toBeNull();
    expect(await readsItems(first.body.data)).toEqual(['one', 'two']);
    expect(await leaseState(first.body.lease_id)).toBe('active');

    const second = await unwrap(token);
    expect(second.status).toBe(400);
    expect(second.body).toEqual({ errors: [INVALID] });
  });

  it('unwraps with the token in the body, under another token (root)', async () => {
    const { token } = await wrappedIssue();
    const first = await call('PUT', 'sys/wrapping/unwrap', { body: { token } });
    expect(first.status, first.text).toBe(200);
    expect(await readsItems(first.body.data)).toEqual(['one', 'two']);
    const second = await call('POST', 'sys/wrapping/unwrap', { body: { token } });
    expect(second.status).toBe(400);
    expect(second.body.errors).toEqual([INVALID]);
  });

  it('of several concurrent unwraps of one token, exactly one gets the credential', async () => {
    for (let round = 0; round < 3; round++) {
      const { token } = await wrappedIssue();
      const answers = await Promise.all(Array.from({ length: 8 }, () => unwrap(token)));
      const won = answers.filter((a) => a.status === 200);
      expect(won).toHaveLength(1);
      expect(answers.filter((a) => a.status === 400 && a.body.errors[0] === INVALID)).toHaveLength(7);
      expect(await readsItems(won[0]!.body.data)).toEqual(['one', 'two']);
    }
  });

  it('leaves in the store neither the password nor anything that decrypts to it without the token', async () => {
    const { token } = await wrappedIssue();
    const rowsWhileWrapped = await everyStoreRow();
    const [sealedRow] = await adminQuery(
      storeDb,
      'SELECT salt, iv, ciphertext, auth_tag FROM credbroker_wrapped_responses WHERE token_hash = $1',
      [hashOf(token)],
    );
    expect(sealedRow).toBeDefined();

    const unwrapped = await unwrap(token);
    expect(unwrapped.status, unwrapped.text).toBe(200);
    const { password, username } = unwrapped.body.data;
    expect(password.length).toBeGreaterThanOrEqual(32);
    const rowsAfter = await everyStoreRow();

    for (const { table, row } of [...rowsWhileWrapped, ...rowsAfter]) {
      for (const secret of [password, token]) {
        for (const encoded of encodings(secret)) expect(row.includes(encoded), `${table}: ${row}`).toBe(false);
      }
    }
    // The token's row is gone once unwrapped; the hash was all the store had of the token.
    expect(rowsWhileWrapped.some((r) => r.table === 'credbroker_wrapped_responses')).toBe(true);
    expect(rowsAfter.some((r) => r.row.includes(hashOf(token).toString('hex')))).toBe(false);

    // What the store held was the answer, and only the token opens it.
    const sealed = {
      salt: sealedRow.salt,
      iv: sealedRow.iv,
      ciphertext: sealedRow.ciphertext,
      tag: sealedRow.auth_tag,
    };
    const opened = JSON.parse(open(token, sealed, hashOf(token)).toString('utf8'));
    expect(opened.data).toMatchObject({ username, password });
    for (const wrong of [`cbw.${randomSecret()}`, `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`]) {
      expect(() => open(wrong, sealed, hashOf(token))).toThrow();
    }
    for (const fromStore of [
      hashOf(token).toString('hex'),
      hashOf(token).toString('base64'),
      sealedRow.salt.toString('hex'),
    ]) {
      expect(() => open(fromStore, sealed, hashOf(token))).toThrow();
    }
  });

  it('unwraps after the lease died with the credential and a warning naming the lease state', async () => {
    const { token } = await wrappedIssue();
    const [lease] = await adminQuery(storeDb, 'SELECT id FROM credbroker_leases ORDER BY issued_at DESC LIMIT 1');
    const revoked = await call('PUT', 'sys/leases/revoke', { body: { lease_id: lease.id } });
    expect(revoked.status, revoked.text).toBe(204);
    const answer = await unwrap(token);
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body.lease_id).toBe(lease.id);
    expect(answer.body.data.password).toEqual(expect.any(String));
    expect(answer.body.warnings).toEqual([`lease ${lease.id} is no longer active (revoked)`]);
    await expect(loginAs(answer.body.data)).rejects.toThrow();
  });

  it('refuses a bad or out-of-range X-Vault-Wrap-TTL with a 400 before anything is issued', async () => {
    const before = await leaseCount();
    const roles = await adminQuery('postgres', 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname LIKE $1', [
      `${PREFIX}\\_%`,
    ]);
    for (const ttl of ['0', '0s', '-5', '500ms', 'abc', '31d', '2592001', '5 minutes']) {
      const answer = await call('PUT', 'db/creds/reader', { body: {}, wrapTtl: ttl });
      expect(answer.status, `${ttl}: ${answer.text}`).toBe(400);
      expect(answer.body.errors[0]).toMatch(/wrap ttl|X-Vault-Wrap-TTL/i);
    }
    expect(await leaseCount()).toBe(before);
    const after = await adminQuery('postgres', 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname LIKE $1', [
      `${PREFIX}\\_%`,
    ]);
    expect(after[0].n).toBe(roles[0].n);
    // The longest accepted TTL is 30 days.
    const longest = await call('PUT', 'db/creds/reader', { body: {}, wrapTtl: '720h' });
    expect(longest.status, longest.text).toBe(200);
    expect(longest.body.wrap_info.ttl).toBe(2_592_000);
  });

  it('answers 503 and takes the lease back when the wrapped answer cannot be stored', async () => {
    await adminQuery(storeDb, 'ALTER TABLE credbroker_wrapped_responses RENAME TO credbroker_wrapped_away');
    let answer: Answer;
    try {
      answer = await call('PUT', 'db/creds/reader', { body: {}, wrapTtl: '60' });
    } finally {
      await adminQuery(storeDb, 'ALTER TABLE credbroker_wrapped_away RENAME TO credbroker_wrapped_responses');
    }
    expect(answer.status, answer.text).toBe(503);
    expect(answer.text).not.toMatch(/password|wrap_info/);
    const [lease] = await adminQuery(
      storeDb,
      `SELECT id, state, revoke_handle FROM credbroker_leases ORDER BY issued_at DESC LIMIT 1`,
    );
    expect(lease.state).toBe('revoked');
    expect(await roleExists(lease.revoke_handle.username)).toBe(false);
    // The table is back: wrapping works again.
    expect((await call('PUT', 'db/creds/reader', { body: {}, wrapTtl: '60' })).status).toBe(200);
  });
});

describe('a wrapped login whose answer cannot be stored', () => {
  it('answers 503 and revokes the broker token it minted', async () => {
    const jwt = await cluster.sign(kubernetesClaims());
    await adminQuery(storeDb, 'ALTER TABLE credbroker_wrapped_responses RENAME TO credbroker_wrapped_away');
    let answer: Answer;
    try {
      answer = await call('PUT', 'auth/kubernetes/login', { body: { role: 'etl', jwt }, token: null, wrapTtl: '60' });
    } finally {
      await adminQuery(storeDb, 'ALTER TABLE credbroker_wrapped_away RENAME TO credbroker_wrapped_responses');
    }
    expect(answer.status, answer.text).toBe(503);
    expect(answer.text).not.toMatch(/cbt\./);
    const [token] = await adminQuery(
      storeDb,
      'SELECT revoked_at FROM credbroker_tokens ORDER BY issued_at DESC LIMIT 1',
    );
    expect(token.revoked_at).not.toBeNull();
  });
});

describe('lookup, rewrap, expiry', () => {
  it('lookup tells the path, creation time and TTL of a live token, shows no secret and leaves it unwrappable', async () => {
    const { token, answer } = await wrappedIssue('2m');
    const looked = await call('PUT', 'sys/wrapping/lookup', { token });
    expect(looked.status, looked.text).toBe(200);
    expect(looked.body.data).toEqual({
      creation_path: 'db/creds/reader',
      creation_time: new Date(answer.body.wrap_info.creation_time).toISOString(),
      creation_ttl: 120,
    });
    expect(looked.text).not.toMatch(/password|username/);
    const byBody = await call('POST', 'sys/wrapping/lookup', { body: { token }, token: null });
    expect(byBody.body.data.creation_path).toBe('db/creds/reader');
    expect((await unwrap(token)).status).toBe(200);
    const afterUnwrap = await call('PUT', 'sys/wrapping/lookup', { token });
    expect(afterUnwrap.status).toBe(400);
    expect(afterUnwrap.body.errors).toEqual([INVALID]);
  });

  it('rewrap gives a new token with the same path and TTL; the old one is dead, the new one unwraps to a working credential', async () => {
    const { token } = await wrappedIssue('90s');
    const rewrapped = await call('PUT', 'sys/wrapping/rewrap', { token });
    expect(rewrapped.status, rewrapped.text).toBe(200);
    const info = rewrapped.body.wrap_info;
    expect(info.token).not.toBe(token);
    expect(info).toMatchObject({ ttl: 90, creation_path: 'db/creds/reader' });
    expect(rewrapped.body.data).toBeNull();
    expect(rewrapped.text).not.toMatch(/password/);

    expect((await unwrap(token)).body.errors).toEqual([INVALID]);
    expect((await call('PUT', 'sys/wrapping/rewrap', { token })).body.errors).toEqual([INVALID]);
    const looked = await call('PUT', 'sys/wrapping/lookup', { token: info.token });
    expect(looked.body.data).toMatchObject({ creation_path: 'db/creds/reader', creation_ttl: 90 });
    const unwrapped = await unwrap(info.token);
    expect(unwrapped.status, unwrapped.text).toBe(200);
    expect(await readsItems(unwrapped.body.data)).toEqual(['one', 'two']);
  });

  it('an expired token is refused by unwrap, lookup and rewrap, and the store tidy deletes its row', async () => {
    const { token } = await wrappedIssue('60');
    const live = await wrappedIssue('60');
    await adminQuery(
      storeDb,
      `UPDATE credbroker_wrapped_responses SET creation_time = now() - interval '61 s', expires_at = now() - interval '1 s'
        WHERE token_hash = $1`,
      [hashOf(token)],
    );
    for (const path of ['unwrap', 'lookup', 'rewrap']) {
      const answer = await call('PUT', `sys/wrapping/${path}`, { token });
      expect(answer.status, `${path}: ${answer.text}`).toBe(400);
      expect(answer.body.errors).toEqual([INVALID]);
    }
    const pool = new pg.Pool({ connectionString: pgUrl(storeDb), max: 1 });
    try {
      const tidied = await tidyOnce(pool, {
        storeRetentionSeconds: 86400,
        auditRetentionSeconds: 86400,
        batchSize: 100,
      });
      expect(tidied.wrapped).toEqual([1]);
    } finally {
      await pool.end();
    }
    const rows = await adminQuery(
      storeDb,
      'SELECT token_hash FROM credbroker_wrapped_responses WHERE token_hash = ANY($1)',
      [[hashOf(token), hashOf(live.token)]],
    );
    expect(rows.map((r) => Buffer.from(r.token_hash).equals(hashOf(live.token)))).toEqual([true]);
    expect((await unwrap(live.token)).status).toBe(200);
  });

  it('refuses unknown and malformed tokens with Vault’s 400, never as an invalid broker token', async () => {
    for (const token of [`cbw.${randomSecret()}`, 'not-a-token', ROOT_TOKEN, 'x'.repeat(150)]) {
      for (const path of ['unwrap', 'lookup', 'rewrap']) {
        const byHeader = await call('PUT', `sys/wrapping/${path}`, { token });
        expect(byHeader.status, byHeader.text).toBe(400);
        expect(byHeader.body.errors).toEqual([INVALID]);
        const byBody = await call('PUT', `sys/wrapping/${path}`, { body: { token }, token: null });
        expect(byBody.body.errors).toEqual([INVALID]);
      }
    }
    expect((await call('PUT', 'sys/wrapping/unwrap', { token: null })).body.errors).toEqual([INVALID]);
    // A wrapping token opens its answer and nothing else.
    const { token } = await wrappedIssue();
    const asBrokerToken = await call('PUT', 'db/creds/reader', { body: {}, token });
    expect(asBrokerToken.status).toBe(403);
    expect((await unwrap(token)).status).toBe(200);
  });
});

describe('wrapping other answers', () => {
  it('wraps a login: the broker token is only in the wrapped answer, named by wrapped_accessor, and it works once unwrapped', async () => {
    const jwt = await cluster.sign(kubernetesClaims());
    const login = await call('PUT', 'auth/kubernetes/login', {
      body: { role: 'etl', jwt },
      token: null,
      wrapTtl: '1m',
    });
    expect(login.status, login.text).toBe(200);
    expect(login.body.auth).toBeNull();
    expect(login.text).not.toMatch(/cbt\./);
    const info = login.body.wrap_info;
    expect(info.creation_path).toBe('auth/kubernetes/login');
    const [row] = await adminQuery(storeDb, 'SELECT accessor FROM credbroker_tokens WHERE accessor = $1', [
      info.wrapped_accessor,
    ]);
    expect(row).toBeDefined();

    const unwrapped = await unwrap(info.token);
    expect(unwrapped.status, unwrapped.text).toBe(200);
    expect(unwrapped.body.auth.accessor).toBe(info.wrapped_accessor);
    const clientToken = unwrapped.body.auth.client_token;
    const self = await call('GET', 'auth/token/lookup-self', { token: clientToken });
    expect(self.status, self.text).toBe(200);
    const creds = await call('PUT', 'db/creds/reader', { body: {}, token: clientToken });
    expect(await readsItems(creds.body.data)).toEqual(['one', 'two']);
  });

  it('sys/wrapping/wrap wraps the JSON it is given; without a TTL it is a 400', async () => {
    const wrapped = await call('PUT', 'sys/wrapping/wrap', { body: { foo: 'bar', n: 2 }, wrapTtl: '60' });
    expect(wrapped.status, wrapped.text).toBe(200);
    expect(wrapped.body.wrap_info.creation_path).toBe('sys/wrapping/wrap');
    expect(wrapped.text).not.toMatch(/bar/);
    const unwrapped = await unwrap(wrapped.body.wrap_info.token);
    expect(unwrapped.body.data).toEqual({ foo: 'bar', n: 2 });
    const noTtl = await call('PUT', 'sys/wrapping/wrap', { body: { foo: 'bar' } });
    expect(noTtl.status).toBe(400);
  });
});

describe('the audit log', () => {
  it('records the wrap and the unwraps with the wrapping token HMAC’d, and never the token or the password in clear', async () => {
    const { token, answer } = await wrappedIssue();
    const byHeader = await unwrap(token);
    expect(byHeader.status).toBe(200);
    const other = await wrappedIssue();
    const byBody = await call('PUT', 'sys/wrapping/unwrap', { body: { token: other.token }, token: null });
    expect(byBody.status).toBe(200);

    const text = readFileSync(auditPath, 'utf8');
    for (const secret of [token, other.token, byHeader.body.data.password, byBody.body.data.password]) {
      expect(text.includes(secret)).toBe(false);
    }
    const records = auditRecords();
    const wrapResponse = records.find((r) => r.type === 'response' && r.request_id === answer.body.request_id)!;
    expect(wrapResponse.path).toBe('db/creds/reader');
    expect(wrapResponse.status).toBe(200);
    const wrapData = wrapResponse.data as any;
    expect(wrapData.wrap_info.token).toBe(hmacField(HMAC_KEY, token));
    expect(wrapData.wrap_info.creation_path).toBe('db/creds/reader');
    expect(wrapData.data).toBeNull();

    const headerRequest = records.find((r) => r.type === 'request' && r.request_id === byHeader.body.request_id)!;
    expect(headerRequest.path).toBe('sys/wrapping/unwrap');
    expect(headerRequest.data).toEqual({ client_token: hmacField(HMAC_KEY, token) });
    const bodyRequest = records.find((r) => r.type === 'request' && r.request_id === byBody.body.request_id)!;
    expect(bodyRequest.data).toEqual({ token: hmacField(HMAC_KEY, other.token) });

    const unwrapResponse = records.find((r) => r.type === 'response' && r.request_id === byHeader.body.request_id)!;
    expect(unwrapResponse).toMatchObject({ status: 200, outcome: 'ok', lease_id: byHeader.body.lease_id });
    expect((unwrapResponse.data as any).data.password).toBe(hmacField(HMAC_KEY, byHeader.body.data.password));

    // A refused unwrap is recorded too, with the token it was tried with HMAC'd.
    expect((await unwrap(token)).status).toBe(400);
    const unwraps = auditRecords().filter((r) => r.path === 'sys/wrapping/unwrap');
    const refused = unwraps.at(-1)!;
    expect(refused).toMatchObject({ type: 'response', status: 400, outcome: 'error', error: INVALID });
    const refusedRequest = unwraps.find((r) => r.type === 'request' && r.request_id === refused.request_id)!;
    expect(refusedRequest.data).toEqual({ client_token: hmacField(HMAC_KEY, token) });
  });
});

describe('a Vault client library (node-vault)', () => {
  it('wraps with X-Vault-Wrap-TTL on write and read, and unwraps with its own unwrap(), once', async () => {
    const root = nodeVault({ endpoint: broker.url, token: ROOT_TOKEN });
    const written = await root.write('db/creds/reader', {}, { headers: { 'X-Vault-Wrap-TTL': '60s' } });
    expect(written.data).toBeNull();
    expect(written.wrap_info.ttl).toBe(60);
    const read = await root.read('db/creds/reader', { headers: { 'X-Vault-Wrap-TTL': '2m' } });
    expect(read.wrap_info.ttl).toBe(120);

    // unwrap() with the wrapping token as the client's token …
    const holder = nodeVault({ endpoint: broker.url, token: written.wrap_info.token });
    const unwrapped = await holder.unwrap();
    expect(await readsItems(unwrapped.data)).toEqual(['one', 'two']);
    await expect(holder.unwrap()).rejects.toThrow(INVALID);

    // … and with it as the `token` argument, under the client's own token.
    const viaArgument = await root.unwrap({ token: read.wrap_info.token });
    expect(await readsItems(viaArgument.data)).toEqual(['one', 'two']);
    await expect(root.unwrap({ token: read.wrap_info.token })).rejects.toThrow(INVALID);
  });
});

describe('when the audit log refuses the answer', () => {
  const FAIL_PREFIX = 'rspwrapx';
  let failing: Broker;
  let failingDb: string;

  beforeAll(async () => {
    failingDb = await freshStoreDatabase('rspwrapx');
    const config = configSchema.parse({
      ...baseTestConfig(failingDb),
      mounts: {
        db: {
          type: 'postgres',
          connection_url: pgUrl(target.database),
          username_prefix: FAIL_PREFIX,
          roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
        },
      },
      audit: { hmac_key: HMAC_KEY, postgres: true },
    });
    failing = await startBroker(config, { log: createLogger('silent'), reaper: false });
  });

  afterAll(async () => {
    await failing?.close();
    await dropRolesWithPrefix(FAIL_PREFIX);
  });

  /** The only audit sink refuses the response records `when` (SQL on NEW) picks. */
  const refuseResponses = (when: string) =>
    adminQuery(
      failingDb,
      `CREATE OR REPLACE FUNCTION refuse_responses() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit volume full'; END $$;
       DROP TRIGGER IF EXISTS refuse_responses ON credbroker_audit;
       CREATE TRIGGER refuse_responses BEFORE INSERT ON credbroker_audit FOR EACH ROW
         WHEN (NEW.type = 'response' AND ${when}) EXECUTE FUNCTION refuse_responses();`,
    );
  const latestLease = async () =>
    (
      await adminQuery(
        failingDb,
        'SELECT id, state, revoke_handle FROM credbroker_leases ORDER BY issued_at DESC LIMIT 1',
      )
    )[0];

  it('a wrapped answer that cannot be audited is not sent: its lease is revoked and its sealed row deleted', async () => {
    await refuseResponses(`NEW.data -> 'wrap_info' <> 'null'::jsonb`);
    const res = await fetch(`${failing.url}/v1/db/creds/reader`, {
      method: 'PUT',
      headers: { 'x-vault-token': ROOT_TOKEN, 'x-vault-wrap-ttl': '60' },
      body: '{}',
    });
    const text = await res.text();
    expect(res.status, text).toBe(503);
    expect(text).not.toMatch(/cbw\.|password/);
    const lease = await latestLease();
    expect(lease.state).toBe('revoked');
    expect(await roleExists(lease.revoke_handle.username)).toBe(false);
    expect(await adminQuery(failingDb, 'SELECT 1 FROM credbroker_wrapped_responses')).toEqual([]);
  });

  it.each(['unwrap', 'rewrap'])(
    'a %s that cannot be audited is not sent: the spent token’s lease is revoked',
    async (op) => {
      await adminQuery(failingDb, 'DROP TRIGGER IF EXISTS refuse_responses ON credbroker_audit');
      const wrapped = await fetch(`${failing.url}/v1/db/creds/reader`, {
        method: 'PUT',
        headers: { 'x-vault-token': ROOT_TOKEN, 'x-vault-wrap-ttl': '60' },
        body: '{}',
      });
      expect(wrapped.status).toBe(200);
      const { token } = ((await wrapped.json()) as { wrap_info: { token: string } }).wrap_info;
      await refuseResponses(`NEW.path = 'sys/wrapping/${op}'`);
      const res = await fetch(`${failing.url}/v1/sys/wrapping/${op}`, {
        method: 'PUT',
        headers: { 'x-vault-token': token },
      });
      const text = await res.text();
      expect(res.status, text).toBe(503);
      expect(text).not.toMatch(/password/);
      const lease = await latestLease();
      expect(lease.state).toBe('revoked');
      expect(await roleExists(lease.revoke_handle.username)).toBe(false);
    },
  );
});
