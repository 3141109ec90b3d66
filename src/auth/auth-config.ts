import { createPublicKey, X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { durationSeconds } from '../config/duration-schema.js';

const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

/** Why a PEM cannot serve as a pinned verification key (not a public key, or a private one). */
function checkPublicKeyPem(pem: string, ctx: z.RefinementCtx): void {
  // createPublicKey would derive a public key from a private one: refuse it, a config must not hold one.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    ctx.addIssue({ code: 'custom', message: 'is a private key: give the public key (PEM "BEGIN PUBLIC KEY")' });
    return;
  }
  try {
    createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    const reason = (err as { code?: string }).code ?? (err as Error).message;
    ctx.addIssue({
      code: 'custom',
      message: `not a PEM public key (${reason}); expected "-----BEGIN PUBLIC KEY-----" or a certificate`,
    });
  }
}

export const authRoleSchema = z
  .object({
    bound_audiences: z.array(z.string().min(1)).min(1),
    bound_subject: z.string().min(1).optional(),
    /** Claim (or JSON pointer like /kubernetes.io/namespace) → allowed value(s); `*` globs. */
    bound_claims: z.record(z.string().min(1), z.union([z.string(), z.array(z.string()).min(1)])).optional(),
    user_claim: z.string().min(1).default('sub'),
    /** Claim (or JSON pointer) → metadata key, copied into leases and audit records. */
    claim_mappings: z.record(z.string().min(1), z.string().regex(/^[a-z][a-z0-9_]{0,63}$/)).optional(),
    token_policies: z.array(z.string().min(1)).default([]),
    token_ttl: durationSeconds.default(3600),
    token_max_ttl: durationSeconds.default(86400),
    /** Vault revokes a token's leases with it; an ETL job's lease may need to outlive a short login. */
    revoke_leases_with_token: z.boolean().default(true),
  })
  .strict();

export const jwtAuthMountSchema = z
  .object({
    type: z.enum(['jwt', 'kubernetes']),
    jwks_url: z.string().url().optional(),
    oidc_discovery_url: z.string().url().optional(),
    /** Pinned public keys, PEM: each is parsed at load, so a bad one fails the start, not every login. */
    jwt_validation_pubkeys: z.array(z.string().min(1).superRefine(checkPublicKeyPem)).min(1).optional(),
    bound_issuer: z.string().min(1).optional(),
    jwt_supported_algs: z.array(z.enum(ALGORITHMS)).min(1).default(['RS256', 'ES256', 'EdDSA']),
    clock_skew_leeway: durationSeconds.default(30),
    max_jwt_bytes: z.number().int().min(512).max(1_048_576).default(16_384),
    /**
     * PEM CA bundle trusted for jwks_url / OIDC discovery and the TokenReview API. A kubernetes
     * mount defaults to the pod's own /var/run/secrets/kubernetes.io/serviceaccount/ca.crt.
     */
    ca_file: z.string().min(1).optional(),
    /**
     * Token sent as a bearer on those requests (a cluster's /openid/v1/jwks wants one), re-read
     * each time. A kubernetes mount defaults to the pod's service-account token. Only sent over https.
     */
    bearer_token_file: z.string().min(1).optional(),
    /** Kubernetes only: also ask the API server (TokenReview) that the token is live, i.e. its pod still exists. */
    token_reviewer: z.boolean().default(false),
    /** The API server for TokenReview; by default the origin of jwks_url or oidc_discovery_url. */
    kubernetes_host: z.string().url().optional(),
    /** Least time between two JWKS fetches triggered by an unknown key id. */
    jwks_refresh_interval: durationSeconds.default(10),
    roles: z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/), authRoleSchema).default({}),
  })
  .strict()
  .refine((m) => [m.jwks_url, m.oidc_discovery_url, m.jwt_validation_pubkeys].filter(Boolean).length === 1, {
    message: 'give exactly one key source: jwks_url, oidc_discovery_url or jwt_validation_pubkeys',
  })
  .superRefine((m, ctx) => {
    if (m.token_reviewer && m.type !== 'kubernetes')
      ctx.addIssue({
        code: 'custom',
        path: ['token_reviewer'],
        message: 'only a kubernetes mount can review tokens with the API server',
      });
    if (m.token_reviewer && !m.kubernetes_host && !m.jwks_url && !m.oidc_discovery_url) {
      ctx.addIssue({
        code: 'custom',
        path: ['kubernetes_host'],
        message: 'token_reviewer needs the API server: set kubernetes_host',
      });
    }
    if (m.bearer_token_file) {
      for (const key of ['jwks_url', 'oidc_discovery_url', 'kubernetes_host'] as const) {
        if (m[key]?.startsWith('http://'))
          ctx.addIssue({
            code: 'custom',
            path: [key],
            message: 'must be https when bearer_token_file is set: the token must not travel in clear text',
          });
      }
    }
  });

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Every certificate in a PEM bundle, parsed; throws (with OpenSSL's reason) on a bad one. */
export function parseCertificateBundle(pem: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new Error('no "-----BEGIN CERTIFICATE-----" block');
  // A block cut short would otherwise be skipped, and the CA it held silently not trusted.
  if (pem.split('-----BEGIN CERTIFICATE-----').length - 1 !== blocks.length)
    throw new Error('a "-----BEGIN CERTIFICATE-----" block has no END line');
  return blocks.map((block) => new X509Certificate(block));
}

/** Parsed at load, so a bad PEM fails the start naming its key, not every login. */
function checkCertificatePem(pem: string, ctx: z.RefinementCtx): void {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    ctx.addIssue({ code: 'custom', message: 'holds a private key: give only the certificate (the CA, or a leaf)' });
    return;
  }
  try {
    parseCertificateBundle(pem);
  } catch (err) {
    const reason = (err as { code?: string }).code ?? (err as Error).message;
    ctx.addIssue({ code: 'custom', message: `not a PEM certificate (${reason})` });
  }
}

const certGlobs = z.array(z.string().min(1).max(1024)).min(1).optional();

/**
 * A role of a `cert` mount (Vault's `auth/cert/certs/<name>`). Each allowed_* list, when given,
 * needs at least one of the certificate's values to match one of its globs; an absent list allows all.
 */
export const certRoleSchema = z
  .object({
    /** PEM: CA certificates the client's chain must end at, or leaf certificates pinned exactly (several may be given). */
    certificate: z.string().min(1).superRefine(checkCertificatePem),
    /** Globs on the subject's common name; `*` matches any run of characters. */
    allowed_common_names: certGlobs,
    /** Globs on the DNS SANs; `*` matches any run of characters (so `*.ci.corp` matches `a.b.ci.corp`), as in Vault. */
    allowed_dns_sans: certGlobs,
    /** Globs on the email SANs; `*` matches any run of characters. */
    allowed_email_sans: certGlobs,
    /**
     * Globs on the URI SANs, e.g. SPIFFE IDs: here `*` stays within one path segment (it never
     * matches `/`), so `spiffe://corp/ns/etl/sa/*` cannot match `spiffe://corp/ns/etl/sa/x/y`; `**` crosses segments.
     */
    allowed_uri_sans: certGlobs,
    token_policies: z.array(z.string().min(1)).default([]),
    token_ttl: durationSeconds.default(3600),
    token_max_ttl: durationSeconds.default(86400),
    /** Same meaning as on a jwt role: the token's leases are revoked with it. */
    revoke_leases_with_token: z.boolean().default(true),
    /** The tokens' display_name is `<mount>-<this>` (lookup-self), by default `<mount>-<role>`, as in Vault. */
    display_name: z.string().min(1).max(64).optional(),
  })
  .strict();

/**
 * Vault's `cert` auth method: login over mTLS, the client certificate checked against a role.
 * Without a `name` in the login, roles are tried in the order the config lists them.
 */
export const certAuthMountSchema = z
  .object({
    type: z.literal('cert'),
    roles: z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/), certRoleSchema).default({}),
  })
  .strict();

export const authMountSchema = z.discriminatedUnion('type', [jwtAuthMountSchema, certAuthMountSchema]);

export type AuthMountConfig = z.infer<typeof authMountSchema>;
export type JwtAuthMountConfig = z.infer<typeof jwtAuthMountSchema>;
export type CertAuthMountConfig = z.infer<typeof certAuthMountSchema>;
export type AuthRoleConfig = z.infer<typeof authRoleSchema>;
export type CertRoleConfig = z.infer<typeof certRoleSchema>;
