import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';

export type SigningAlg = 'RS256' | 'ES256';

interface HeldKey {
  kid: string;
  alg: SigningAlg;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
  /** Served at /jwks.json; an unpublished key signs tokens no verifier can know. */
  published: boolean;
}

export interface SignOptions {
  /** The key to sign with; by default the newest published key of `alg` (or of any alg). */
  kid?: string;
  alg?: SigningAlg;
  /** Seconds from now (negative: in the past), or a jose time span like '5m'; null for no exp. Default 300 s. Ignored when the claims carry `exp`. */
  expiresIn?: number | string | null;
  /** Seconds from now (negative: in the past). Default: no nbf unless the claims carry one. */
  notBefore?: number;
  /** Extra protected-header fields (typ…). */
  header?: Record<string, unknown>;
}

export interface JwksServer {
  /** Base URL, e.g. http://127.0.0.1:PORT: the OIDC discovery URL, and the `issuer` of its discovery document. */
  readonly url: string;
  readonly jwksUrl: string;
  readonly issuer: string;
  /** GETs of /jwks.json so far. */
  readonly jwksFetches: number;
  /** GETs of /.well-known/openid-configuration so far. */
  readonly discoveryFetches: number;
  /** Kids served now, oldest first. */
  kids(): string[];
  /** A new key pair; published (served) unless told otherwise. Returns its kid. */
  addKey(opts?: { alg?: SigningAlg; kid?: string; published?: boolean }): Promise<string>;
  /** Adds a new published key and, with dropOld, stops serving every older one. Returns the new kid. */
  rotate(opts?: { alg?: SigningAlg; dropOld?: boolean }): Promise<string>;
  /** Stops serving a key (it can still sign: tokens a verifier cannot check any more). */
  unpublish(kid: string): void;
  sign(claims: JWTPayload & Record<string, unknown>, opts?: SignOptions): Promise<string>;
  publicJwk(kid: string): JWK;
  publicKeyPem(kid: string): Promise<string>;
  /** Make /jwks.json answer this status (with a JSON error body) until reset with undefined. */
  failJwksWith(status: number | undefined): void;
  close(): Promise<void>;
}

/**
 * A real HTTP identity provider for login tests: serves a JWKS at /jwks.json and an OIDC
 * discovery document at /.well-known/openid-configuration, and signs tokens with its keys.
 */
export async function startJwksServer(opts: { algs?: SigningAlg[]; issuer?: string } = {}): Promise<JwksServer> {
  const keys: HeldKey[] = [];
  let jwksFetches = 0;
  let discoveryFetches = 0;
  let failStatus: number | undefined;
  let base = '';

  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        'cache-control': 'no-store',
      });
      res.end(text);
    };
    if (req.method === 'GET' && path === '/jwks.json') {
      jwksFetches++;
      if (failStatus !== undefined) return send(failStatus, { error: 'unavailable' });
      return send(200, { keys: keys.filter((k) => k.published).map((k) => k.publicJwk) });
    }
    if (req.method === 'GET' && path === '/.well-known/openid-configuration') {
      discoveryFetches++;
      return send(200, {
        issuer: issuer(),
        jwks_uri: `${base}/jwks.json`,
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256', 'ES256'],
      });
    }
    send(404, { error: 'not found' });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer = () => opts.issuer ?? base;

  const find = (kid: string): HeldKey => {
    const key = keys.find((k) => k.kid === kid);
    if (!key) throw new Error(`jwks-server: no key ${kid}`);
    return key;
  };

  const addKey: JwksServer['addKey'] = async ({
    alg = 'RS256',
    kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`,
    published = true,
  } = {}) => {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    keys.push({ kid, alg, privateKey, publicKey, publicJwk, published });
    return kid;
  };

  for (const alg of opts.algs ?? ['RS256']) await addKey({ alg });

  const toEpoch = (secondsFromNow: number) => Math.floor(Date.now() / 1000) + secondsFromNow;

  return {
    url: base,
    jwksUrl: `${base}/jwks.json`,
    get issuer() {
      return issuer();
    },
    get jwksFetches() {
      return jwksFetches;
    },
    get discoveryFetches() {
      return discoveryFetches;
    },
    kids: () => keys.filter((k) => k.published).map((k) => k.kid),
    addKey,
    async rotate({ alg = 'RS256', dropOld = false } = {}) {
      const kid = await addKey({ alg });
      if (dropOld) for (const key of keys) if (key.kid !== kid) key.published = false;
      return kid;
    },
    unpublish(kid) {
      find(kid).published = false;
    },
    async sign(claims, { kid, alg, expiresIn = 300, notBefore, header = {} } = {}) {
      const candidates = keys.filter((k) => (kid ? k.kid === kid : k.published && (!alg || k.alg === alg)));
      const key = candidates[candidates.length - 1];
      if (!key) throw new Error(`jwks-server: no key for kid=${kid} alg=${alg}`);
      if (alg && key.alg !== alg) throw new Error(`jwks-server: key ${key.kid} is ${key.alg}, not ${alg}`);
      const jwt = new SignJWT({ ...claims }).setProtectedHeader({ typ: 'JWT', ...header, alg: key.alg, kid: key.kid });
      if (claims.iat === undefined) jwt.setIssuedAt();
      if (claims.exp === undefined && expiresIn !== null)
        jwt.setExpirationTime(typeof expiresIn === 'number' ? toEpoch(expiresIn) : expiresIn);
      if (claims.nbf === undefined && notBefore !== undefined) jwt.setNotBefore(toEpoch(notBefore));
      return jwt.sign(key.privateKey);
    },
    publicJwk: (kid) => find(kid).publicJwk,
    publicKeyPem: (kid) => exportSPKI(find(kid).publicKey),
    failJwksWith(status) {
      failStatus = status;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** base64url of a JSON value, for hand-made tokens. */
export const b64url = (value: unknown): string =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

export const K8S_ISSUER = 'https://kubernetes.default.svc.cluster.local';

/** The claims of a projected Kubernetes service-account token (audience-bound, pod-bound). */
export function kubernetesClaims(
  opts: { namespace?: string; serviceAccount?: string; uid?: string; audience?: string[]; issuer?: string } = {},
): JWTPayload & Record<string, unknown> {
  const namespace = opts.namespace ?? 'etl';
  const serviceAccount = opts.serviceAccount ?? 'reader';
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: opts.issuer ?? K8S_ISSUER,
    aud: opts.audience ?? ['credbroker'],
    sub: `system:serviceaccount:${namespace}:${serviceAccount}`,
    iat: now,
    nbf: now,
    exp: now + 600,
    'kubernetes.io': {
      namespace,
      serviceaccount: { name: serviceAccount, uid: opts.uid ?? randomUUID() },
      pod: { name: `${serviceAccount}-job-${randomUUID().slice(0, 5)}`, uid: randomUUID() },
      node: { name: 'node-1', uid: randomUUID() },
    },
  };
}

/** An auth role bound to a Kubernetes namespace, copying it into the login's metadata as `namespace`. */
export function kubernetesRole(namespace: string | string[], policies: string[], extra: Record<string, unknown> = {}) {
  return {
    bound_audiences: ['credbroker'],
    bound_claims: { '/kubernetes.io/namespace': namespace },
    user_claim: 'sub',
    claim_mappings: { '/kubernetes.io/namespace': 'namespace' },
    token_policies: policies,
    token_ttl: '10m',
    ...extra,
  };
}

/** A `kubernetes` auth mount verifying against this server's JWKS; every unknown kid refetches at once. */
export function kubernetesAuthMount(server: { jwksUrl: string }, roles: Record<string, unknown>) {
  return { type: 'kubernetes', jwks_url: server.jwksUrl, bound_issuer: K8S_ISSUER, jwks_refresh_interval: 0, roles };
}
