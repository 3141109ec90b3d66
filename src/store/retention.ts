import cron from 'node-cron';
import { z } from 'zod';
import { durationSeconds } from '../config/duration-schema.js';

const DAY = 86_400;

/** Less than a day of history would leave an operator nothing to look at the morning after. */
const atLeastADay = () => durationSeconds.refine((s) => s >= DAY, 'must be at least 1 day ("24h")');

/** store.retention: how long revoked leases and ended broker tokens stay in the store. */
export const storeRetentionSchema = atLeastADay().default(30 * DAY);

/** audit.retention: how long rows of the postgres audit sink (credbroker_audit) stay. */
export const auditRetentionSchema = atLeastADay().default(90 * DAY);

/** store.tidy: when the tidy runs, and how many rows one DELETE may take. */
export const tidySchema = z
  .object({
    /** node-cron expression with seconds: 03:17:00 every day by default, off the hour most jobs pick. */
    schedule: z
      .string()
      .refine((s) => cron.validate(s), 'must be a node-cron expression, e.g. "0 17 3 * * *" (daily at 03:17)')
      .default('0 17 3 * * *'),
    /** Rows per DELETE: each statement holds its row locks briefly, whatever the backlog. */
    batch_size: z.number().int().min(1).max(100_000).default(1000),
  })
  .strict()
  .prefault({});

export type TidyConfig = z.infer<typeof tidySchema>;
