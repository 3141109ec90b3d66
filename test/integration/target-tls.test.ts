import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { formatCredential } from '../../src/cli/credential-format.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { randomSecret } from '../../src/random.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/store/embedded-postgres.js';
import { createCertificateAuthority, type IssuedCertificate } from '../../src/tls/certificates.js';
import { ROOT_TOKEN, api, baseTestConfig } from '../support/broker.js';
import { freshStoreDatabase } from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this (on its own server, too). */
const PREFIX = 'tgtls';
const GROUP = `${PREFIX}_readers`;
const TARGET_DB = 'tls_target';
const STORE_DB = 'tls_store';
/** Where a leased user may create objects, so revoking it has a second database to clean up. */
const OTHER_DB = 'tls_other';

let dir: string;
let server: EmbeddedServer;
/** The CA that signed the server's certificate, and one that did not. */
let caFile: string;
let wrongCaFile: string;
let certFile: string;
let keyFile: string;
let caPem: string;
let rightCert: IssuedCertificate;
let otherNameCert: IssuedCertificate;
/** A store on the shared plaintext test server, for the brokers whose target only is over TLS. */
let storeDb: string;
const brokers: Broker[] = [];

/** The server's own OS user must own its key, mode 0600, or PostgreSQL refuses to start. */
function writeServerFile(path: string, text: string, mode: number): void {
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
    chownSync(path, uid, gid);
  }
}

/** Swaps the server's certificate; new connections get the new one (PostgreSQL rereads it on reload). */
async function serveCertificate(cert: IssuedCertificate): Promise<void> {
  writeServerFile(certFile, cert.certPem, 0o644);
  writeServerFile(keyFile, cert.keyPem, 0o600);
  await tlsAdmin('postgres', 'SELECT pg_reload_conf()');
  // The reload is asynchronous: wait until a new connection is served the new certificate.
  const deadline = Date.now() + 10_000;
  for (;;) {
    let served: string | undefined;
    const client = new pg.Client({
      connectionString: server.url('postgres'),
      ssl: {
        ca: caPem,
        checkServerIdentity: (_host, peer) => {
          served = peer.serialNumber.toUpperCase();
          return undefined;
        },
      },
    });
    await client.connect();
    await client.end();
    if (served === cert.serialNumber) return;
    if (Date.now() > deadline) throw new Error('the server never served the new certificate');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The TLS server's superuser, over verified TLS. */
async function tlsAdmin<R extends pg.QueryResultRow = any>(db: string, sql: string, params: unknown[] = []) {
  const client = new pg.Client({
    connectionString: server.url(db),
    ssl: { rejectUnauthorized: false },
    application_name: 'credbroker-test-admin',
  });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** A log that keeps every line, to read what the broker warned about. */
function capturedLog() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { log: createLogger('info', stream), messages: () => lines.map((l) => JSON.parse(l).msg as string) };
}

function targetUrl(query = ''): string {
  return `${server.url(TARGET_DB)}${query}`;
}

async function brokerWith(
  mount: Record<string, unknown>,
  opts: { store?: Record<string, unknown>; log?: ReturnType<typeof capturedLog> } = {},
) {
  const base = baseTestConfig(storeDb);
  const config = configSchema.parse({
    ...base,
    store: { ...base.store, ...opts.store },
    mounts: {
      db: {
        type: 'postgres',
        connection_url: targetUrl(),
        username_prefix: PREFIX,
        ...mount,
        roles: { reader: { member_of: [GROUP] } },
      },
    },
  });
  const broker = await startBroker(config, { log: (opts.log ?? capturedLog()).log, reaper: false });
  brokers.push(broker);
  return broker;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'credbroker-tls-'));
  chmodSync(dir, 0o755);
  const ca = await createCertificateAuthority({ commonName: 'credbroker test CA' });
  const wrongCa = await createCertificateAuthority({ commonName: 'some other CA' });
  rightCert = await ca.issue({ commonName: 'localhost', dnsNames: ['localhost', '127.0.0.1'] });
  otherNameCert = await ca.issue({ commonName: 'db.elsewhere.example', dnsNames: ['db.elsewhere.example'] });
  caPem = ca.certPem;
  caFile = join(dir, 'ca.pem');
  wrongCaFile = join(dir, 'wrong-ca.pem');
  certFile = join(dir, 'server.crt');
  keyFile = join(dir, 'server.key');
  writeFileSync(caFile, ca.certPem);
  writeFileSync(wrongCaFile, wrongCa.certPem);
  writeServerFile(certFile, rightCert.certPem, 0o644);
  writeServerFile(keyFile, rightCert.keyPem, 0o600);
  // TLS only: a plaintext connection is refused, so whatever logs in did so over TLS.
  const hba = join(dir, 'pg_hba.conf');
  writeServerFile(
    hba,
    ['hostssl all all 127.0.0.1/32 scram-sha-256', 'hostnossl all all 127.0.0.1/32 reject', ''].join('\n'),
    0o644,
  );
  server = await startEmbeddedPostgres({
    password: randomSecret(),
    persistent: false,
    flags: [
      '-c',
      'ssl=on',
      '-c',
      `ssl_cert_file=${certFile}`,
      '-c',
      `ssl_key_file=${keyFile}`,
      '-c',
      `hba_file=${hba}`,
    ],
  });
  await tlsAdmin('postgres', `CREATE DATABASE ${TARGET_DB}`);
  await tlsAdmin('postgres', `CREATE DATABASE ${STORE_DB}`);
  await tlsAdmin('postgres', `CREATE DATABASE ${OTHER_DB}`);
  await tlsAdmin(
    TARGET_DB,
    `CREATE ROLE ${GROUP} NOLOGIN;
     CREATE TABLE public.items (id int PRIMARY KEY);
     INSERT INTO public.items VALUES (1), (2);
     GRANT USAGE ON SCHEMA public TO ${GROUP};
     GRANT SELECT ON public.items TO ${GROUP};`,
  );
  await tlsAdmin(OTHER_DB, `GRANT CREATE, USAGE ON SCHEMA public TO ${GROUP}`);
  storeDb = await freshStoreDatabase('tgtls');
});

afterAll(async () => {
  await Promise.allSettled(brokers.map((b) => b.close()));
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function issue(broker: Broker) {
  const res = await api(broker, 'GET', 'db/creds/reader');
  return res;
}

/** Runs libpq's own client with exactly the environment given (no inherited PG* variable). */
function psql(env: Record<string, string>, args: string[]): string {
  return execFileSync('psql', ['-XAtq', ...args], {
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

/** `KEY='value'` lines of the env format, read back by a real shell. */
function envOf(text: string): Record<string, string> {
  const out = execFileSync('sh', ['-c', 'set -a; eval "$CREDENTIAL"; set +a; env -0'], {
    env: { PATH: process.env.PATH, CREDENTIAL: text },
    encoding: 'utf8',
  });
  return Object.fromEntries(
    out
      .split('\0')
      .filter((l) => /^(PG|DATABASE_URL)/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

describe('a postgres mount over TLS with its own CA', () => {
  it('verify: full and the right CA issue a lease whose user logs in over TLS with verify-full (libpq, env and DATABASE_URL)', async () => {
    const broker = await brokerWith({
      ssl: { ca_file: caFile, verify: 'full' },
      client_sslmode: 'verify-full',
      client_sslrootcert: caFile,
    });
    const res = await issue(broker);
    expect(res.status).toBe(200);
    const data = res.body.data;
    expect(data).toMatchObject({ host: '127.0.0.1', port: server.port, database: TARGET_DB });
    expect(data).toMatchObject({ sslmode: 'verify-full', sslrootcert: caFile });

    // The workload's view: the env format as libpq reads it, then DATABASE_URL alone.
    const env = envOf(formatCredential(res.body, 'env'));
    expect(env).toMatchObject({ PGSSLMODE: 'verify-full', PGSSLROOTCERT: caFile, PGUSER: data.username });
    const query = `SELECT s.ssl, current_user FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()`;
    expect(psql(env, ['-c', query])).toBe(`t|${data.username}`);
    expect(env.DATABASE_URL).toContain(`?sslmode=verify-full&sslrootcert=${caFile}`);
    expect(psql({}, [env.DATABASE_URL!, '-c', query])).toBe(`t|${data.username}`);
    // verify-full with the wrong CA is refused by libpq itself: the credential's advice has teeth.
    expect(() => psql({ ...env, PGSSLROOTCERT: wrongCaFile }, ['-c', 'SELECT 1'])).toThrow(/certificate verify failed/);

    // The leased user over plaintext: refused by the server, so TLS is what carried the login above.
    const plain = new pg.Client({ ...data, user: data.username, ssl: false });
    await expect(plain.connect()).rejects.toThrow(/no encryption/);

    // The broker's own sessions on the target are TLS too.
    const rows = await tlsAdmin(
      'postgres',
      `SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
        WHERE a.application_name LIKE 'credbroker:db%'`,
    );
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((r) => r.ssl === true)).toBe(true);
  });

  it('revoking a user that owns objects in another database reaches that database over TLS too', async () => {
    const broker = await brokerWith({ ssl: { ca_file: caFile } });
    const res = await issue(broker);
    expect(res.status).toBe(200);
    const { username, password } = res.body.data;
    const other = new pg.Client({
      host: '127.0.0.1',
      port: server.port,
      database: OTHER_DB,
      user: username,
      password,
      ssl: { ca: caPem },
    });
    await other.connect();
    await other.query('CREATE TABLE kept_by_lease (id int)');
    expect((await other.query('SELECT current_user AS u')).rows[0].u).toBe(username);
    await other.end();
    const revoked = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: res.body.lease_id });
    expect(revoked.status).toBe(204);
    expect(await tlsAdmin('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1', [username])).toEqual([]);
    expect(await tlsAdmin(OTHER_DB, "SELECT 1 FROM pg_tables WHERE tablename = 'kept_by_lease'")).toEqual([]);
  });

  it('the same mount with a wrong CA: the broker starts, warns naming the mount, and issuing fails with a 502 that says why, creating no role', async () => {
    const captured = capturedLog();
    const broker = await brokerWith({ ssl: { ca_file: wrongCaFile } }, { log: captured });
    const warned = captured.messages().find((m) => m.startsWith('mount "db": target not reachable at start'));
    expect(warned).toMatch(/cannot connect to the target: .+ \(check mounts\.db\.ssl\.ca_file\)$/);

    const res = await issue(broker);
    expect(res.status).toBe(502);
    expect(res.body.errors[0]).toMatch(
      /^db: issue failed: cannot connect to the target: (self-signed certificate in certificate chain|unable to verify the first certificate|unable to get local issuer certificate) \(check mounts\.db\.ssl\.ca_file\)$/,
    );
    expect(JSON.stringify(res.body)).not.toContain(server.password);
    const roles = await tlsAdmin('postgres', `SELECT rolname FROM pg_roles WHERE rolname LIKE $1`, [
      `${PREFIX}\\_reader%`,
    ]);
    const before = roles.length;
    expect((await issue(broker)).status).toBe(502);
    expect(
      (await tlsAdmin('postgres', `SELECT rolname FROM pg_roles WHERE rolname LIKE $1`, [`${PREFIX}\\_reader%`]))
        .length,
    ).toBe(before);
  });

  it("sslmode in connection_url is honoured as libpq's, and an ssl block wins over it", async () => {
    const fromUrl = await brokerWith({ connection_url: targetUrl(`?sslmode=verify-full&sslrootcert=${caFile}`) });
    expect((await issue(fromUrl)).status).toBe(200);
    const wrongInUrl = await brokerWith({ connection_url: targetUrl(`?sslmode=verify-ca&sslrootcert=${wrongCaFile}`) });
    expect((await issue(wrongInUrl)).body.errors[0]).toMatch(/cannot connect to the target: /);
    // sslmode=disable alone would be refused by the server (hostnossl reject); the block's TLS is used.
    const blockWins = await brokerWith({ connection_url: targetUrl('?sslmode=disable'), ssl: { ca_file: caFile } });
    expect((await issue(blockWins)).status).toBe(200);
    const plaintext = await brokerWith({ connection_url: targetUrl('?sslmode=disable') });
    expect((await issue(plaintext)).body.errors[0]).toMatch(/no encryption/);
  });

  it('verify: none encrypts without checking and warns at start, naming the mount', async () => {
    const captured = capturedLog();
    const broker = await brokerWith({ ssl: { verify: 'none' } }, { log: captured });
    expect(captured.messages()).toContainEqual(expect.stringMatching(/^mount "db": TLS without verification/));
    expect((await issue(broker)).status).toBe(200);
    const quiet = capturedLog();
    await brokerWith({ ssl: { ca_file: caFile } }, { log: quiet });
    expect(quiet.messages().filter((m) => m.includes('TLS without verification'))).toEqual([]);
  });

  describe('a server certificate that does not name the host connected to', () => {
    beforeAll(() => serveCertificate(otherNameCert));
    afterAll(() => serveCertificate(rightCert));

    it('verify: ca (chain only) issues; verify: full is refused, saying the name does not match', async () => {
      const chainOnly = await brokerWith({ ssl: { ca_file: caFile, verify: 'ca' } });
      expect((await issue(chainOnly)).status).toBe(200);
      const full = await brokerWith({ ssl: { ca_file: caFile, verify: 'full' } });
      const refused = await issue(full);
      expect(refused.status).toBe(502);
      expect(refused.body.errors[0]).toMatch(
        /^db: issue failed: cannot connect to the target: Hostname\/IP does not match certificate's altnames: .*\(connect by a name the certificate has, or set mounts\.db\.ssl\.verify: ca\)$/,
      );
    });
  });
});

describe('the lease store over TLS', () => {
  it('a broker whose store is the TLS server, with store.ssl, migrates and serves; its store sessions are TLS', async () => {
    const broker = await brokerWith(
      { ssl: { ca_file: caFile } },
      { store: { url: server.url(STORE_DB), ssl: { ca_file: caFile, verify: 'full' } } },
    );
    const res = await issue(broker);
    expect(res.status).toBe(200);
    const [row] = await tlsAdmin(STORE_DB, 'SELECT state FROM credbroker_leases WHERE id = $1', [res.body.lease_id]);
    expect(row).toEqual({ state: 'active' });
    const sessions = await tlsAdmin(
      'postgres',
      `SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
        WHERE a.datname = $1 AND a.application_name LIKE 'credbroker%' AND a.application_name <> 'credbroker-test-admin'`,
      [STORE_DB],
    );
    expect(sessions.map((s) => s.application_name)).toEqual(
      expect.arrayContaining(['credbroker', 'credbroker:process-lock']),
    );
    expect(sessions.every((s) => s.ssl === true)).toBe(true);
    const revoked = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: res.body.lease_id }, ROOT_TOKEN);
    expect(revoked.status).toBe(204);
  });

  it('with a wrong CA, the broker refuses to start with a message naming the lease store and what to check; a missing file names its key', async () => {
    await expect(
      brokerWith({}, { store: { url: server.url(STORE_DB), ssl: { ca_file: wrongCaFile } } }),
    ).rejects.toThrow(/^the lease store: cannot connect: .+ \(check store\.ssl\.ca_file\)$/);
    await expect(
      brokerWith({}, { store: { url: server.url(STORE_DB), ssl: { ca_file: join(dir, 'missing.pem') } } }),
    ).rejects.toThrow(`store.ssl.ca_file: cannot read ${join(dir, 'missing.pem')} (ENOENT)`);
    await expect(brokerWith({ ssl: { ca_file: join(dir, 'missing.pem') } })).rejects.toThrow(
      `mounts.db.ssl.ca_file: cannot read ${join(dir, 'missing.pem')} (ENOENT)`,
    );
  });
});
