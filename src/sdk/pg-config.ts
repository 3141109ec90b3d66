import { readFileSync } from 'node:fs';
import type pg from 'pg';
import type { ConnectionOptions } from 'node:tls';
import { SdkError } from './errors.js';
import type { CredentialData } from './credential.js';

/** A PEM value as it is, or the file a path names (as libpq's sslrootcert). */
function pemOrFile(value: string): string {
  return value.includes('-----BEGIN') ? value : readFileSync(value, 'utf8');
}

/**
 * node-postgres's `ssl` for a libpq `sslmode`: `disable`/`allow`/`prefer` → no TLS (node-postgres
 * cannot fall back), `require` → TLS without verification (as libpq's, unless a root certificate
 * is given), `verify-ca` → the chain only, `verify-full` → the chain and the host name.
 *
 * @example
 * ```ts
 * const ssl = sslFor('verify-full', '/etc/ssl/warehouse-ca.pem');
 * ```
 */
export function sslFor(sslmode: string | undefined, sslrootcert: string | undefined): false | ConnectionOptions {
  const ca = sslrootcert ? { ca: pemOrFile(sslrootcert) } : {};
  switch (sslmode) {
    case undefined:
    case 'disable':
    case 'allow':
    case 'prefer':
      return false;
    case 'require':
      return { ...ca, rejectUnauthorized: Boolean(sslrootcert) };
    case 'verify-ca':
      return { ...ca, rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case 'verify-full':
      return { ...ca, rejectUnauthorized: true };
    default:
      throw new SdkError(`unknown sslmode "${sslmode}" in the credential`);
  }
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/**
 * A `pg` ClientConfig/PoolConfig from a PostgreSQL credential's fields.
 *
 * @example
 * ```ts
 * const client = new pg.Client(pgConfigOf(lease.data));
 * ```
 */
export function pgConfigOf(data: CredentialData): pg.ClientConfig & pg.PoolConfig {
  const user = text(data.username);
  const password = text(data.password);
  if (!user || !password) throw new SdkError('this lease is not a PostgreSQL login (no username and password)');
  const port = data.port === undefined || data.port === null ? undefined : Number(data.port);
  const ssl = sslFor(text(data.sslmode), text(data.sslrootcert));
  return {
    host: text(data.host),
    ...(port ? { port } : {}),
    database: text(data.database),
    user,
    password,
    ...(ssl ? { ssl } : {}),
  };
}
