import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hmacField } from '../../src/audit/hmac.js';
import { MAX_RECORD_BYTES, type AuditRecord } from '../../src/audit/record.js';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { randomSecret } from '../../src/random.js';
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

/** Roles are cluster-wide: every role this file creates starts with one of these. */
const PREFIX = 'audtrl';
/** The broker whose only audit sink is a file in a missing directory. */
const FILE_FAIL_PREFIX = 'audtrlx';
/** The broker whose only audit sink is a table that refuses response records. */
const PG_FAIL_PREFIX = 'audtrly';

const HMAC_KEY = `audit-key-${randomSecret()}`;
const SUB = 'system:serviceaccount:etl:reader';
const dir = mkdtempSync(join(tmpdir(), 'credbroker-audit-trail-'));
const auditPath = join(dir, 'audit.jsonl');

const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));

let cluster: JwksServer;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

const mount = (prefix: string) => ({
  type: 'postgres',
  connection_url: pgUrl(target.database),
  username_prefix: prefix,
  roles: {
    reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
    writer: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
  },
});

function brokerConfig(storeDb: string, prefix: string, audit: Record<string, unknown>) {
  return configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: { db: mount(prefix) },
    auth: {
      kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['etl']) }),
    },
    policies: {
      etl: [
        { path: 'db/creds/reader', capabilities: ['read', 'update'] },
        { path: 'db/creds/writer', capabilities: ['deny'] },
      ],
    },
    audit: { hmac_key: HMAC_KEY, ...audit },
  });
}

const start = (storeDb: string, prefix: string, audit: Record<string, unknown>) =>
  startBroker(brokerConfig(storeDb, prefix, audit), { log: createLogger('silent'), reaper: false });

const rolesWithPrefix = async (prefix: string) =>
  (
    await adminQuery<{ rolname: string }>(
      'postgres',
      'SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname',
      [`${prefix}\\_%`],
    )
  ).map((r) => r.rolname);

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  target = await freshTargetDatabase(PREFIX);
});

afterAll(async () => {
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
  await dropRolesWithPrefix(FILE_FAIL_PREFIX);
  await dropRolesWithPrefix(PG_FAIL_PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

describe('what the audit trail holds', () => {
  let broker: Broker;
  let storeDb: string;
  /** Everything the scenario below did, for the tests to look for. */
  const seen = {
    jwt: '',
    refusedJwt: '',
    token: '',
    accessor: '',
    forgedToken: `cbt.${randomSecret()}`,
    passwords: [] as string[],
    login: { requestId: '' },
    put: { requestId: '', leaseId: '', username: '', password: '' },
    get: { requestId: '', leaseId: '', password: '' },
  };
  let file: AuditRecord[];
  let fileText: string;
  let rows: (AuditRecord & { id: string })[];

  beforeAll(async () => {
    storeDb = await freshStoreDatabase('audtrl');
    broker = await start(storeDb, PREFIX, { file: { path: auditPath }, postgres: true });

    // Login, then credentials by PUT (X-Vault-Token) and GET (Authorization: Bearer).
    seen.jwt = await cluster.sign(kubernetesClaims({ serviceAccount: 'reader' }));
    const login = await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt: seen.jwt }, null);
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    seen.token = login.body.auth.client_token;
    seen.accessor = login.body.auth.accessor;
    seen.login.requestId = login.body.request_id;

    const put = await api(broker, 'PUT', 'db/creds/reader', { ttl: '15m' }, seen.token);
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    seen.put = {
      requestId: put.body.request_id,
      leaseId: put.body.lease_id,
      username: put.body.data.username,
      password: put.body.data.password,
    };

    const res = await fetch(`${broker.url}/v1/db/creds/reader?ttl=5m`, {
      headers: { authorization: `Bearer ${seen.token}` },
    });
    const got = (await res.json()) as any;
    expect(res.status, JSON.stringify(got)).toBe(200);
    seen.get = { requestId: got.request_id, leaseId: got.lease_id, password: got.data.password };

    const rooted = await api(broker, 'PUT', 'db/creds/writer', {}, ROOT_TOKEN);
    expect(rooted.status).toBe(200);
    seen.passwords = [seen.put.password, seen.get.password, rooted.body.data.password];

    // Lease operations, a denied request, a forged token and a refused login.
    expect((await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: seen.put.leaseId }, seen.token)).status).toBe(
      200,
    );
    expect(
      (await api(broker, 'PUT', 'sys/leases/renew', { lease_id: seen.put.leaseId, increment: '20m' }, seen.token))
        .status,
    ).toBe(200);
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: seen.get.leaseId }, seen.token)).status).toBe(
      204,
    );
    expect((await api(broker, 'PUT', 'db/creds/writer', {}, seen.token)).status).toBe(403);
    expect((await api(broker, 'PUT', 'db/creds/reader', {}, seen.forgedToken)).status).toBe(403);
    const now = Math.floor(Date.now() / 1000);
    seen.refusedJwt = await cluster.sign({ ...kubernetesClaims(), iat: now - 900, nbf: now - 900, exp: now - 300 });
    expect(
      (await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt: seen.refusedJwt }, null)).status,
    ).toBe(400);

    fileText = readFileSync(auditPath, 'utf8');
    file = fileText
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    rows = await adminQuery(storeDb, `SELECT * FROM credbroker_audit ORDER BY id`);
  });

  afterAll(async () => {
    await broker?.close();
  });

  /** Rows of credbroker_audit whose whole text (every column) contains `needle`. */
  const tableRowsContaining = async (needle: string) =>
    (
      await adminQuery<{ n: number }>(
        storeDb,
        `SELECT count(*)::int AS n FROM credbroker_audit a WHERE strpos(a::text, $1) > 0`,
        [needle],
      )
    )[0]!.n;

  const secrets = () => ({
    ...Object.fromEntries(seen.passwords.map((p, i) => [`password ${i + 1}`, p])),
    'client token': seen.token,
    'login JWT': seen.jwt,
    'refused login JWT': seen.refusedJwt,
    'root token': ROOT_TOKEN,
    'forged token': seen.forgedToken,
  });

  it('no issued password, client token or login JWT appears in the file or the table in plaintext', async () => {
    for (const [name, plain] of Object.entries(secrets())) {
      expect(fileText.includes(plain), `${name} in the audit file`).toBe(false);
      expect(await tableRowsContaining(plain), `${name} in credbroker_audit`).toBe(0);
    }
    // Nor the secret part of the token, nor the JWT's signature alone.
    for (const part of [seen.token.slice('cbt.'.length), seen.jwt.split('.')[2]!]) {
      expect(fileText.includes(part)).toBe(false);
      expect(await tableRowsContaining(part)).toBe(0);
    }
  });

  it('the HMAC of each of them is there instead, in both sinks, and matches auditor.hash()', async () => {
    for (const [name, plain] of Object.entries(secrets())) {
      const hashed = hmacField(HMAC_KEY, plain);
      expect(broker.auditor.hash(plain)).toBe(hashed);
      expect(fileText.includes(hashed), `HMAC of ${name} in the audit file`).toBe(true);
      expect(await tableRowsContaining(hashed), `HMAC of ${name} in credbroker_audit`).toBeGreaterThan(0);
    }
  });

  it('the file and the table hold the same records', () => {
    const key = (r: AuditRecord) => `${r.request_id}/${r.type}/${r.path ?? ''}/${r.status ?? ''}`;
    expect(rows.map(key).sort()).toEqual(file.map(key).sort());
  });

  it('every request has exactly one request record and one response record', () => {
    const byId = new Map<string, string[]>();
    for (const r of file.filter((r) => r.type !== 'event'))
      byId.set(r.request_id, [...(byId.get(r.request_id) ?? []), r.type]);
    // login, PUT, GET, root PUT, lookup, renew, revoke, denied, forged, refused login
    expect(byId.size).toBe(10);
    for (const [id, types] of byId) expect(types.sort(), id).toEqual(['request', 'response']);
  });

  it('a creds request is recorded with the identity, path, remote address and HMAC’d token; its response with the lease id and HMAC’d password', () => {
    for (const records of [file, rows]) {
      const pair = records.filter((r) => r.request_id === seen.put.requestId);
      const request = pair.find((r) => r.type === 'request')!;
      const response = pair.find((r) => r.type === 'response')!;
      for (const r of [request, response]) {
        expect(r.identity).toMatchObject({
          name: SUB,
          auth_mount: 'kubernetes',
          accessor: seen.accessor,
          metadata: { namespace: 'etl', service_account_name: 'reader' },
          root: false,
        });
        expect(r.path).toBe('db/creds/reader');
        expect(r.operation).toBe('update');
        expect(r.remote_address).toMatch(/127\.0\.0\.1$/);
        expect(Date.parse(r.time as unknown as string) || (r.time as unknown as Date).getTime()).toBeGreaterThan(
          Date.now() - 120_000,
        );
      }
      expect(request.data).toEqual({ ttl: '15m', client_token: hmacField(HMAC_KEY, seen.token) });
      expect(response).toMatchObject({ status: 200, outcome: 'ok', lease_id: seen.put.leaseId });
      expect((response.data as any).lease_id).toBe(seen.put.leaseId);
      expect((response.data as any).data).toMatchObject({
        username: seen.put.username,
        password: hmacField(HMAC_KEY, seen.put.password),
      });
    }
  });

  it('a GET with Authorization: Bearer is recorded the same way, the bearer token HMAC’d', () => {
    const pair = file.filter((r) => r.request_id === seen.get.requestId);
    expect(pair.map((r) => r.type).sort()).toEqual(['request', 'response']);
    expect(pair.find((r) => r.type === 'request')!.data).toEqual({ client_token: hmacField(HMAC_KEY, seen.token) });
    const response = pair.find((r) => r.type === 'response')!;
    expect(response).toMatchObject({ operation: 'read', lease_id: seen.get.leaseId, identity: { name: SUB } });
    expect((response.data as any).data.password).toBe(hmacField(HMAC_KEY, seen.get.password));
  });

  it('lease operations carry the lease id; a denied request and a forged token are recorded as denied', () => {
    const responses = file.filter((r) => r.type === 'response');
    for (const path of ['sys/leases/lookup', 'sys/leases/renew', 'sys/leases/revoke']) {
      const r = responses.find((x) => x.path === path)!;
      expect(r, path).toMatchObject({ outcome: 'ok', identity: { name: SUB } });
      expect(r.lease_id).toBe(path.endsWith('revoke') ? seen.get.leaseId : seen.put.leaseId);
    }
    const denied = responses.filter((r) => r.path === 'db/creds/writer' && r.status === 403);
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatchObject({ outcome: 'denied', identity: { name: SUB }, error: 'permission denied' });

    const forged = file.filter((r) => r.data?.client_token === hmacField(HMAC_KEY, seen.forgedToken));
    expect(forged.map((r) => r.type)).toEqual(['request']);
    const forgedResponse = file.find((r) => r.type === 'response' && r.request_id === forged[0]!.request_id)!;
    expect(forgedResponse).toMatchObject({ status: 403, outcome: 'denied', path: 'db/creds/reader' });
    expect(forgedResponse.identity).toBeUndefined();
    expect(forgedResponse.lease_id).toBeUndefined();
  });

  it('the root token is recorded as root, its token HMAC’d', () => {
    const root = file.filter((r) => r.identity?.root === true && r.path === 'db/creds/writer');
    expect(root.map((r) => r.type).sort()).toEqual(['request', 'response']);
    expect(root.find((r) => r.type === 'request')!.data).toEqual({ client_token: hmacField(HMAC_KEY, ROOT_TOKEN) });
    expect(root.find((r) => r.type === 'response')).toMatchObject({
      identity: { name: 'root', auth_mount: 'token' },
      outcome: 'ok',
      status: 200,
    });
  });

  it('a login is recorded with the JWT and the issued token HMAC’d', () => {
    const pair = file.filter((r) => r.request_id === seen.login.requestId);
    const request = pair.find((r) => r.type === 'request')!;
    const response = pair.find((r) => r.type === 'response')!;
    expect(request).toMatchObject({
      path: 'auth/kubernetes/login',
      operation: 'update',
      data: { role: 'etl', jwt: hmacField(HMAC_KEY, seen.jwt) },
    });
    expect(request.remote_address).toMatch(/127\.0\.0\.1$/);
    expect(response).toMatchObject({ status: 200, outcome: 'ok' });
    expect((response.data as any).auth).toMatchObject({
      client_token: hmacField(HMAC_KEY, seen.token),
      accessor: seen.accessor,
      policies: ['etl'],
    });
  });

  // Regression test: this once failed (found while writing these tests).
  it('a successful login’s response record names the identity that logged in', () => {
    const response = file.find((r) => r.request_id === seen.login.requestId && r.type === 'response')!;
    expect(response.identity).toMatchObject({ name: SUB, auth_mount: 'kubernetes', accessor: seen.accessor });
  });

  it('a refused login leaves a request and a response record with outcome error and the reason, the JWT HMAC’d', async () => {
    const request = file.find((r) => r.type === 'request' && r.data?.jwt === hmacField(HMAC_KEY, seen.refusedJwt))!;
    expect(request).toMatchObject({ path: 'auth/kubernetes/login', data: { role: 'etl' } });
    const response = file.find((r) => r.type === 'response' && r.request_id === request.request_id)!;
    expect(response).toMatchObject({
      path: 'auth/kubernetes/login',
      status: 400,
      outcome: 'error',
      error: 'error validating token: token is expired',
    });
    const inTable = await adminQuery(
      storeDb,
      `SELECT outcome, status, error FROM credbroker_audit WHERE request_id = $1 AND type = 'response'`,
      [request.request_id],
    );
    expect(inTable).toEqual([{ outcome: 'error', status: 400, error: 'error validating token: token is expired' }]);
  });

  it('`credbroker audit hash <value> --config FILE` prints the HMAC under which the log holds that value', async () => {
    const config = join(dir, 'config.yaml');
    writeFileSync(
      config,
      [
        'store:',
        '  url: postgres://127.0.0.1:1/credbroker',
        'root_token: ${env:AUDTRL_ROOT_TOKEN}',
        'audit:',
        '  hmac_key: ${env:AUDTRL_HMAC_KEY}',
        '  postgres: true',
        '',
      ].join('\n'),
    );
    const run = (value: string) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [CLI, 'audit', 'hash', value, '--config', config],
          {
            env: { ...process.env, AUDTRL_ROOT_TOKEN: ROOT_TOKEN, AUDTRL_HMAC_KEY: HMAC_KEY },
            timeout: 30_000,
            encoding: 'utf8',
          },
          (err, stdout, stderr) =>
            resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
        );
      });
    const password = seen.put.password;
    const out = await run(password);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout.trim()).toBe(hmacField(HMAC_KEY, password));
    // What it prints is what an operator greps for.
    expect(fileText.includes(out.stdout.trim())).toBe(true);
    expect((await run(seen.token)).stdout.trim()).toBe(broker.auditor.hash(seen.token));
  });
});

describe('fail closed', () => {
  it('with its only sink a file in a missing directory, a creds request is refused with 503 and creates no role and no lease', async () => {
    const storeDb = await freshStoreDatabase('audtrlx');
    const missingDir = join(dir, 'missing', 'dir');
    const broker = await start(storeDb, FILE_FAIL_PREFIX, { file: { path: join(missingDir, 'audit.jsonl') } });
    try {
      for (const [method, body] of [
        ['PUT', {}],
        ['GET', undefined],
      ] as const) {
        const res = await api(broker, method, 'db/creds/reader', body, ROOT_TOKEN);
        expect(res.status).toBe(503);
        expect(res.body.errors).toEqual(['audit log unavailable: request refused']);
        expect(JSON.stringify(res.body)).not.toMatch(/password/);
      }
      expect(await rolesWithPrefix(FILE_FAIL_PREFIX)).toEqual([]);
      expect(await adminQuery(storeDb, 'SELECT id FROM credbroker_leases')).toEqual([]);

      // A login is refused the same way, and mints no token.
      const login = await api(
        broker,
        'PUT',
        'auth/kubernetes/login',
        { role: 'etl', jwt: await cluster.sign(kubernetesClaims()) },
        null,
      );
      expect(login.status).toBe(503);
      expect(login.body.auth ?? null).toBeNull();
      expect(await adminQuery(storeDb, 'SELECT accessor FROM credbroker_tokens')).toEqual([]);

      // Once the directory exists, the sink opens the file on the next write and requests go through.
      mkdirSync(missingDir, { recursive: true });
      const res = await api(broker, 'PUT', 'db/creds/reader', {}, ROOT_TOKEN);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(readFileSync(join(missingDir, 'audit.jsonl'), 'utf8')).toContain(res.body.lease_id);
      expect(await rolesWithPrefix(FILE_FAIL_PREFIX)).toEqual([res.body.data.username]);
    } finally {
      await broker.close();
    }
  });

  describe('when the response record cannot be written', () => {
    let broker: Broker;
    let storeDb: string;
    const refuseResponses = (on: boolean) =>
      adminQuery(storeDb, `ALTER TABLE credbroker_audit ${on ? 'ENABLE' : 'DISABLE'} TRIGGER refuse_responses`);

    beforeAll(async () => {
      storeDb = await freshStoreDatabase('audtrly');
      broker = await start(storeDb, PG_FAIL_PREFIX, { postgres: true });
      // A real failure of the only sink, after the request record: the table refuses response rows.
      await adminQuery(
        storeDb,
        `CREATE FUNCTION refuse_responses() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit volume full'; END $$;
         CREATE TRIGGER refuse_responses BEFORE INSERT ON credbroker_audit FOR EACH ROW WHEN (NEW.type = 'response') EXECUTE FUNCTION refuse_responses();`,
      );
      await refuseResponses(false);
    });

    afterAll(async () => {
      await broker?.close();
    });

    it('the credential just issued is revoked and not handed out (503)', async () => {
      await refuseResponses(true);
      try {
        const res = await api(broker, 'PUT', 'db/creds/reader', {}, ROOT_TOKEN);
        expect(res.status).toBe(503);
        expect(res.body.errors).toEqual(['audit log unavailable: request refused']);
        expect(JSON.stringify(res.body)).not.toMatch(/password/);
      } finally {
        await refuseResponses(false);
      }
      const leases = await adminQuery(storeDb, 'SELECT id, state, revoke_handle FROM credbroker_leases');
      expect(leases).toHaveLength(1);
      expect(leases[0].state).toBe('revoked');
      expect(await roleExists(leases[0].revoke_handle.username)).toBe(false);
      expect(await rolesWithPrefix(PG_FAIL_PREFIX)).toEqual([]);
      // The request record was written; the response record was not.
      const records = await adminQuery(storeDb, `SELECT type FROM credbroker_audit WHERE path = 'db/creds/reader'`);
      expect(records).toEqual([{ type: 'request' }]);
    });

    // Regression test: this once failed (found while writing these tests).
    it('a lookup whose response cannot be recorded leaves the looked-up lease alive', async () => {
      const issued = await api(broker, 'PUT', 'db/creds/reader', {}, ROOT_TOKEN);
      expect(issued.status).toBe(200);
      await refuseResponses(true);
      try {
        expect(
          (await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: issued.body.lease_id }, ROOT_TOKEN)).status,
        ).toBe(503);
      } finally {
        await refuseResponses(false);
      }
      const [lease] = await adminQuery(storeDb, 'SELECT state FROM credbroker_leases WHERE id = $1', [
        issued.body.lease_id,
      ]);
      expect(lease.state).toBe('active');
      expect(await roleExists(issued.body.data.username)).toBe(true);
    });
  });
});

describe('what one client can make the audit log hold', () => {
  let broker: Broker;
  const path = join(dir, 'flood.jsonl');
  const lines = () => readFileSync(path, 'utf8').split('\n').filter(Boolean);
  const recordsOf = (requestId: string) =>
    lines()
      .map((l) => JSON.parse(l) as AuditRecord)
      .filter((r) => r.request_id === requestId);
  const junk = { filler: 'x'.repeat(63_000), secret_id: `sid-${randomSecret()}` };

  beforeAll(async () => {
    broker = await start(await freshStoreDatabase('audtrlz'), PREFIX, { file: { path } });
  });

  afterAll(async () => {
    await broker?.close();
  });

  it('a request refused before authentication is recorded without its body, however big', async () => {
    for (const token of [null, `cbt.${randomSecret()}`]) {
      const res = await api(broker, 'PUT', 'db/creds/reader', junk, token);
      expect(res.status).toBe(403);
      const records = recordsOf(res.body.request_id ?? '');
      // The error answer carries no request id; find the records by their position instead.
      const mine = records.length
        ? records
        : lines()
            .slice(-2)
            .map((l) => JSON.parse(l) as AuditRecord);
      expect(mine.map((r) => r.type)).toEqual(['request', 'response']);
      for (const r of mine) {
        expect(Object.keys(r.data ?? {}).filter((k) => k !== 'client_token')).toEqual([]);
        expect(Buffer.byteLength(JSON.stringify(r))).toBeLessThan(1024);
      }
    }
    expect(readFileSync(path, 'utf8')).not.toContain(junk.secret_id);
  });

  it('a hundred refused 63 KB requests add a few KB each at most, not 63', async () => {
    const before = statSync(path).size;
    for (let i = 0; i < 100; i++)
      expect((await api(broker, 'PUT', 'db/creds/reader', junk, `cbt.${randomSecret()}`)).status).toBe(403);
    expect(statSync(path).size - before).toBeLessThan(100 * 2048);
  });

  it('a login records only its role and its JWT (HMAC’d), not the rest of the body', async () => {
    const res = await api(broker, 'PUT', 'auth/kubernetes/login', { role: 'etl', jwt: 'not-a-jwt', ...junk }, null);
    expect(res.status).toBe(400);
    const request = lines()
      .map((l) => JSON.parse(l) as AuditRecord)
      .filter((r) => r.type === 'request' && r.path === 'auth/kubernetes/login')
      .at(-1)!;
    expect(request.data).toEqual({ role: 'etl', jwt: broker.auditor.hash('not-a-jwt') });
  });

  it('an authenticated request with a 57 KB body is recorded within MAX_RECORD_BYTES, marked truncated', async () => {
    // Numbers are not hashed, so they keep their size in the record (strings shrink to an HMAC).
    const res = await api(
      broker,
      'PUT',
      'db/creds/reader',
      { filler: 'x'.repeat(1000), secret_id: junk.secret_id, numbers: new Array(8000).fill(123456) },
      ROOT_TOKEN,
    );
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const [request, response] = recordsOf(res.body.request_id);
    for (const r of [request!, response!])
      expect(Buffer.byteLength(JSON.stringify(r))).toBeLessThanOrEqual(MAX_RECORD_BYTES);
    expect(request!.data).toBeUndefined();
    expect(request!.truncated!.data_bytes).toBeGreaterThan(50_000);
    expect(response!.lease_id).toBe(res.body.lease_id);
    expect(readFileSync(path, 'utf8')).not.toContain(junk.secret_id);
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: res.body.lease_id }, ROOT_TOKEN)).status).toBe(
      204,
    );
  });
});

const smallDisk = join(dir, 'small-disk');
// A 64 KiB tmpfs, so the disk really fills; mounting one needs root (as in the test containers).
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('[audit-trail] not root, so no tmpfs can be mounted: the full-disk test is skipped');

describe.runIf(isRoot)('on a full disk', () => {
  beforeAll(() => {
    mkdirSync(smallDisk, { recursive: true });
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', smallDisk], { encoding: 'utf8' });
    if (mounted.status !== 0) throw new Error(`cannot mount a tmpfs at ${smallDisk}: ${mounted.stderr}`);
  });

  afterAll(() => {
    spawnSync('umount', [smallDisk]);
  });

  it('the audit file holds only whole records, requests are refused, and service resumes when space returns', async () => {
    const path = join(smallDisk, 'audit.jsonl');
    const filler = join(smallDisk, 'filler');
    writeFileSync(filler, Buffer.alloc(40 * 1024, 1));
    const broker = await start(await freshStoreDatabase('audtrlf'), PREFIX, { file: { path } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 200 && !statuses.includes(503); i++) {
        // A body of varied size, so some record crosses a page boundary as the disk fills.
        statuses.push(
          (
            await api(
              broker,
              'PUT',
              'db/creds/reader',
              { filler: 'x'.repeat(100 + ((i * 37) % 900)), n: new Array(50 + i * 3).fill(1) },
              ROOT_TOKEN,
            )
          ).status,
        );
      }
      expect(statuses.at(-1)).toBe(503);
      const again = await api(broker, 'PUT', 'db/creds/reader', {}, ROOT_TOKEN);
      expect(again.status).toBe(503);
      const wholeLines = (text: string) => {
        expect(text.endsWith('\n')).toBe(true);
        for (const line of text.slice(0, -1).split('\n'))
          expect(() => JSON.parse(line), line.slice(0, 80)).not.toThrow();
      };
      wholeLines(readFileSync(path, 'utf8'));

      rmSync(filler);
      const res = await api(broker, 'PUT', 'db/creds/reader', {}, ROOT_TOKEN);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const text = readFileSync(path, 'utf8');
      wholeLines(text);
      expect(text).toContain(res.body.lease_id);
      // Revoked here, so the file's cleanup has no roles of this test to drop.
      expect((await api(broker, 'PUT', 'sys/leases/revoke-prefix/db/', {}, ROOT_TOKEN)).status).toBe(204);
    } finally {
      await broker.close();
    }
  });
});

describe("the reaper's revocations", () => {
  let broker: Broker;
  let storeDb: string;
  const path = join(dir, 'reaper.jsonl');

  beforeAll(async () => {
    storeDb = await freshStoreDatabase('audtrlr');
    broker = await start(storeDb, PREFIX, { file: { path }, postgres: true });
  });

  afterAll(async () => {
    await broker?.close();
  });

  /** Issues n leases and backdates them, so the next reap finds them expired. */
  async function expiredLeases(n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const res = await api(broker, 'PUT', 'db/creds/reader', {}, ROOT_TOKEN);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      ids.push(res.body.lease_id);
    }
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET expires_at = now() - interval '1 second', next_attempt_at = now() - interval '1 second' WHERE id = ANY($1)`,
      [ids],
    );
    return ids.sort();
  }

  const revokedInFile = () =>
    readFileSync(path, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AuditRecord)
      .filter((r) => r.type === 'event' && r.operation === 'revoked')
      .map((r) => r.lease_id!);
  const revokedInTable = async () =>
    (
      await adminQuery<{ lease_id: string }>(
        storeDb,
        `SELECT lease_id FROM credbroker_audit WHERE type = 'event' AND operation = 'revoked'`,
      )
    ).map((r) => r.lease_id);

  it('a reap of 60 expired leases in one batch has recorded 60 revoked events in every sink by the time it returns', async () => {
    const ids = await expiredLeases(60);
    const result = await broker.reaper.reapOnce({ limit: 500 });
    expect(result.revoked.sort()).toEqual(ids);
    expect(
      revokedInFile()
        .filter((id) => ids.includes(id))
        .sort(),
    ).toEqual(ids);
    expect((await revokedInTable()).filter((id) => ids.includes(id)).sort()).toEqual(ids);
  });

  it('failed revocations are recorded too by the time the reap returns: revoke-failed, then irrevocable on the last attempt', async () => {
    const ids = await expiredLeases(50);
    // Their mount is not configured on this broker, so every revocation fails.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET mount = 'ghost', attempts = CASE WHEN id = ANY($2) THEN 7 ELSE 0 END WHERE id = ANY($1)`,
      [ids, ids.slice(0, 10)],
    );
    const result = await broker.reaper.reapOnce({ limit: 500 });
    expect(result.failed.sort()).toEqual(ids);
    const events = readFileSync(path, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AuditRecord)
      .filter((r) => r.type === 'event' && ids.includes(r.lease_id!));
    expect(
      events
        .filter((e) => e.operation === 'irrevocable')
        .map((e) => e.lease_id)
        .sort(),
    ).toEqual(ids.slice(0, 10).sort());
    expect(
      events
        .filter((e) => e.operation === 'revoke-failed')
        .map((e) => e.lease_id)
        .sort(),
    ).toEqual(ids.slice(10).sort());
    // Back on their real mount, so they are revoked (and their roles dropped) here, not left to the file's cleanup.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET mount = 'db', state = 'revoking', attempts = 0, next_attempt_at = now() - interval '1 second' WHERE id = ANY($1)`,
      [ids],
    );
    expect((await broker.reaper.reapOnce({ limit: 500 })).revoked.sort()).toEqual(ids);
  });

  it('a broker that shuts down right after its reaper ran has still recorded every revocation', async () => {
    const ids = await expiredLeases(60);
    const tick = broker.reaper.tick();
    await broker.close();
    await tick;
    expect(
      revokedInFile()
        .filter((id) => ids.includes(id))
        .sort(),
    ).toEqual(ids);
    expect((await revokedInTable()).filter((id) => ids.includes(id)).sort()).toEqual(ids);
    const states = await adminQuery<{ state: string }>(
      storeDb,
      'SELECT DISTINCT state FROM credbroker_leases WHERE id = ANY($1)',
      [ids],
    );
    expect(states).toEqual([{ state: 'revoked' }]);
  });
});
