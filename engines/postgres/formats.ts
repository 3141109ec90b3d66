import type { CredentialFormats } from '../../src/engines.js';

const pgpassEscape = (v: unknown) => String(v ?? '*').replace(/[\\:]/g, (c) => `\\${c}`);

/**
 * A libpq connection URI of the credential, with sslmode and sslrootcert as query parameters
 * when the mount tells them; null when the credential lacks a login or a host.
 */
export function databaseUrl(data: Record<string, unknown>): string | null {
  const { username, password, host, port, database, sslmode, sslrootcert } = data;
  if (typeof username !== 'string' || typeof password !== 'string' || typeof host !== 'string') return null;
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const portPart = port === undefined || port === null ? '' : `:${String(port)}`;
  const path = typeof database === 'string' ? `/${encodeURIComponent(database)}` : '';
  // Percent-encoding only (libpq reads no "+" as a space); "/" may stay as it is in a query (RFC 3986).
  const param = (name: string, value: unknown) =>
    typeof value === 'string' ? [`${name}=${encodeURIComponent(value).replace(/%2F/gi, '/')}`] : [];
  const query = [...param('sslmode', sslmode), ...param('sslrootcert', sslrootcert)];
  const search = query.length ? `?${query.join('&')}` : '';
  return `postgres://${encodeURIComponent(username)}:${encodeURIComponent(password)}@${hostPart}${portPart}${path}${search}`;
}

/** As libpq, psql and every PostgreSQL driver read a login. */
export const postgresFormats: CredentialFormats = {
  env: {
    username: 'PGUSER',
    password: 'PGPASSWORD',
    host: 'PGHOST',
    port: 'PGPORT',
    database: 'PGDATABASE',
    sslmode: 'PGSSLMODE',
    sslrootcert: 'PGSSLROOTCERT',
  },
  envDerived(data): Record<string, string> {
    const url = databaseUrl(data);
    return url ? { DATABASE_URL: url } : {};
  },
  files: {
    /** One hostname:port:database:username:password line, `*` for what the credential lacks. */
    pgpass({ data }) {
      if (!('username' in data) || !('password' in data))
        throw new Error('pgpass format needs a credential with username and password');
      return `${[data.host, data.port, data.database, data.username, data.password].map(pgpassEscape).join(':')}\n`;
    },
  },
};
