import { createPublicKey, type KeyObject } from 'node:crypto';
import {
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { InvalidRequest, TargetError, messageOf } from '../errors.js';
import type { AuthRoleConfig, JwtAuthMountConfig } from './auth-config.js';
import { claimMatches, claimValue } from './claims.js';
import { ClusterClient, clusterAccessFor } from './cluster-client.js';
import { TokenReviewer } from './token-review.js';
import type { Identity } from './identity.js';

/** jose's error codes, turned into the reasons a client can act on. */
const REASONS: Record<string, string> = {
  ERR_JWT_EXPIRED: 'token is expired',
  ERR_JOSE_ALG_NOT_ALLOWED: 'signing algorithm not allowed',
  ERR_JWKS_NO_MATCHING_KEY: "no key matches the token's key id",
  ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'several keys match the token',
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'signature is invalid',
  ERR_JWS_INVALID: 'token is malformed',
  ERR_JWT_INVALID: 'token is malformed',
  ERR_JOSE_NOT_SUPPORTED: 'signing algorithm not supported',
};

export interface VerifiedLogin {
  identity: Omit<Identity, 'accessor'>;
  role: string;
  roleConfig: AuthRoleConfig;
}

/** One JWT auth mount: verifies a presented JWT and binds it to one of the mount's roles. */
export class JwtAuthMount {
  private keySource: JWTVerifyGetKey | KeyObject[] | undefined;
  private readonly cluster: ClusterClient;
  private readonly reviewer: TokenReviewer | undefined;

  constructor(
    readonly name: string,
    private readonly config: JwtAuthMountConfig,
    exists?: (path: string) => boolean,
  ) {
    this.cluster = new ClusterClient(name, clusterAccessFor(config, exists));
    if (config.token_reviewer) {
      const host = config.kubernetes_host ?? new URL((config.jwks_url ?? config.oidc_discovery_url)!).origin;
      this.reviewer = new TokenReviewer(name, host, this.cluster);
    }
  }

  async verify(roleName: unknown, jwt: unknown): Promise<VerifiedLogin> {
    if (typeof roleName !== 'string' || !roleName) throw new InvalidRequest('missing role');
    const role = Object.hasOwn(this.config.roles, roleName) ? this.config.roles[roleName]! : undefined;
    if (!role) throw new InvalidRequest(`role "${roleName.slice(0, 64)}" could not be found`);
    if (typeof jwt !== 'string' || !jwt) throw new InvalidRequest('missing jwt');
    if (Buffer.byteLength(jwt) > this.config.max_jwt_bytes)
      throw new InvalidRequest(`jwt is too large (over ${this.config.max_jwt_bytes} bytes)`);

    const verified = await this.verifySignature(jwt);
    const claims = this.config.type === 'kubernetes' ? withKubernetesClaimsReconciled(verified) : verified;
    const identity = this.bind(claims, roleName, role);
    // After the local checks, so a token that fails them never reaches the API server.
    if (this.reviewer)
      await this.reviewer.review(jwt, role.bound_audiences, typeof claims.sub === 'string' ? claims.sub : undefined);
    return { identity, role: roleName, roleConfig: role };
  }

  private async verifySignature(jwt: string): Promise<JWTPayload> {
    const options = {
      algorithms: this.config.jwt_supported_algs,
      clockTolerance: this.config.clock_skew_leeway,
      ...(this.config.bound_issuer ? { issuer: this.config.bound_issuer } : {}),
      requiredClaims: ['exp'],
    };
    try {
      decodeProtectedHeader(jwt);
    } catch {
      throw new InvalidRequest('error validating token: token is malformed');
    }
    const keys = await this.keys();
    const payload = await this.verifyWith(jwt, keys, options);
    // jose checks iat only against a maxTokenAge; a token issued in the future is not valid yet either.
    if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + this.config.clock_skew_leeway) {
      throw new InvalidRequest('error validating token: token is not yet valid (issued in the future)');
    }
    return payload;
  }

  private async verifyWith(
    jwt: string,
    keys: JWTVerifyGetKey | KeyObject[],
    options: Parameters<typeof jwtVerify>[2],
  ): Promise<JWTPayload> {
    try {
      if (!Array.isArray(keys)) return (await jwtVerify(jwt, keys, options)).payload;
      let lastError: unknown;
      for (const key of keys) {
        try {
          return (await jwtVerify(jwt, key, options)).payload;
        } catch (err) {
          lastError = err;
          if ((err as { code?: string }).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') throw err;
        }
      }
      throw lastError;
    } catch (err) {
      throw this.explain(err);
    }
  }

  private explain(err: unknown): Error {
    const e = err as { code?: string; claim?: string; reason?: string };
    if (e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') {
      const reason =
        e.claim === 'nbf'
          ? 'token is not yet valid'
          : e.claim === 'iss'
            ? 'issuer does not match bound_issuer'
            : `invalid "${e.claim}" claim`;
      return new InvalidRequest(`error validating token: ${reason}`);
    }
    if (e.code && REASONS[e.code]) return new InvalidRequest(`error validating token: ${REASONS[e.code]}`);
    // The key source failing (down, timing out, answering garbage) is the identity provider's fault, not the client's.
    if (e.code === 'ERR_JWKS_TIMEOUT' || e.code === 'ERR_JWKS_INVALID' || e.code === 'ERR_JOSE_GENERIC' || !e.code) {
      return new TargetError(`auth/${this.name}`, `cannot fetch the signing keys: ${messageOf(err)}`);
    }
    return new InvalidRequest(`error validating token: ${messageOf(err)}`);
  }

  /** Keys from pinned PEMs, a JWKS URL, or OIDC discovery (fetched on first use, refetched on an unknown kid). */
  private async keys(): Promise<JWTVerifyGetKey | KeyObject[]> {
    if (this.keySource) return this.keySource;
    const c = this.config;
    const remote = (url: string) =>
      createRemoteJWKSet(new URL(url), {
        cooldownDuration: c.jwks_refresh_interval * 1000,
        cacheMaxAge: 600_000,
        timeoutDuration: 5000,
        // jose 6 fetches with the global fetch, which takes no CA: with a cluster CA or token, fetch through our client.
        ...(this.cluster.customized ? { [customFetch]: this.cluster.fetchForJose } : {}),
      });
    if (c.jwt_validation_pubkeys) this.keySource = c.jwt_validation_pubkeys.map((pem) => createPublicKey(pem));
    else if (c.jwks_url) this.keySource = remote(c.jwks_url);
    else {
      const discoveryUrl = `${c.oidc_discovery_url!.replace(/\/$/, '')}/.well-known/openid-configuration`;
      const res = await this.cluster.request(discoveryUrl, { method: 'GET' }).catch((err) => {
        throw new TargetError(`auth/${this.name}`, `OIDC discovery failed: ${messageOf(err)}`);
      });
      let doc: { jwks_uri?: string } = {};
      try {
        doc = JSON.parse(res.body) as { jwks_uri?: string };
      } catch {
        // answered below as "gave no jwks_uri"
      }
      if (res.status !== 200 || !doc.jwks_uri)
        throw new TargetError(`auth/${this.name}`, `OIDC discovery at ${discoveryUrl} gave no jwks_uri`);
      this.keySource = remote(doc.jwks_uri);
    }
    return this.keySource;
  }

  /** Checks the role's bindings and builds the identity; Vault's texts where clients match them. */
  private bind(claims: JWTPayload, roleName: string, role: AuthRoleConfig): Omit<Identity, 'accessor'> {
    const audiences = Array.isArray(claims.aud) ? claims.aud : claims.aud ? [claims.aud] : [];
    if (!audiences.some((a) => role.bound_audiences.includes(a)))
      throw new InvalidRequest(
        'error validating token: invalid audience (aud) claim: audience claim does not match any expected audience',
      );
    if (role.bound_subject && claims.sub !== role.bound_subject)
      throw new InvalidRequest('error validating token: sub claim does not match bound subject');
    for (const [selector, allowed] of Object.entries(role.bound_claims ?? {})) {
      if (!claimMatches(claimValue(claims, selector), allowed))
        throw new InvalidRequest(
          `error validating claims: claim "${selector}" does not match any associated bound claim values`,
        );
    }
    const name = claimValue(claims, role.user_claim);
    if (typeof name !== 'string' || !name)
      throw new InvalidRequest(`error validating claims: user claim "${role.user_claim}" is missing or not a string`);
    const metadata: Record<string, string> = { role: roleName };
    for (const [selector, key] of Object.entries(role.claim_mappings ?? {})) {
      const value = claimValue(claims, selector);
      if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean')
        metadata[key] = String(value);
    }
    if (this.config.type === 'kubernetes') Object.assign(metadata, kubernetesMetadata(claims));
    return { name, authMount: this.name, metadata, policies: role.token_policies, root: false };
  }
}

/** Where a service-account token names its service account: the projected (nested) form, and the legacy (flat) one. */
const KUBERNETES_CLAIMS = [
  { field: 'namespace', nested: ['namespace'], flat: 'kubernetes.io/serviceaccount/namespace' },
  {
    field: 'service account name',
    nested: ['serviceaccount', 'name'],
    flat: 'kubernetes.io/serviceaccount/service-account.name',
  },
  {
    field: 'service account uid',
    nested: ['serviceaccount', 'uid'],
    flat: 'kubernetes.io/serviceaccount/service-account.uid',
  },
] as const;

/**
 * Kubernetes writes the namespace and service account in one of two forms (or both). The bound
 * check, the claim mappings and the metadata must all read the same value, so each is taken
 * once, a token whose two forms disagree (or whose value is not a string) is refused, and the
 * claims are rewritten with that one value in both places.
 */
function withKubernetesClaimsReconciled(claims: JWTPayload): JWTPayload {
  const nestedRoot = claims['kubernetes.io'];
  const out: Record<string, unknown> = { ...claims };
  const nested: Record<string, unknown> =
    nestedRoot && typeof nestedRoot === 'object' && !Array.isArray(nestedRoot)
      ? { ...(nestedRoot as Record<string, unknown>) }
      : {};
  const serviceAccount: Record<string, unknown> =
    nested.serviceaccount && typeof nested.serviceaccount === 'object' && !Array.isArray(nested.serviceaccount)
      ? { ...(nested.serviceaccount as Record<string, unknown>) }
      : {};
  for (const { field, nested: where, flat } of KUBERNETES_CLAIMS) {
    const holder = where.length === 1 ? nested : serviceAccount;
    const key = where[where.length - 1]!;
    const values = [holder[key], claims[flat]].filter((v) => v !== undefined && v !== null);
    if (values.some((v) => typeof v !== 'string'))
      throw new InvalidRequest(`error validating claims: the token's Kubernetes claim "${field}" is not a string`);
    if (new Set(values).size > 1)
      throw new InvalidRequest(`error validating claims: the token's Kubernetes claims disagree on the ${field}`);
    if (values.length === 0) continue;
    holder[key] = values[0];
    out[flat] = values[0];
  }
  if (Object.keys(serviceAccount).length > 0) nested.serviceaccount = serviceAccount;
  if (Object.keys(nested).length > 0) out['kubernetes.io'] = nested;
  return out as JWTPayload;
}

/** Vault's Kubernetes auth metadata, from claims already reconciled (one value per field). */
function kubernetesMetadata(claims: JWTPayload): Record<string, string> {
  const value = (flat: string) => (typeof claims[flat] === 'string' ? (claims[flat] as string) : '');
  return {
    service_account_namespace: value('kubernetes.io/serviceaccount/namespace'),
    service_account_name: value('kubernetes.io/serviceaccount/service-account.name'),
    service_account_uid: value('kubernetes.io/serviceaccount/service-account.uid'),
  };
}
