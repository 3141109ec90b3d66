import { readFileSync } from 'node:fs';
import { createSecureContext, type ConnectionOptions } from 'node:tls';
import { z } from 'zod';
import { ConfigError, StoreUnavailable } from '../errors.js';

/**
 * TLS to a PostgreSQL server (the lease store, a postgres mount's target): one translation from
 * config to the `ssl` option of `pg`, used by every pool and client that reaches either.
 */

export const PG_VERIFY_MODES = ['full', 'ca', 'none'] as const;
export type PgVerify = (typeof PG_VERIFY_MODES)[number];

/**
 * `ssl:` of the store and of a postgres mount. full: the chain and the host name are checked;
 * ca: the chain only (for a server reached by a name its certificate lacks); none: encrypted,
 * nothing checked. Without ca_file, `full` trusts the system's CAs.
 */
export const pgSslSchema = z
  .object({
    ca_file: z.string().min(1).optional(),
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
    verify: z.enum(PG_VERIFY_MODES).default('full'),
  })
  .strict()
  .refine((s) => Boolean(s.cert_file) === Boolean(s.key_file), {
    message: 'give both cert_file and key_file (a client certificate) or neither',
    path: ['key_file'],
  })
  .refine((s) => s.verify !== 'ca' || s.ca_file, {
    // As libpq's verify-ca: against the public CAs, anyone with a certificate from one would pass.
    message: 'verify: ca needs ca_file (the chain is checked against it, and no name is)',
    path: ['ca_file'],
  });

export type PgSslConfig = z.infer<typeof pgSslSchema>;

/** What a pool or client is given: the URL without its TLS parameters, and `pg`'s `ssl` option. */
export interface PgTls {
  connectionString: string;
  /** undefined: nothing was configured, `pg` behaves as it always did. */
  ssl: ConnectionOptions | false | undefined;
  /** How the server is checked when TLS is on; null when it is off or not configured. */
  verify: PgVerify | null;
}

/** URL parameters this module reads (libpq's names, and pg's own `ssl`); they never reach `pg`. */
const URL_TLS_PARAMS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'ssl', 'uselibpqcompat'] as const;
const SSLMODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
type SslMode = (typeof SSLMODES)[number];

const PEM_CERTIFICATE = '-----BEGIN CERTIFICATE-----';

/** A PEM file's text; `certificate`: it must hold one (TLS would silently skip a file that holds none). */
function readPem(path: string, key: string, certificate = false): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ConfigError(`${key}: cannot read ${path} (${code})`);
  }
  if (certificate && !text.includes(PEM_CERTIFICATE))
    throw new ConfigError(`${key}: ${path} holds no PEM certificate (${PEM_CERTIFICATE})`);
  return text;
}

/** Refuses at start what TLS would refuse at the first connect: a file that is not PEM, a key that is not the cert's. */
function checkUsable(options: ConnectionOptions, key: string): ConnectionOptions {
  try {
    createSecureContext({ ca: options.ca, cert: options.cert, key: options.key });
  } catch (err) {
    throw new ConfigError(`${key}: the certificate files are not usable: ${(err as Error).message}`);
  }
  return options;
}

const acceptAnyName = () => undefined;

function fromBlock(ssl: PgSslConfig, key: string): ConnectionOptions {
  const options: ConnectionOptions = {};
  if (ssl.ca_file) options.ca = readPem(ssl.ca_file, `${key}.ssl.ca_file`, true);
  if (ssl.cert_file) options.cert = readPem(ssl.cert_file, `${key}.ssl.cert_file`, true);
  if (ssl.key_file) options.key = readPem(ssl.key_file, `${key}.ssl.key_file`);
  if (ssl.verify === 'ca') options.checkServerIdentity = acceptAnyName;
  if (ssl.verify === 'none') options.rejectUnauthorized = false;
  return checkUsable(options, `${key}.ssl`);
}

/** libpq's meaning of sslmode, as far as `pg` can follow it (it never falls back between TLS and plaintext). */
function fromUrl(params: URLSearchParams, urlKey: string): { ssl: ConnectionOptions | false; verify: PgVerify | null } {
  let mode = params.get('sslmode');
  if (mode === null) {
    // pg's own parameter: ssl=true is verify-full, ssl=no-verify encrypts without checking.
    const flag = params.get('ssl');
    if (flag === 'no-verify') mode = 'require';
    else if (flag === 'true' || flag === '1') mode = 'verify-full';
    else if (flag === 'false' || flag === '0') mode = 'disable';
    else if (flag !== null) throw new ConfigError(`${urlKey}: ssl=${flag} is not one of true, false, no-verify`);
  }
  const rootcert = params.get('sslrootcert');
  const sslcert = params.get('sslcert');
  const sslkey = params.get('sslkey');
  mode ??= rootcert || sslcert ? 'verify-full' : 'disable';
  if (!(SSLMODES as readonly string[]).includes(mode))
    throw new ConfigError(`${urlKey}: sslmode=${mode} is not one of ${SSLMODES.join(', ')}`);
  const sslmode = mode as SslMode;
  if (sslmode === 'disable' || sslmode === 'allow') return { ssl: false, verify: null };
  if (Boolean(sslcert) !== Boolean(sslkey))
    throw new ConfigError(`${urlKey}: give both sslcert and sslkey (a client certificate) or neither`);
  const systemRoots = rootcert === 'system';
  if (systemRoots && sslmode !== 'verify-full')
    throw new ConfigError(`${urlKey}: sslrootcert=system needs sslmode=verify-full, as in libpq`);
  const options: ConnectionOptions = {};
  if (rootcert && !systemRoots) options.ca = readPem(rootcert, `${urlKey} sslrootcert`, true);
  if (sslcert) options.cert = readPem(sslcert, `${urlKey} sslcert`, true);
  if (sslkey) options.key = readPem(sslkey, `${urlKey} sslkey`);
  let verify: PgVerify;
  if (sslmode === 'verify-full') verify = 'full';
  else if (sslmode === 'verify-ca') {
    if (!options.ca) throw new ConfigError(`${urlKey}: sslmode=verify-ca needs sslrootcert (a CA file)`);
    verify = 'ca';
  } else if (sslmode === 'require' && options.ca)
    verify = 'ca'; // libpq: require with a root cert is verify-ca
  else verify = 'none'; // prefer, require
  if (verify === 'ca') options.checkServerIdentity = acceptAnyName;
  if (verify === 'none') options.rejectUnauthorized = false;
  return { ssl: checkUsable(options, urlKey), verify };
}

/**
 * Reads the TLS settings of one connection (files included, now: a missing file fails the start,
 * naming `key`, e.g. `store` or `mounts.db`). An `ssl` block wins over the URL's sslmode and
 * friends as a whole; the URL's TLS parameters are removed either way, so `pg` never applies its
 * own (non-libpq) reading of them, nor reads a file behind the broker's back.
 */
export function pgTlsOptions(url: string, ssl: PgSslConfig | undefined, key: string, urlField = 'url'): PgTls {
  let parsed: URL | null = null;
  // As pg-connection-string does first, so a URL it accepts (a space, a stray "%") is read here too.
  if (/ |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(url)) url = encodeURI(url).replace(/%25(\d\d)/g, '%$1');
  try {
    parsed = new URL(url);
  } catch {
    // Not a URL (a libpq keyword string or a socket path): passed on as it is.
  }
  const present = parsed ? URL_TLS_PARAMS.filter((p) => parsed.searchParams.has(p)) : [];
  let connectionString = url;
  if (parsed && present.length) {
    const stripped = new URL(url);
    for (const p of present) stripped.searchParams.delete(p);
    connectionString = stripped.toString();
  }
  if (ssl) return { connectionString, ssl: fromBlock(ssl, key), verify: ssl.verify };
  if (!parsed || present.length === 0) return { connectionString, ssl: undefined, verify: null };
  return { connectionString, ...fromUrl(parsed.searchParams, `${key}.${urlField}`) };
}

/** Where and how to connect, as a pg Client or Pool config takes it. */
export function pgConnectionConfig(tls: PgTls): { connectionString: string; ssl?: ConnectionOptions | false } {
  return tls.ssl === undefined
    ? { connectionString: tls.connectionString }
    : { connectionString: tls.connectionString, ssl: tls.ssl };
}

/** The warning to log at start when the server's certificate is not checked, else null. */
export function unverifiedTlsWarning(what: string, tls: PgTls): string | null {
  if (tls.verify !== 'none') return null;
  return `${what}: TLS without verification (ssl.verify: none or sslmode=require/prefer): the connection is encrypted, but anyone in the path can pose as the server`;
}

/** OpenSSL's verify errors that a wrong or missing CA file causes. */
const CHAIN_ERRORS = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);
const DATE_ERRORS = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);
const SOCKET_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH']);
const NO_TLS_ON_SERVER = 'The server does not support SSL connections';

/**
 * A failure to reach the server, said in words with what to check (`key` names the config, e.g.
 * `mounts.db`); null for any other error (a query's own). Node's texts carry no URL or password.
 */
export function describeConnectError(err: unknown, key: string): string | null {
  const { code, message, errors } = err as { code?: string; message?: string; errors?: { message?: string }[] };
  // Node's AggregateError (each address of a name refused) has an empty message of its own.
  const reason = message || errors?.map((e) => e.message).join('; ') || code || String(err);
  if (code && CHAIN_ERRORS.has(code)) return `${reason} (check ${key}.ssl.ca_file)`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `${reason} (connect by a name the certificate has, or set ${key}.ssl.verify: ca)`;
  if (code && DATE_ERRORS.has(code)) return `${reason} (the server's certificate is outside its validity dates)`;
  if (reason === NO_TLS_ON_SERVER) return `${reason} (turn ssl on in the server, or remove ${key}.ssl)`;
  if (code && SOCKET_ERRORS.has(code)) return reason;
  return null;
}

/** A failure to reach the lease store as a StoreUnavailable that says why; any other error as it is. */
export function explainStoreError(err: unknown): unknown {
  const reason = describeConnectError(err, 'store');
  return reason ? new StoreUnavailable(`the lease store: cannot connect: ${reason}`) : err;
}
