import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import https from 'node:https';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Agent, fetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/record.js';
import { startBroker, type Broker } from '../../src/broker.js';
import { createLogger } from '../../src/log.js';
import { randomSecret } from '../../src/random.js';
import { createCertificateAuthority, type CertificateAuthority } from '../../src/tls/certificates.js';
import { testConfig } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, loginAs } from '../support/pg.js';
import { sweepLogPath } from '../support/secret-recorder.js';
import { asIssuer, importKey, sign } from '../support/signed-certificates.js';
import { tlsFixture, type TlsFixture } from '../support/tls.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'certau';
const SPIFFE_LOADER = 'spiffe://corp/ns/etl/sa/loader';
const DAY = 86_400_000;

const dir = mkdtempSync(join(tmpdir(), 'credbroker-cert-auth-'));
const auditPath = join(dir, 'audit.jsonl');

let tls: TlsFixture;
/** The CA the cert mount's role trusts (not the listener's CA). */
let clientCa: CertificateAuthority;
let broker: Broker;
let storeDb: string;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
/** The broker's log lines, at the production level. */
const logLines: string[] = [];

beforeAll(async () => {
  tls = await tlsFixture();
  clientCa = await createCertificateAuthority({ commonName: 'ci runners CA' });
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('certau');
  const config = testConfig({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
      writer: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
    },
    tls: tls.listen,
    audit: { hmac_key: `audit-key-${randomSecret()}`, file: { path: auditPath } },
    auth: {
      cert: {
        type: 'cert',
        roles: {
          etl: {
            certificate: clientCa.certPem,
            allowed_common_names: ['loader', 'etl-*'],
            allowed_uri_sans: ['spiffe://corp/ns/etl/sa/*'],
            token_policies: ['etl'],
            token_ttl: '10m',
            display_name: 'etl-runners',
          },
        },
      },
    },
    policies: { etl: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }] },
  });
  // The log is kept for the assertions below, and goes to the run's secret sweep as every broker's does.
  const sweepPath = sweepLogPath('broker');
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (sweepPath) appendFileSync(sweepPath, chunk);
      done();
    },
  });
  broker = await startBroker(config, { log: createLogger('info', stream), reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

/** One request on a new TLS connection that trusts the listener's CA and presents `client`'s certificate, if any. */
async function request(
  method: string,
  path: string,
  opts: { client?: { certPem: string; keyPem: string }; body?: unknown; token?: string } = {},
) {
  const dispatcher = new Agent({
    connect: { ca: tls.ca.certPem, ...(opts.client ? { cert: opts.client.certPem, key: opts.client.keyPem } : {}) },
  });
  try {
    const res = await fetch(`${broker.url}/v1/${path}`, {
      method,
      dispatcher,
      headers: {
        'content-type': 'application/json',
        ...(opts.token ? { 'x-vault-token': opts.token } : {}),
      },
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
    return { status: res.status, body: (await res.json().catch(() => null)) as any };
  } finally {
    await dispatcher.close();
  }
}

const login = (client: { certPem: string; keyPem: string } | undefined, body: unknown = { name: 'etl' }) =>
  request('PUT', 'auth/cert/login', { client, body });

const tokenCount = async () =>
  (await adminQuery<{ n: number }>(storeDb, 'SELECT count(*)::int AS n FROM credbroker_tokens'))[0]!.n;

const loginResponses = (): AuditRecord[] =>
  readFileSync(auditPath, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditRecord)
    .filter((r) => r.type === 'response' && r.path === 'auth/cert/login');

describe('cert login over mTLS', () => {
  it('a certificate from the trusted CA with an allowed SPIFFE URI SAN logs in, and its token gets its policy’s leases', async () => {
    const loader = await clientCa.issue({ commonName: 'loader', uris: [SPIFFE_LOADER], usage: 'client' });
    const before = await tokenCount();
    const res = await login(loader);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const auth = res.body.auth;
    expect(auth.client_token).toMatch(/^cbt\./);
    expect(auth.policies).toEqual(['etl']);
    expect(auth.lease_duration).toBeGreaterThan(590);
    expect(auth.lease_duration).toBeLessThanOrEqual(600);
    expect(auth.metadata).toMatchObject({
      cert_name: 'etl',
      common_name: 'loader',
      spiffe_id: SPIFFE_LOADER,
      uri_sans: SPIFFE_LOADER,
      serial_number: BigInt(`0x${loader.serialNumber}`).toString(10),
    });
    expect(await tokenCount()).toBe(before + 1);
    const looked = await request('GET', 'auth/token/lookup-self', { token: auth.client_token });
    expect(looked.status, JSON.stringify(looked.body)).toBe(200);
    expect(looked.body.data).toMatchObject({
      display_name: 'cert-etl-runners',
      path: 'auth/cert/login',
      meta: { cert_name: 'etl', spiffe_id: SPIFFE_LOADER },
    });

    const issued = await request('PUT', 'db/creds/reader', { token: auth.client_token, body: {} });
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    const client = await loginAs(issued.body.data);
    try {
      expect((await client.query('SELECT count(*)::int AS n FROM public.items')).rows[0].n).toBe(2);
    } finally {
      await client.end();
    }
    const [lease] = await adminQuery(storeDb, 'SELECT identity FROM credbroker_leases WHERE id = $1', [
      issued.body.lease_id,
    ]);
    expect(lease.identity).toMatchObject({
      name: SPIFFE_LOADER,
      auth_mount: 'cert',
      metadata: { cert_name: 'etl', spiffe_id: SPIFFE_LOADER },
    });

    const outside = await request('PUT', 'db/creds/writer', { token: auth.client_token, body: {} });
    expect(outside.status).toBe(403);
    expect(outside.body.errors).toEqual(['permission denied']);

    const [ok] = loginResponses().filter((r) => r.status === 200);
    expect(ok).toMatchObject({ outcome: 'ok', identity: { name: SPIFFE_LOADER, auth_mount: 'cert' } });
  });

  describe('refused, audited, and no token created', () => {
    it.each([
      [
        'a certificate from another CA (of the same name)',
        async () =>
          (await createCertificateAuthority({ commonName: 'ci runners CA' })).issue({
            commonName: 'loader',
            uris: [SPIFFE_LOADER],
            usage: 'client',
          }),
        /^invalid certificate or no client certificate supplied: role "etl": it is not signed by the role's CA/,
      ],
      [
        'an expired certificate',
        () =>
          clientCa.issue({
            commonName: 'loader',
            uris: [SPIFFE_LOADER],
            usage: 'client',
            notBefore: new Date(Date.now() - 10 * DAY),
            notAfter: new Date(Date.now() - DAY),
          }),
        /^invalid certificate or no client certificate supplied: the certificate expired at \d{4}-/,
      ],
      [
        'a certificate with a disallowed CN',
        () => clientCa.issue({ commonName: 'intruder', uris: [SPIFFE_LOADER], usage: 'client' }),
        /^no chain matching all constraints could be found for this login certificate: role "etl": no common name of the certificate is allowed by the role \(it has: "intruder"\)/,
      ],
    ])('%s', async (_, makeCert, reason) => {
      const cert = await makeCert();
      const tokensBefore = await tokenCount();
      const auditedBefore = loginResponses().length;

      const res = await login(cert);
      expect(res.status, JSON.stringify(res.body)).toBe(403);
      expect(res.body.errors[0]).toMatch(reason);
      expect(res.body.auth).toBeUndefined();

      expect(await tokenCount()).toBe(tokensBefore);
      const audited = loginResponses().slice(auditedBefore);
      expect(audited).toHaveLength(1);
      expect(audited[0]).toMatchObject({ status: 403, outcome: 'denied' });
      expect(audited[0]!.error).toMatch(reason);
      expect(audited[0]!.identity).toBeUndefined();
      const logged = logLines
        .map((line) => JSON.parse(line))
        .filter((l) => l.msg === 'cert login refused' && l.certificate?.serial_number === cert.serialNumber);
      expect(logged).toHaveLength(1);
      expect(logged[0].reason).toMatch(reason);
    });
  });

  it('a TLS connection without a client certificate gets a clear 400, audited, and no token', async () => {
    const tokensBefore = await tokenCount();
    const auditedBefore = loginResponses().length;
    const res = await login(undefined);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.errors).toEqual(['cert login needs a TLS client certificate: none was presented']);
    expect(await tokenCount()).toBe(tokensBefore);
    expect(loginResponses().slice(auditedBefore)).toMatchObject([{ status: 400, outcome: 'error' }]);
  });

  it('without a name, the role is found by the certificate (Vault’s behaviour)', async () => {
    const etl = await clientCa.issue({
      commonName: 'etl-7',
      uris: ['spiffe://corp/ns/etl/sa/report'],
      usage: 'client',
    });
    const res = await login(etl, {});
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.auth.metadata).toMatchObject({ cert_name: 'etl', spiffe_id: 'spiffe://corp/ns/etl/sa/report' });
  });

  it('a certificate from an intermediate logs in on every new connection of a client that sends the chain', async () => {
    const intermediate = await sign(
      { certPem: clientCa.certPem, signingKey: await importKey(clientCa.keyPem) },
      { commonName: 'ci runners intermediate', ca: true },
    );
    const runner = await sign(asIssuer(intermediate), { commonName: 'etl-runner', uris: [SPIFFE_LOADER] });
    // node's https agent caches TLS sessions: without keep-alive, each request is a new connection
    // that would resume the last session, where the client sends no certificates.
    const agent = new https.Agent({
      keepAlive: false,
      ca: tls.ca.certPem,
      cert: runner.certPem + intermediate.certPem,
      key: runner.keyPem,
    });
    const { port } = new URL(broker.url);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      statuses.push(
        await new Promise<number>((resolve, reject) => {
          const req = https.request(
            { host: '127.0.0.1', port, path: '/v1/auth/cert/login', method: 'PUT', agent },
            (res) => {
              let text = '';
              res.on('data', (c: Buffer) => (text += c.toString()));
              res.on('end', () => {
                if (res.statusCode !== 200) console.log(text);
                resolve(res.statusCode!);
              });
            },
          );
          req.on('error', reject);
          req.end(JSON.stringify({ name: 'etl' }));
        }),
      );
    }
    agent.destroy();
    expect(statuses).toEqual([200, 200, 200]);
  });
});
