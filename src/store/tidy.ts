import cron, { type ScheduledTask } from 'node-cron';
import type pg from 'pg';
import type { Logger } from 'pino';
import { messageOf } from '../errors.js';
import { auditRetentionSchema } from './retention.js';

/** Where no audit section is configured, rows a former configuration left still age out. */
const DEFAULT_AUDIT_RETENTION = auditRetentionSchema.parse(undefined);

export interface TidyPolicy {
  /** Revoked leases and ended broker tokens older than this go (store.retention). */
  storeRetentionSeconds: number;
  /** Rows of the postgres audit sink older than this go (audit.retention). */
  auditRetentionSeconds: number;
  /** Most rows one DELETE takes. */
  batchSize: number;
}

/** Rows deleted by each statement, per table, in order: every entry is at most the batch size. */
export interface TidyResult {
  leases: number[];
  tokens: number[];
  audit: number[];
  /** Expired wrapped answers (no retention: an expired wrapping token opens nothing). */
  wrapped: number[];
  /** Finished revoke jobs older than store.retention, their lease lists with them. */
  jobs: number[];
}

/**
 * One DELETE per table, each of at most $2 rows, oldest first by an index. SKIP LOCKED: two
 * replicas tidying at once share the work instead of waiting on each other's rows; the clock is
 * the store's (`now()`), so tests backdate rows rather than wait.
 */
export const TIDY_STATEMENTS = {
  leases: {
    name: 'tidy-revoked-leases',
    text: `DELETE FROM credbroker_leases WHERE id IN (
             SELECT id FROM credbroker_leases
              WHERE state = 'revoked' AND revoked_at < now() - make_interval(secs => $1)
              LIMIT $2 FOR UPDATE SKIP LOCKED)`,
  },
  // A token ended when it expired or was revoked, whichever came first (least() skips a NULL).
  tokens: {
    name: 'tidy-ended-tokens',
    text: `DELETE FROM credbroker_tokens WHERE accessor IN (
             SELECT accessor FROM credbroker_tokens
              WHERE least(expires_at, revoked_at) < now() - make_interval(secs => $1)
              LIMIT $2 FOR UPDATE SKIP LOCKED)`,
  },
  audit: {
    name: 'tidy-old-audit-rows',
    text: `DELETE FROM credbroker_audit WHERE id IN (
             SELECT id FROM credbroker_audit
              WHERE time < now() - make_interval(secs => $1)
              LIMIT $2 FOR UPDATE SKIP LOCKED)`,
  },
  wrapped: {
    name: 'tidy-expired-wrapped-responses',
    text: `DELETE FROM credbroker_wrapped_responses WHERE token_hash IN (
             SELECT token_hash FROM credbroker_wrapped_responses
              WHERE expires_at < now() - make_interval(secs => $1)
              LIMIT $2 FOR UPDATE SKIP LOCKED)`,
  },
  jobs: {
    name: 'tidy-finished-jobs',
    text: `DELETE FROM credbroker_jobs WHERE id IN (
             SELECT id FROM credbroker_jobs
              WHERE state = 'done' AND finished_at < now() - make_interval(secs => $1)
              LIMIT $2 FOR UPDATE SKIP LOCKED)`,
  },
} as const;

async function deleteInBatches(
  pool: pg.Pool,
  statement: { name: string; text: string },
  retentionSeconds: number,
  batchSize: number,
): Promise<number[]> {
  const batches: number[] = [];
  for (;;) {
    const { rowCount } = await pool.query({ ...statement, values: [retentionSeconds, batchSize] });
    if (!rowCount) return batches;
    batches.push(rowCount);
    if (rowCount < batchSize) return batches; // the last one: nothing older is left
  }
}

/**
 * Deletes what the store no longer needs: revoked leases, ended broker tokens and audit rows
 * older than their retention, and expired wrapped answers, in bounded batches until none is
 * left. A plain function: the schedule only calls it, tests call it directly. Live, pending and irrevocable leases are never
 * touched (an irrevocable lease waits for an operator).
 */
export async function tidyOnce(pool: pg.Pool, policy: TidyPolicy): Promise<TidyResult> {
  return {
    leases: await deleteInBatches(pool, TIDY_STATEMENTS.leases, policy.storeRetentionSeconds, policy.batchSize),
    tokens: await deleteInBatches(pool, TIDY_STATEMENTS.tokens, policy.storeRetentionSeconds, policy.batchSize),
    audit: await deleteInBatches(pool, TIDY_STATEMENTS.audit, policy.auditRetentionSeconds, policy.batchSize),
    wrapped: await deleteInBatches(pool, TIDY_STATEMENTS.wrapped, 0, policy.batchSize),
    // A job's lease list goes with it (ON DELETE CASCADE): batches count jobs, not their leases.
    jobs: await deleteInBatches(pool, TIDY_STATEMENTS.jobs, policy.storeRetentionSeconds, policy.batchSize),
  };
}

const total = (batches: number[]) => batches.reduce((a, b) => a + b, 0);

/** The tidy on its node-cron schedule; a failed run is logged and retried at the next one, never thrown. */
export function scheduleTidy(
  pool: pg.Pool,
  config: {
    store: { retention: number; tidy: { schedule: string; batch_size: number } };
    audit?: { retention: number };
  },
  log: Logger,
): ScheduledTask {
  const policy: TidyPolicy = {
    storeRetentionSeconds: config.store.retention,
    auditRetentionSeconds: config.audit?.retention ?? DEFAULT_AUDIT_RETENTION,
    batchSize: config.store.tidy.batch_size,
  };
  const run = () =>
    tidyOnce(pool, policy).then(
      (result) => {
        const deleted = {
          leases: total(result.leases),
          tokens: total(result.tokens),
          audit: total(result.audit),
          wrapped: total(result.wrapped),
          jobs: total(result.jobs),
        };
        if (Object.values(deleted).some((n) => n > 0)) log.info({ deleted }, 'store tidied');
      },
      (err) => log.warn({ err: messageOf(err) }, 'store tidy failed; the next run retries'),
    );
  return cron.schedule(config.store.tidy.schedule, run, { name: 'store-tidy', noOverlap: true });
}
