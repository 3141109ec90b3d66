import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { describeConnectError, pgSslSchema, pgTlsOptions, unverifiedTlsWarning } from '../../src/store/pg-ssl.js';
import { createCertificateAuthority } from '../../src/tls/certificates.js';

const BASE = 'postgres://admin:s3cr%40t@db.internal:5432/app';
let dir: string;
let caFile: string;
let certFile: string;
let keyFile: string;
let otherKeyFile: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pg-ssl-'));
  const ca = await createCertificateAuthority();
  const leaf = await ca.issue({ commonName: 'broker', usage: 'client' });
  const other = await ca.issue({ commonName: 'other', usage: 'client' });
  caFile = join(dir, 'ca.pem');
  certFile = join(dir, 'client.pem');
  keyFile = join(dir, 'client.key');
  otherKeyFile = join(dir, 'other.key');
  writeFileSync(caFile, ca.certPem);
  writeFileSync(certFile, leaf.certPem);
  writeFileSync(keyFile, leaf.keyPem);
  writeFileSync(otherKeyFile, other.keyPem);
});

const thrown = (work: () => unknown): Error => {
  try {
    work();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a throw');
};

describe('pgTlsOptions: sslmode in the URL, as libpq reads it', () => {
  it('leaves a URL without TLS parameters exactly as it was, and pg as it always was', () => {
    expect(pgTlsOptions(BASE, undefined, 'store')).toEqual({ connectionString: BASE, ssl: undefined, verify: null });
  });

  it('disable and allow: plaintext', () => {
    for (const mode of ['disable', 'allow'])
      expect(pgTlsOptions(`${BASE}?sslmode=${mode}`, undefined, 'store')).toEqual({
        connectionString: BASE,
        ssl: false,
        verify: null,
      });
  });

  it('prefer and require without a root certificate: encrypted, nothing checked, and a warning', () => {
    for (const mode of ['prefer', 'require']) {
      const tls = pgTlsOptions(`${BASE}?sslmode=${mode}`, undefined, 'store');
      expect(tls).toMatchObject({ connectionString: BASE, ssl: { rejectUnauthorized: false }, verify: 'none' });
      expect(unverifiedTlsWarning('the lease store', tls)).toMatch(/^the lease store: TLS without verification/);
    }
  });

  it('require with sslrootcert is verify-ca (chain checked, any name), as in libpq', () => {
    const tls = pgTlsOptions(`${BASE}?sslmode=require&sslrootcert=${caFile}`, undefined, 'store');
    expect(tls.verify).toBe('ca');
    const ssl = tls.ssl as { ca: string; rejectUnauthorized?: boolean; checkServerIdentity: () => unknown };
    expect(ssl.ca).toContain('BEGIN CERTIFICATE');
    expect(ssl.rejectUnauthorized).not.toBe(false);
    expect(ssl.checkServerIdentity()).toBeUndefined();
    expect(unverifiedTlsWarning('the lease store', tls)).toBeNull();
  });

  it('verify-full checks chain and name; without sslrootcert it trusts the system CAs', () => {
    const withCa = pgTlsOptions(`${BASE}?sslmode=verify-full&sslrootcert=${caFile}`, undefined, 'store');
    expect(withCa.verify).toBe('full');
    expect(withCa.ssl).toEqual({ ca: expect.stringContaining('BEGIN CERTIFICATE') });
    expect(pgTlsOptions(`${BASE}?sslmode=verify-full`, undefined, 'store').ssl).toEqual({});
    expect(pgTlsOptions(`${BASE}?sslmode=verify-full&sslrootcert=system`, undefined, 'store').ssl).toEqual({});
  });

  it('refuses verify-ca without a CA, an unknown sslmode, and sslrootcert=system below verify-full', () => {
    expect(thrown(() => pgTlsOptions(`${BASE}?sslmode=verify-ca`, undefined, 'mounts.db', 'connection_url'))).toEqual(
      new ConfigError('mounts.db.connection_url: sslmode=verify-ca needs sslrootcert (a CA file)'),
    );
    expect(thrown(() => pgTlsOptions(`${BASE}?sslmode=verfy-full`, undefined, 'store')).message).toMatch(
      /^store\.url: sslmode=verfy-full is not one of disable, allow/,
    );
    expect(thrown(() => pgTlsOptions(`${BASE}?sslmode=require&sslrootcert=system`, undefined, 'store'))).toBeInstanceOf(
      ConfigError,
    );
  });

  it('strips every TLS parameter and keeps the rest of the URL, the encoded password included', () => {
    const tls = pgTlsOptions(
      `${BASE}?application_name=x&sslmode=verify-full&sslrootcert=${caFile}&sslcert=${certFile}&sslkey=${keyFile}`,
      undefined,
      'store',
    );
    expect(tls.connectionString).toBe(`${BASE}?application_name=x`);
    expect(tls.ssl).toMatchObject({
      cert: expect.stringContaining('CERTIFICATE'),
      key: expect.stringContaining('KEY'),
    });
  });
});

describe('pgTlsOptions: a URL pg would fix up first', () => {
  it('reads sslmode from a URL with a space or a stray "%" in its password, as pg-connection-string would', () => {
    const tls = pgTlsOptions('postgres://admin:p w%zz@db:5432/app?sslmode=require', undefined, 'store');
    expect(tls.verify).toBe('none');
    expect(tls.connectionString).toBe('postgres://admin:p%20w%25zz@db:5432/app');
  });
});

describe('pgTlsOptions: the ssl block', () => {
  const block = (s: unknown) => pgSslSchema.parse(s);

  it('wins over the URL as a whole', () => {
    const tls = pgTlsOptions(`${BASE}?sslmode=disable`, block({ ca_file: caFile }), 'store');
    expect(tls).toEqual({
      connectionString: BASE,
      ssl: { ca: expect.stringContaining('CERTIFICATE') },
      verify: 'full',
    });
  });

  it('verify: ca accepts any name, verify: none checks nothing and warns', () => {
    const ca = pgTlsOptions(BASE, block({ ca_file: caFile, verify: 'ca' }), 'store');
    expect((ca.ssl as { checkServerIdentity: () => unknown }).checkServerIdentity()).toBeUndefined();
    const none = pgTlsOptions(BASE, block({ verify: 'none' }), 'mounts.db');
    expect(none.ssl).toEqual({ rejectUnauthorized: false });
    expect(unverifiedTlsWarning('mount "db"', none)).toMatch(/^mount "db": TLS without verification/);
  });

  it('a missing or unreadable file is a config error naming the key and the path', () => {
    expect(thrown(() => pgTlsOptions(BASE, block({ ca_file: '/nonexistent/ca.pem' }), 'mounts.db'))).toEqual(
      new ConfigError('mounts.db.ssl.ca_file: cannot read /nonexistent/ca.pem (ENOENT)'),
    );
    expect(thrown(() => pgTlsOptions(BASE, block({ ca_file: dir }), 'store')).message).toBe(
      `store.ssl.ca_file: cannot read ${dir} (EISDIR)`,
    );
  });

  it("a key that is not the certificate's, or a CA file that is not PEM, is refused at start", () => {
    const mismatched = thrown(() =>
      pgTlsOptions(BASE, block({ ca_file: caFile, cert_file: certFile, key_file: otherKeyFile }), 'store'),
    );
    expect(mismatched).toBeInstanceOf(ConfigError);
    expect(mismatched.message).toMatch(/^store\.ssl: the certificate files are not usable: /);
    const notPem = join(dir, 'not.pem');
    writeFileSync(notPem, 'hello');
    expect(thrown(() => pgTlsOptions(BASE, block({ ca_file: notPem }), 'store')).message).toBe(
      `store.ssl.ca_file: ${notPem} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    );
  });

  it('the schema wants both halves of a client certificate, and a CA for verify: ca', () => {
    expect(pgSslSchema.safeParse({ cert_file: certFile }).success).toBe(false);
    expect(pgSslSchema.safeParse({ verify: 'ca' }).success).toBe(false);
    expect(pgSslSchema.parse({})).toEqual({ verify: 'full' });
  });
});

describe('describeConnectError', () => {
  it('says what to check for a chain, a name and a server without TLS; null for a query error', () => {
    const chain = Object.assign(new Error('self-signed certificate in certificate chain'), {
      code: 'SELF_SIGNED_CERT_IN_CHAIN',
    });
    expect(describeConnectError(chain, 'mounts.db')).toBe(
      'self-signed certificate in certificate chain (check mounts.db.ssl.ca_file)',
    );
    const name = Object.assign(new Error("Hostname/IP does not match certificate's altnames"), {
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
    expect(describeConnectError(name, 'store')).toMatch(/set store\.ssl\.verify: ca\)$/);
    expect(describeConnectError(new Error('The server does not support SSL connections'), 'store')).toMatch(
      /turn ssl on/,
    );
    expect(describeConnectError(Object.assign(new Error('duplicate key'), { code: '23505' }), 'store')).toBeNull();
    const refused = Object.assign(
      new AggregateError([
        new Error('connect ECONNREFUSED ::1:5432'),
        new Error('connect ECONNREFUSED 127.0.0.1:5432'),
      ]),
      { code: 'ECONNREFUSED' },
    );
    expect(describeConnectError(refused, 'store')).toBe(
      'connect ECONNREFUSED ::1:5432; connect ECONNREFUSED 127.0.0.1:5432',
    );
  });
});
