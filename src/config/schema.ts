import cron from 'node-cron';
import { z } from 'zod';
import { authMountSchema } from '../auth/auth-config.js';
import { policyConfigSchema } from '../auth/policy.js';
import { alertsConfigSchema } from '../alerts/alerts-config.js';
import { auditConfigSchema } from '../audit/auditor.js';
import { engines as allEngines } from '../../engines/index.js';
import type { EngineRegistry } from '../engines.js';
import { durationSeconds } from './duration-schema.js';
import { mountsSchemaFor } from './mount-schema.js';
import { pgSslSchema } from '../store/pg-ssl.js';
import { storeRetentionSchema, tidySchema } from '../store/retention.js';
import { listenTlsSchema } from '../tls/listener-tls.js';
import { sweepSchema } from '../sweep/sweep-config.js';

export { durationSeconds };
export {
  NAME_PATTERN,
  NAME_RULE,
  roleCommonSchema,
  type MountConfig,
  type RoleCommon,
  type RoleConfig,
} from './mount-schema.js';

/** A dead replica's leases are revoked elsewhere within this (+ one reaper tick) by default. */
const DEFAULT_CLAIM_TTL = 3;
const MIN_CLAIM_TTL = 1;
const MAX_CLAIM_TTL = 3600;

export const reaperSchema = z
  .object({
    /** node-cron expression with seconds: every second by default. */
    schedule: z
      .string()
      .refine((s) => cron.validate(s), 'must be a node-cron expression, e.g. "* * * * * *" (every second)')
      .default('* * * * * *'),
    batch_size: z.number().int().min(1).max(10000).default(256),
    /** Revocations in flight at once per mount, in each broker process. */
    concurrency: z.number().int().min(1).max(256).default(8),
    max_attempts: z.number().int().min(1).max(100).default(8),
    backoff_base: durationSeconds.default(1),
    backoff_max: durationSeconds.default(600),
    /** A pending lease older than this is a crashed issue: revoke what it may have created. */
    pending_grace: durationSeconds.default(60),
    /**
     * How long a claim on a lease being revoked lasts. The process revoking it renews the claim
     * every third of this while the engine works (however long that takes), so a live claim
     * never lapses; a process that dies leaves its leases due again on any replica within it.
     */
    claim_ttl: durationSeconds.optional(),
    /** Deprecated name of claim_ttl (before claims were renewed, it defaulted to 10 min). */
    claim_timeout: durationSeconds.optional(),
  })
  .strict()
  .superRefine((reaper, ctx) => {
    if (reaper.claim_ttl !== undefined && reaper.claim_timeout !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['claim_timeout'],
        message: 'is the old name of claim_ttl: give only claim_ttl',
      });
    }
    const ttl = reaper.claim_ttl ?? reaper.claim_timeout;
    if (ttl !== undefined && (ttl < MIN_CLAIM_TTL || ttl > MAX_CLAIM_TTL)) {
      ctx.addIssue({
        code: 'custom',
        path: [reaper.claim_ttl !== undefined ? 'claim_ttl' : 'claim_timeout'],
        message: `must be between ${MIN_CLAIM_TTL} s and ${MAX_CLAIM_TTL} s: the claim is renewed every third of it, and a replica that dies holds its leases for up to that long`,
      });
    }
  })
  .transform(({ claim_ttl, claim_timeout, ...rest }) => ({
    ...rest,
    claim_ttl: claim_ttl ?? claim_timeout ?? DEFAULT_CLAIM_TTL,
  }));

/**
 * The whole config, validated once: each mount and role by its engine's schemas from `engines`.
 * What it returns is what every part of the broker uses, with nothing left to check later.
 */
export function configSchemaFor(engines: EngineRegistry) {
  return z
    .object({
      listen: z
        .object({
          address: z.string().default('127.0.0.1'),
          port: z.number().int().min(0).max(65535).default(8200),
          /** https; without it the listener speaks plain HTTP (and warns beyond loopback). */
          tls: listenTlsSchema.optional(),
        })
        .strict()
        .default({ address: '127.0.0.1', port: 8200 }),
      store: z
        .object({
          url: z.string().min(1),
          /** TLS to the store; wins over sslmode & co. in url when both are given. */
          ssl: pgSslSchema.optional(),
          max_connections: z.number().int().min(1).max(500).default(10),
          /**
           * Client-side bound on one store query (and on opening a connection): a frozen or
           * unreachable store answers 503 within this instead of holding requests.
           */
          query_timeout: durationSeconds.refine((s) => s >= 1 && s <= 300, 'must be between 1 s and 300 s').default(5),
          retention: storeRetentionSchema,
          tidy: tidySchema,
        })
        .strict(),
      root_token: z.string().min(16, 'must be at least 16 characters'),
      log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      /** Upper bound on one engine call (issue, renew, revoke); must stay below reaper.pending_grace. */
      engine_timeout: durationSeconds.default(10),
      reaper: reaperSchema.default(reaperSchema.parse({})),
      /** The orphan sweep: roles and users on the targets that no live lease owns. */
      sweep: sweepSchema.default(sweepSchema.parse({})),
      mounts: mountsSchemaFor(engines),
      /** Login methods by mount name: /v1/auth/<name>/login. */
      auth: z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,31}$/), authMountSchema).default({}),
      policies: policyConfigSchema.default({}),
      audit: auditConfigSchema.optional(),
      /** Detectors on the audit stream; without the section they run on their defaults, with no webhook. */
      alerts: alertsConfigSchema.optional(),
    })
    .strict()
    .superRefine((config, ctx) => {
      if (Object.hasOwn(config.auth, 'token')) {
        ctx.addIssue({
          code: 'custom',
          path: ['auth', 'token'],
          message: '"token" is reserved for the token self-service routes',
        });
      }
      const known = new Set(Object.keys(config.policies));
      for (const [mount, authMount] of Object.entries(config.auth)) {
        if (authMount.type === 'cert' && !config.listen.tls)
          ctx.addIssue({
            code: 'custom',
            path: ['auth', mount, 'type'],
            message: 'a cert mount needs listen.tls: client certificates arrive only on the broker’s own TLS listener',
          });
        for (const [role, roleConfig] of Object.entries(authMount.roles)) {
          for (const policy of roleConfig.token_policies) {
            if (!known.has(policy))
              ctx.addIssue({
                code: 'custom',
                path: ['auth', mount, 'roles', role, 'token_policies'],
                message: `unknown policy "${policy}"`,
              });
          }
        }
      }
      if (config.reaper.pending_grace <= config.engine_timeout) {
        ctx.addIssue({
          code: 'custom',
          path: ['reaper', 'pending_grace'],
          message: 'must be longer than engine_timeout, or the reaper could revoke an issue still in progress',
        });
      }
      // reaper.claim_ttl needs no margin over engine_timeout (it used to, as claim_timeout): the
      // claim is renewed while the engine works, by a store query bounded by a third of the TTL.
    });
}

/** The config schema for every engine in engines/index.ts. */
export const configSchema = configSchemaFor(allEngines);

export type BrokerConfig = z.infer<typeof configSchema>;
export type ReaperConfig = z.infer<typeof reaperSchema>;
