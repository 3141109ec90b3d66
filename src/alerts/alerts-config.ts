import { z } from 'zod';
import { durationSeconds } from '../config/duration-schema.js';

const enabled = z.boolean().default(true);

const webhookSchema = z
  .object({
    url: z.url({ protocol: /^https?$/ }),
    headers: z.record(z.string(), z.string()).optional(),
    timeout: durationSeconds.refine((s) => s >= 1 && s <= 60, 'must be between 1 s and 60 s').default(5),
    format: z.enum(['generic', 'slack', 'pagerduty']).default('generic'),
    /** PagerDuty Events v2 integration key. A secret: in a config file it is a ${env:} or ${file:} ref. */
    routing_key: z.string().min(1).optional(),
  })
  .strict()
  .refine((w) => w.format !== 'pagerduty' || w.routing_key !== undefined, {
    message: 'format pagerduty needs a routing_key',
    path: ['routing_key'],
  });

const detectorsSchema = z
  .object({
    denial_burst: z
      .object({ enabled, threshold: z.number().int().min(1).default(10), window: durationSeconds.default(60) })
      .strict()
      .prefault({}),
    login_failures: z
      .object({ enabled, threshold: z.number().int().min(1).default(5), window: durationSeconds.default(300) })
      .strict()
      .prefault({}),
    issue_rate: z
      .object({
        enabled,
        /** Fires when the recent rate is this many times the identity's baseline. */
        factor: z.number().min(1).default(5),
        half_life: durationSeconds.refine((s) => s >= 60, 'must be at least 60 s').default(3600),
        /** No alert for an identity first seen less than this ago: it has no baseline yet. */
        min_history: durationSeconds.default(24 * 3600),
        /** Issues in `window` below this never fire, whatever the baseline. */
        min_count: z.number().int().min(1).default(20),
        /** What "recent" means. */
        window: durationSeconds.refine((s) => s >= 10, 'must be at least 10 s').default(300),
        /** How often each replica merges its counts into the shared baseline in the store. */
        flush_interval: durationSeconds.refine((s) => s >= 1, 'must be at least 1 s').default(10),
      })
      .strict()
      .prefault({}),
    first_use: z
      .object({
        enabled,
        role: z.boolean().default(true),
        network: z.boolean().default(true),
        ipv4_prefix: z.number().int().min(8).max(32).default(24),
        ipv6_prefix: z.number().int().min(16).max(128).default(64),
      })
      .strict()
      .prefault({}),
    root_token: z.object({ enabled }).strict().prefault({}),
    irrevocable: z.object({ enabled }).strict().prefault({}),
    reaper_paused: z
      .object({ enabled, after: durationSeconds.default(900), poll_interval: durationSeconds.default(30) })
      .strict()
      .prefault({}),
  })
  .strict()
  .prefault({});

export const alertsConfigSchema = z
  .object({
    webhook: webhookSchema.optional(),
    /** One alert per (subject, detector) within this. */
    dedup_window: durationSeconds.default(600),
    detectors: detectorsSchema,
  })
  .strict();

export type AlertsConfig = z.infer<typeof alertsConfigSchema>;
export type WebhookConfig = NonNullable<AlertsConfig['webhook']>;
export type DetectorsConfig = AlertsConfig['detectors'];

/** What a broker without an `alerts` section runs: every detector on its defaults, no webhook. */
export const DEFAULT_ALERTS_CONFIG: AlertsConfig = alertsConfigSchema.parse({});
