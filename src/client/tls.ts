import { readFileSync } from 'node:fs';
import { Agent } from 'undici';

/**
 * How a client verifies the broker and proves itself over https, from the environment.
 *
 * @example
 * ```ts
 * new Broker({ tls: { ca: readFileSync('/etc/credbroker/ca.pem', 'utf8') } });
 * ```
 */
export interface ClientTls {
  /** PEM CA bundle trusted for the broker's certificate (besides Node's own roots). */
  ca?: string;
  /** PEM client certificate and key, for a listener with client_ca_file or the cert auth method. */
  cert?: string;
  key?: string;
  /** No verification of the broker's certificate: for a throwaway test only. */
  skipVerify?: boolean;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);

/** The first of `names` that is set (CREDBROKER_* before VAULT_*), with its name. */
function firstSet(env: NodeJS.ProcessEnv, names: string[]): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = env[name];
    if (value) return { name, value };
  }
  return undefined;
}

function readVar(env: NodeJS.ProcessEnv, names: string[]): string | undefined {
  const set = firstSet(env, names);
  if (!set) return undefined;
  try {
    return readFileSync(set.value, 'utf8');
  } catch (err) {
    throw new Error(`${set.name}: cannot read ${set.value}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * CREDBROKER_CACERT / VAULT_CACERT, CREDBROKER_CLIENT_CERT + CREDBROKER_CLIENT_KEY (or the VAULT_
 * names), CREDBROKER_SKIP_VERIFY / VAULT_SKIP_VERIFY. Files are read now: a bad path fails here,
 * naming the variable, not later as a handshake error.
 *
 * @example
 * ```ts
 * const tls = clientTlsFromEnv({ CREDBROKER_CACERT: '/etc/credbroker/ca.pem' });
 * ```
 */
export function clientTlsFromEnv(env: NodeJS.ProcessEnv = process.env): ClientTls {
  const cert = readVar(env, ['CREDBROKER_CLIENT_CERT', 'VAULT_CLIENT_CERT']);
  const key = readVar(env, ['CREDBROKER_CLIENT_KEY', 'VAULT_CLIENT_KEY']);
  if (Boolean(cert) !== Boolean(key))
    throw new Error(
      'CREDBROKER_CLIENT_CERT and CREDBROKER_CLIENT_KEY go together: set both (the certificate and its key) or neither',
    );
  const skip = firstSet(env, ['CREDBROKER_SKIP_VERIFY', 'VAULT_SKIP_VERIFY']);
  return {
    ca: readVar(env, ['CREDBROKER_CACERT', 'VAULT_CACERT']),
    cert,
    key,
    skipVerify: skip ? TRUE.has(skip.value.toLowerCase()) : false,
  };
}

/**
 * An undici dispatcher for `tls`, or undefined when Node's defaults do (no CA, no client cert, verification on).
 *
 * @example
 * ```ts
 * await fetch(url, { dispatcher: tlsDispatcher(clientTlsFromEnv()) });
 * ```
 */
export function tlsDispatcher(tls: ClientTls): Agent | undefined {
  if (!tls.ca && !tls.cert && !tls.skipVerify) return undefined;
  return new Agent({
    connect: {
      ...(tls.ca ? { ca: tls.ca } : {}),
      ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}),
      rejectUnauthorized: !tls.skipVerify,
    },
  });
}

/** The OpenSSL verification errors a client sees when it does not trust the broker's certificate. */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * What to do about a connection error `code`, when it is a TLS one.
 *
 * @example
 * ```ts
 * throw new Error(`cannot reach the broker: ${code}${tlsHint(code)}`);
 * ```
 */
export function tlsHint(code: string | undefined): string {
  if (code && UNTRUSTED.has(code))
    return ' (the broker certificate is not trusted: set CREDBROKER_CACERT to the CA file that signed it)';
  if (code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER')
    return ' (TLS handshake failed: is CREDBROKER_ADDR https:// for a TLS listener and http:// otherwise?)';
  return '';
}
