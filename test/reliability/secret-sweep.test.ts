import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hmacField } from '../../src/audit/hmac.js';
import { configSchema } from '../../src/config/schema.js';
import { randomSecret } from '../../src/random.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/store/embedded-postgres.js';
import { startBrokerProcess } from '../support/broker-process.js';
import { b64url, startJwksServer, type JwksServer } from '../support/jwks-server.js';
import { recordFigures } from '../support/reliability.js';

/**
 * The secret sweep of issue 10: every secret issued or presented during a representative workload
 * (passwords, SCRAM verifiers, broker tokens, the root token, JWTs, bogus tokens, the audit HMAC key,
 * the server's own password) is searched for, in plaintext, in everything the broker and its
 * PostgreSQL wrote: the broker's stdout and stderr at trace level, its three audit sinks (file,
 * stdout, the store's credbroker_audit table), and the statement log of the server (log_statement=all,
 * bound parameters included) holding both the store and the target.
 */

const DIST_BROKER = fileURLToPath(new URL('../../dist/src/broker.js', import.meta.url));
/** Roles are cluster-wide, but this file has its own server: the prefix only names the leases' users. */
const PREFIX = 'sweep';
const STORE_DB = 'sweep_store';
const TARGET_DB = 'sweep_target';
const GROUP = `${PREFIX}_readers`;

type Kind =
  | 'server password'
  | 'root token'
  | 'audit hmac key'
  | 'jwt'
  | 'jwt signature'
  | 'broker token'
  | 'lease password'
  | 'scram verifier'
  | 'bogus token'
  | 'garbage jwt'
  | 'client body secret';

/** A secret and where it may legitimately appear in plaintext (the target's log shows the verifiers it is handed, by design). */
interface Secret {
  kind: Kind;
  value: string;
  allowedIn?: string[];
}

const secrets: Secret[] = [];
const collect = (kind: Kind, value: unknown, allowedIn?: string[]) => {
  if (typeof value !== 'string' || value.length < 8) throw new Error(`no usable ${kind} to collect: ${typeof value}`);
  secrets.push({ kind, value, ...(allowedIn ? { allowedIn } : {}) });
};

const children = new Set<ChildProcess>();
const pgLog: string[] = [];
let server: EmbeddedServer;
let jwks: JwksServer;
let workDir: string;
let auditPath: string;
let rootToken: string;
let hmacKey: string;
let broker: Awaited<ReturnType<typeof startBrokerProcess>>;

async function query<R extends pg.QueryResultRow = any>(
  database: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: server.url(database) });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function call(
  method: string,
  path: string,
  opts: { body?: unknown; rawBody?: string; token?: string | null; bearer?: string } = {},
) {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? rootToken : opts.token;
  if (token !== null) headers['x-vault-token'] = token;
  if (opts.bearer) headers.authorization = `Bearer ${opts.bearer}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const body = opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  const res = await fetch(`${broker.url}/v1/${path}`, { method, headers, body });
  const text = await res.text();
  return { status: res.status, text, body: text ? (JSON.parse(text) as any) : null };
}

beforeAll(async () => {
  if (!existsSync(DIST_BROKER)) throw new Error(`${DIST_BROKER} is missing: run \`npm run build\` before this test`);
  workDir = await mkdtemp(join(tmpdir(), 'credbroker-sweep-'));
  auditPath = join(workDir, 'audit.jsonl');
  const password = randomSecret();
  server = await startEmbeddedPostgres({
    password,
    persistent: false,
    // Every statement with its bound parameters, every connection and its authentication, on stderr.
    flags: [
      '-c',
      'log_statement=all',
      '-c',
      'log_connections=on',
      '-c',
      'log_disconnections=on',
      '-c',
      'log_destination=stderr',
      '-c',
      'logging_collector=off',
    ],
    onLog: (m) => pgLog.push(m),
  });
  collect('server password', password);
  await query('postgres', `CREATE DATABASE ${STORE_DB}`);
  await query('postgres', `CREATE DATABASE ${TARGET_DB}`);
  await query(
    TARGET_DB,
    `CREATE ROLE ${GROUP} NOLOGIN;
     CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL);
     INSERT INTO public.items VALUES (1, 'one');
     GRANT CONNECT ON DATABASE ${TARGET_DB} TO ${GROUP};
     GRANT USAGE ON SCHEMA public TO ${GROUP};
     GRANT SELECT ON public.items TO ${GROUP};`,
  );
  jwks = await startJwksServer({ algs: ['RS256'] });
  rootToken = `root-${randomSecret()}`;
  hmacKey = randomSecret();
  collect('root token', rootToken);
  collect('audit hmac key', hmacKey);
  const config = configSchema.parse({
    listen: { address: '127.0.0.1', port: 0 },
    store: { url: server.url(STORE_DB), max_connections: 10 },
    root_token: rootToken,
    log_level: 'trace',
    engine_timeout: 5,
    reaper: { pending_grace: 30 },
    mounts: {
      db: {
        type: 'postgres',
        connection_url: server.url(TARGET_DB),
        username_prefix: PREFIX,
        roles: {
          reader: { member_of: [GROUP], default_ttl: '10m', max_ttl: '1h' },
          granting: {
            default_ttl: '10m',
            max_ttl: '1h',
            creation_statements: [
              `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`,
              'GRANT SELECT ON public.items TO "{{name}}"',
            ],
          },
          // Fails after creating the role, with the verifier quoted in PostgreSQL's error message.
          broken: {
            default_ttl: '10m',
            max_ttl: '1h',
            creation_statements: [
              `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}'`,
              `SELECT '{{password}}'::int`,
            ],
          },
        },
      },
    },
    auth: {
      jwt: {
        type: 'jwt',
        oidc_discovery_url: jwks.url,
        bound_issuer: jwks.url,
        roles: {
          ci: { bound_audiences: ['credbroker'], user_claim: 'sub', token_policies: ['etl'], token_ttl: '5m' },
        },
      },
    },
    policies: { etl: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }] },
    audit: { hmac_key: hmacKey, file: { path: auditPath }, stdout: true, postgres: true },
  });
  broker = await startBrokerProcess({ config }, children, { reaper: true, logLevel: 'trace' });
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await jwks?.close();
  await server?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Logs in to the target as a lease's user, over TCP with SCRAM, as a client would. */
async function loginToTarget(username: string, password: string): Promise<void> {
  const client = new pg.Client({ host: '127.0.0.1', port: server.port, database: TARGET_DB, user: username, password });
  await client.connect();
  try {
    await client.query('SELECT name FROM public.items');
  } finally {
    await client.end();
  }
}

async function verifierOf(username: string): Promise<string> {
  const [row] = await query<{ rolpassword: string }>(
    'postgres',
    'SELECT rolpassword FROM pg_authid WHERE rolname = $1',
    [username],
  );
  if (!row?.rolpassword?.startsWith('SCRAM-SHA-256$')) throw new Error(`no SCRAM verifier for ${username}`);
  return row.rolpassword;
}

/** Issues on a creds path; collects the password and the role's verifier (the target's log shows the verifier: it is what CREATE ROLE is given). */
async function issue(role: string, token?: string) {
  const res = await call('GET', `db/creds/${role}`, { token });
  expect(res.status, res.text).toBe(200);
  const { username, password } = res.body.data;
  collect('lease password', password);
  collect('scram verifier', await verifierOf(username), ['postgres log']);
  await loginToTarget(username, password);
  return { leaseId: res.body.lease_id as string, username: username as string };
}

async function login(jwt: string) {
  const res = await call('PUT', 'auth/jwt/login', { body: { role: 'ci', jwt }, token: null });
  expect(res.status, res.text).toBe(200);
  collect('broker token', res.body.auth.client_token);
  return res.body.auth.client_token as string;
}

async function signedJwt(sub: string): Promise<string> {
  const jwt = await jwks.sign({ iss: jwks.issuer, sub, aud: 'credbroker' });
  collect('jwt', jwt);
  collect('jwt signature', jwt.split('.')[2]);
  return jwt;
}

describe('secret sweep', () => {
  it('no secret issued or presented appears in plaintext in any broker output, audit sink or the server’s statement log', async () => {
    // Logins and token self-service.
    const ci = await login(await signedJwt('repo:acme/warehouse'));
    const other = await login(await signedJwt('repo:acme/other'));
    expect((await call('GET', 'auth/token/lookup-self', { token: ci })).status).toBe(200);
    expect((await call('PUT', 'auth/token/renew-self', { token: ci, body: { increment: '4m' } })).status).toBe(200);

    // Leases of both forms: issue, renew, lookup, revoke, revoke-prefix.
    const own = await issue('reader', ci);
    const viaBearer = await call('PUT', 'sys/leases/renew', {
      token: null,
      bearer: ci,
      body: { lease_id: own.leaseId, increment: 600 },
    });
    expect(viaBearer.status, viaBearer.text).toBe(200);
    const granted = await issue('granting');
    const second = await issue('granting');
    expect(
      (await call('PUT', 'sys/leases/renew', { body: { lease_id: granted.leaseId, increment: '15m' } })).status,
    ).toBe(200);
    expect((await call('PUT', 'sys/leases/lookup', { body: { lease_id: second.leaseId } })).status).toBe(200);
    // Someone else's lease, as another pipeline would try it.
    expect((await call('PUT', 'sys/leases/lookup', { token: other, body: { lease_id: own.leaseId } })).status).toBe(
      400,
    );
    expect((await call('PUT', 'sys/leases/revoke', { token: ci, body: { lease_id: own.leaseId } })).status).toBe(204);
    expect((await call('PUT', 'sys/leases/revoke-prefix/db/creds/granting')).status).toBe(204);

    // A statements role whose second statement fails, quoting {{password}} (the verifier) in its error.
    const broken = await call('GET', 'db/creds/broken');
    expect(broken.status, broken.text).toBeGreaterThanOrEqual(500);
    const echoed = pgLog.join('').match(/SCRAM-SHA-256\$[^\s"']+/g) ?? [];
    const quoted = pgLog.join('').match(/invalid input syntax for type integer: "(SCRAM-SHA-256\$[^"]+)"/);
    expect(quoted, 'the failing statement is in the server log, with the verifier it echoed').not.toBeNull();
    collect('scram verifier', quoted![1], ['postgres log']);
    expect(echoed.length).toBeGreaterThan(3);

    // Presented secrets: bogus broker tokens, a garbage JWT, a JWT from a key nobody published, a client's own secret field.
    const bogus = `cbt.${randomSecret()}`;
    collect('bogus token', bogus);
    expect((await call('PUT', 'sys/leases/lookup', { token: bogus, body: { lease_id: granted.leaseId } })).status).toBe(
      403,
    );
    const bogusBearer = `bearer-${randomSecret()}`;
    collect('bogus token', bogusBearer);
    expect((await call('GET', 'db/creds/reader', { token: null, bearer: bogusBearer })).status).toBe(403);
    const garbage = `${b64url({ alg: 'RS256', typ: 'JWT' })}.${b64url({ sub: 'x', aud: 'credbroker' })}.${randomSecret()}`;
    collect('garbage jwt', garbage);
    collect('garbage jwt', garbage.split('.')[2]);
    expect((await call('PUT', 'auth/jwt/login', { token: null, body: { role: 'ci', jwt: garbage } })).status).toBe(400);
    expect((await call('GET', 'auth/token/lookup-self', { token: null, bearer: garbage })).status).toBe(403);
    await jwks.addKey({ kid: 'unpublished', published: false });
    const unknownKey = await jwks.sign(
      { iss: jwks.issuer, sub: 'repo:acme/warehouse', aud: 'credbroker' },
      { kid: 'unpublished' },
    );
    collect('garbage jwt', unknownKey);
    collect('garbage jwt', unknownKey.split('.')[2]);
    expect((await call('PUT', 'auth/jwt/login', { token: null, body: { role: 'ci', jwt: unknownKey } })).status).toBe(
      400,
    );
    const clientSecret = `sid-${randomSecret()}`;
    collect('client body secret', clientSecret);
    expect(
      (
        await call('PUT', 'sys/leases/lookup', {
          body: { lease_id: second.leaseId, secret_id: clientSecret, password: clientSecret },
        })
      ).status,
    ).toBe(200);
    expect(
      (
        await call('PUT', 'auth/jwt/login', {
          token: null,
          body: { role: 'ci', jwt: garbage, secret_id: clientSecret },
        })
      ).status,
    ).toBe(400);

    // A secret in a body that is not JSON (a template that forgot its quotes): the parser's message would quote it.
    const unquoted = `x${randomSecret()}`;
    collect('client body secret', unquoted);
    expect(
      (await call('PUT', 'auth/jwt/login', { token: null, rawBody: `{"role":"ci","jwt":${unquoted}}` })).status,
    ).toBe(400);
    expect(
      (await call('PUT', 'sys/leases/renew', { rawBody: `{"lease_id":"${granted.leaseId}","increment":${unquoted}}` }))
        .status,
    ).toBe(400);

    // Revoke-self, then the revoked token presented again.
    expect((await call('PUT', 'auth/token/revoke-self', { token: other })).status).toBe(204);
    expect((await call('GET', 'auth/token/lookup-self', { token: other })).status).toBe(403);
    expect((await call('PUT', 'auth/token/revoke-self', { token: ci })).status).toBe(204);

    // Stop the broker (it closes its sinks and flushes its log) before reading what it wrote.
    const exited = new Promise((resolve) => broker.child.once('exit', resolve));
    broker.child.kill('SIGTERM');
    await exited;
    const auditRows = await query<{ row: string }>(
      STORE_DB,
      'SELECT a::text AS row FROM credbroker_audit a ORDER BY id',
    );
    const places: Record<string, string> = {
      'broker stdout (with the stdout audit sink)': broker.output.stdout,
      'broker stderr (trace log)': broker.output.stderr,
      'audit file': await readFile(auditPath, 'utf8'),
      'audit table': auditRows.map((r) => r.row).join('\n'),
      'postgres log': pgLog.join(''),
    };

    // The sweep is only worth its zero if the secrets flowed past every place it reads.
    expect(places['broker stderr (trace log)']).toContain('"msg":"request"');
    expect(places['postgres log']).toMatch(/statement: /);
    expect(places['postgres log']).toMatch(/connection authorized: user=sweep_reader_/);
    expect(places['postgres log']).toMatch(/parameters: \$1 = /i);
    for (const place of ['broker stdout (with the stdout audit sink)', 'audit file', 'audit table']) {
      expect(places[place], `${place}: the root token is recorded, HMAC'd`).toContain(
        hmacField(hmacKey, rootToken).slice('hmac-sha256:'.length),
      );
      expect(places[place], `${place}: the bogus token is recorded, HMAC'd`).toContain(
        hmacField(hmacKey, bogus).slice('hmac-sha256:'.length),
      );
    }

    const hits: string[] = [];
    for (const secret of secrets) {
      for (const [place, text] of Object.entries(places)) {
        if (secret.allowedIn?.includes(place)) continue;
        // The plaintext, and the forms a log could give it: JSON-escaped, URL-encoded.
        const forms = new Set([
          secret.value,
          JSON.stringify(secret.value).slice(1, -1),
          encodeURIComponent(secret.value),
        ]);
        if ([...forms].some((form) => text.includes(form))) hits.push(`${secret.kind} in ${place}`);
      }
    }
    console.info(`secrets checked: ${secrets.length}, plaintext hits: ${hits.length}`);
    recordFigures('secret-sweep', { secretsChecked: secrets.length, secretHits: hits.length });
    expect(hits).toEqual([]);
  });
});
