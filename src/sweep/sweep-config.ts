import cron from 'node-cron';
import { z } from 'zod';
import { durationSeconds } from '../config/duration-schema.js';

/** What a mount's periodic sweep does with what it finds: `report` only, or `drop` it too. */
export const mountSweepSchema = z.enum(['report', 'drop']).default('report');
export type MountSweepMode = z.infer<typeof mountSweepSchema>;

/** The orphan sweep's top-level config: when it runs in every replica, and how old an orphan must be. */
export const sweepSchema = z
  .object({
    /** node-cron expression (seconds optional): hourly by default. */
    schedule: z
      .string()
      .refine((s) => cron.validate(s), 'must be a node-cron expression, e.g. "0 * * * *" (hourly)')
      .default('0 * * * *'),
    /**
     * An object no lease owns is left alone until it is this old (its creation time where the
     * target records one, else its first sight by a sweep): a grace for whatever made it by hand.
     */
    grace: durationSeconds.default(3600),
  })
  .strict();

export type SweepConfig = z.infer<typeof sweepSchema>;
