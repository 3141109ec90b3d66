import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { engines } from '../../engines/index.js';
import { credentialFormats, formatCredential } from '../../src/cli/credential-format.js';

const envelope = {
  lease_id: 'demo/creds/readonly/AbCdEfGhIjKlMnOpQrStUvWx',
  lease_duration: 3600,
  renewable: true,
  data: {
    username: 'cb_readonly_abc123',
    password: 'pw-Base64url_value',
    host: '127.0.0.1',
    port: 5432,
    database: 'demo',
  },
};

/** Sources an env-format text in a real POSIX shell and reads back the named variables. */
function sourceInShell(text: string, names: string[]): string[] {
  const script = `set -a; eval "$CREDENTIAL"; set +a; ${names.map((n) => `printf '%s\\0' "$${n}"`).join('; ')}`;
  const out = execFileSync('sh', ['-c', script], {
    env: { PATH: process.env.PATH, CREDENTIAL: text },
    encoding: 'utf8',
  });
  return out.split('\0').slice(0, names.length);
}

describe('formatCredential: json', () => {
  it('writes the whole envelope as indented JSON ending in a newline', () => {
    const text = formatCredential(envelope, 'json');
    expect(text.endsWith('}\n')).toBe(true);
    expect(JSON.parse(text)).toEqual(envelope);
    expect(text).toContain('\n  "lease_id": ');
  });
});

describe('formatCredential: env', () => {
  it('names the PostgreSQL fields as libpq reads them, plus the lease id and duration', () => {
    expect(formatCredential(envelope, 'env')).toBe(
      [
        "CREDBROKER_LEASE_ID='demo/creds/readonly/AbCdEfGhIjKlMnOpQrStUvWx'",
        'CREDBROKER_LEASE_DURATION=3600',
        "PGUSER='cb_readonly_abc123'",
        "PGPASSWORD='pw-Base64url_value'",
        "PGHOST='127.0.0.1'",
        "PGPORT='5432'",
        "PGDATABASE='demo'",
        "DATABASE_URL='postgres://cb_readonly_abc123:pw-Base64url_value@127.0.0.1:5432/demo'",
        '',
      ].join('\n'),
    );
  });

  it('upper-cases other keys into valid variable names', () => {
    const text = formatCredential({ ...envelope, data: { 'access-key': 'AK', 'session.token': 'ST' } }, 'env');
    expect(text).toContain("ACCESS_KEY='AK'\n");
    expect(text).toContain("SESSION_TOKEN='ST'\n");
  });

  it('quotes values so a shell reads back exactly what the broker sent', () => {
    const nasty = `it's $HOME \`id\` "q" \\ ; & | * \n next`;
    const text = formatCredential({ ...envelope, data: { ...envelope.data, password: nasty } }, 'env');
    const [user, password, leaseId] = sourceInShell(text, ['PGUSER', 'PGPASSWORD', 'CREDBROKER_LEASE_ID']);
    expect(user).toBe('cb_readonly_abc123');
    expect(password).toBe(nasty);
    expect(leaseId).toBe(envelope.lease_id);
  });
});

describe('formatCredential: how to connect safely (client_sslmode, client_sslrootcert)', () => {
  const safe = {
    ...envelope,
    data: { ...envelope.data, sslmode: 'verify-full', sslrootcert: '/etc/ssl/certs/rds-global bundle.pem' },
  };

  it('env: PGSSLMODE and PGSSLROOTCERT, and both in DATABASE_URL, read back by a real shell', () => {
    const text = formatCredential(safe, 'env');
    const [mode, rootcert, url] = sourceInShell(text, ['PGSSLMODE', 'PGSSLROOTCERT', 'DATABASE_URL']);
    expect(mode).toBe('verify-full');
    expect(rootcert).toBe('/etc/ssl/certs/rds-global bundle.pem');
    expect(url).toBe(
      'postgres://cb_readonly_abc123:pw-Base64url_value@127.0.0.1:5432/demo?sslmode=verify-full&sslrootcert=/etc/ssl/certs/rds-global%20bundle.pem',
    );
    // As a URL parser (libpq's, pg's) reads it back.
    const parsed = new URL(url!);
    expect(parsed.searchParams.get('sslmode')).toBe('verify-full');
    expect(parsed.searchParams.get('sslrootcert')).toBe('/etc/ssl/certs/rds-global bundle.pem');
  });

  it('DATABASE_URL escapes what a password or database name may hold, and brackets an IPv6 host', () => {
    const data = { ...safe.data, password: 'p@ss:/w?#%', database: 'db/x', host: '::1', sslmode: 'require' };
    const [url] = sourceInShell(formatCredential({ ...safe, data }, 'env'), ['DATABASE_URL']);
    const parsed = new URL(url!);
    expect(decodeURIComponent(parsed.password)).toBe('p@ss:/w?#%');
    expect(decodeURIComponent(parsed.pathname.slice(1))).toBe('db/x');
    expect(parsed.hostname).toBe('[::1]');
    expect(parsed.searchParams.get('sslmode')).toBe('require');
  });

  it('json: the envelope carries data.sslmode and data.sslrootcert', () => {
    expect(JSON.parse(formatCredential(safe, 'json')).data).toMatchObject({
      sslmode: 'verify-full',
      sslrootcert: '/etc/ssl/certs/rds-global bundle.pem',
    });
  });
});

describe('formatCredential: pgpass', () => {
  it('writes one hostname:port:database:username:password line', () => {
    expect(formatCredential(envelope, 'pgpass')).toBe('127.0.0.1:5432:demo:cb_readonly_abc123:pw-Base64url_value\n');
  });

  it('escapes ":" and "\\" with a backslash, as libpq expects', () => {
    const data = { ...envelope.data, database: 'db:1', username: 'us\\er', password: 'p:a\\ss:' };
    expect(formatCredential({ ...envelope, data }, 'pgpass')).toBe('127.0.0.1:5432:db\\:1:us\\\\er:p\\:a\\\\ss\\:\n');
  });

  it('writes the "*" wildcard for a missing host, port or database', () => {
    expect(formatCredential({ ...envelope, data: { username: 'u', password: 'p' } }, 'pgpass')).toBe('*:*:*:u:p\n');
  });

  it('refuses a credential without username and password', () => {
    expect(() => formatCredential({ ...envelope, data: { access_key: 'AK', secret_key: 'SK' } }, 'pgpass')).toThrow(
      'pgpass format needs a credential with username and password',
    );
  });
});

describe('formatCredential: formats come from the engines', () => {
  it("names an AWS credential's fields as the AWS SDKs read them", () => {
    const text = formatCredential(
      { ...envelope, data: { access_key: 'AKIA1', secret_key: 'sk', session_token: 'st' } },
      'env',
    );
    expect(text).toContain("AWS_ACCESS_KEY_ID='AKIA1'\nAWS_SECRET_ACCESS_KEY='sk'\nAWS_SESSION_TOKEN='st'\n");
  });

  it("uses a registry's own engine for env names and extra formats, and lists its formats", () => {
    const kv = {
      ...engines.postgres,
      type: 'kv',
      formats: {
        env: { api_key: 'KV_API_KEY' },
        files: { netrc: ({ data }: { data: Record<string, unknown> }) => `password ${String(data.api_key)}\n` },
      },
    };
    const registry = { ...engines, kv };
    const issued = { ...envelope, data: { api_key: 'k-1' } };
    expect(formatCredential(issued, 'env', {}, registry)).toContain("KV_API_KEY='k-1'\n");
    expect(formatCredential(issued, 'netrc', {}, registry)).toBe('password k-1\n');
    expect(credentialFormats(registry)).toEqual([
      'json',
      'env',
      'pgpass',
      'aws-credentials',
      'credential-process',
      'netrc',
    ]);
    expect(() => formatCredential(issued, 'netrc')).toThrow('unknown format "netrc"');
  });
});
