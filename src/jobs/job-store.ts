import type pg from 'pg';
import { PROCESS_LOCK_CLASS, liveHoldersSql } from '../store/process-lock.js';
import { inStoreTransaction, storeQuery, type StoreDb } from '../store/query.js';
import { selectorRecord, selectorWhere, type LeaseSelector } from './lease-selector.js';

export interface JobRow {
  id: string;
  kind: 'revoke';
  selector: Record<string, unknown>;
  state: 'running' | 'done';
  requested_by: string;
  reason: string | null;
  created_at: Date;
  finished_at: Date | null;
  total: number;
  revoked: number;
  failed: number;
  claimed_by: number | null;
  claimed_until: Date | null;
}

export interface JobLeaseOutcome {
  leaseId: string;
  outcome: 'revoked' | 'failed';
  error: string | null;
}

/**
 * Records a revoke job and the leases it selects, in one transaction: the selection is fixed
 * here, so a lease issued while the job runs is not revoked by it, and a restart revokes exactly
 * what was asked. Answers the job with its total.
 */
export async function createRevokeJob(
  pool: pg.Pool,
  job: { id: string; selector: LeaseSelector; requestedBy: string; reason: string | null },
): Promise<JobRow> {
  return inStoreTransaction(pool, async (client) => {
    const { rows } = await storeQuery<JobRow>(client, {
      text: `INSERT INTO credbroker_jobs (id, kind, selector, state, requested_by, reason, total)
             VALUES ($1, 'revoke', $2, 'running', $3, $4, 0) RETURNING *`,
      values: [job.id, JSON.stringify(selectorRecord(job.selector)), job.requestedBy, job.reason],
    });
    const where = selectorWhere(job.selector, 2);
    const { rowCount } = await storeQuery(client, {
      text: `INSERT INTO credbroker_job_leases (job_id, lease_id)
             SELECT $1, id FROM credbroker_leases WHERE ${where.sql}`,
      values: [job.id, ...where.values],
    });
    const total = rowCount ?? 0;
    await storeQuery(client, { text: `UPDATE credbroker_jobs SET total = $2 WHERE id = $1`, values: [job.id, total] });
    return { ...rows[0]!, total };
  });
}

/**
 * Claims one running job for this process: one nobody holds, whose claim lapsed, whose holder's
 * process lock is gone (it was killed), or this process's own (a run that stopped on an error).
 * SKIP LOCKED: two replicas never take the same. A process runs one job at a time.
 */
export async function claimRunningJob(db: StoreDb, holder: number | null, ttlSeconds: number): Promise<JobRow | null> {
  const { rows } = await storeQuery<JobRow>(db, {
    name: 'credbroker.claim_running_job',
    text: `UPDATE credbroker_jobs SET claimed_by = $1, claimed_until = now() + make_interval(secs => $2)
        WHERE id = (SELECT id FROM credbroker_jobs
                     WHERE state = 'running'
                       AND (claimed_until IS NULL OR claimed_until <= now() OR claimed_by IS NULL
                            OR claimed_by = $1 OR claimed_by NOT IN (${liveHoldersSql('$3')}))
                     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING *`,
    values: [holder, ttlSeconds, PROCESS_LOCK_CLASS],
  });
  return rows[0] ?? null;
}

/** The running job's heartbeat; false if the job is no longer this process's (another took it over). */
export async function extendJobClaim(
  db: StoreDb,
  id: string,
  holder: number | null,
  ttlSeconds: number,
): Promise<boolean> {
  const { rowCount } = await storeQuery(db, {
    name: 'credbroker.extend_job_claim',
    text: `UPDATE credbroker_jobs SET claimed_until = now() + make_interval(secs => $3)
        WHERE id = $1 AND state = 'running' AND claimed_by IS NOT DISTINCT FROM $2`,
    values: [id, holder, ttlSeconds],
  });
  return (rowCount ?? 0) > 0;
}

/** The next leases of the job still to do, in id order after `after` ('' from the start). */
export async function jobLeasesToDo(db: StoreDb, jobId: string, after: string, limit: number): Promise<string[]> {
  const { rows } = await storeQuery<{ lease_id: string }>(db, {
    name: 'credbroker.job_leases_to_do',
    text: `SELECT lease_id FROM credbroker_job_leases
        WHERE job_id = $1 AND outcome IS NULL AND lease_id > $2 ORDER BY lease_id LIMIT $3`,
    values: [jobId, after, limit],
  });
  return rows.map((r) => r.lease_id);
}

/**
 * Records outcomes and counts them on the job in one statement. Only leases still to do are
 * recorded, so an outcome recorded twice (a job taken over mid-page) is counted once.
 */
export async function recordJobOutcomes(db: StoreDb, jobId: string, outcomes: JobLeaseOutcome[]): Promise<void> {
  if (outcomes.length === 0) return;
  await storeQuery(db, {
    name: 'credbroker.record_job_outcomes',
    text: `WITH recorded AS (
          UPDATE credbroker_job_leases j SET outcome = o.outcome, error = o.error, done_at = now()
            FROM unnest($2::text[], $3::text[], $4::text[]) AS o(lease_id, outcome, error)
           WHERE j.job_id = $1 AND j.lease_id = o.lease_id AND j.outcome IS NULL
          RETURNING j.outcome)
        UPDATE credbroker_jobs
           SET revoked = revoked + (SELECT count(*) FROM recorded WHERE outcome = 'revoked'),
               failed = failed + (SELECT count(*) FROM recorded WHERE outcome = 'failed')
         WHERE id = $1`,
    values: [jobId, outcomes.map((o) => o.leaseId), outcomes.map((o) => o.outcome), outcomes.map((o) => o.error)],
  });
}

/** Marks the job done once no lease is left to do; false if some still are. */
export async function finishJobIfDone(db: StoreDb, jobId: string): Promise<JobRow | null> {
  const { rows } = await storeQuery<JobRow>(db, {
    name: 'credbroker.finish_job_if_done',
    text: `UPDATE credbroker_jobs SET state = 'done', finished_at = now(), claimed_by = NULL, claimed_until = NULL
        WHERE id = $1 AND state = 'running'
          AND NOT EXISTS (SELECT 1 FROM credbroker_job_leases WHERE job_id = $1 AND outcome IS NULL)
        RETURNING *`,
    values: [jobId],
  });
  return rows[0] ?? null;
}

/** Lets the job go (this process is stopping): another replica takes it at its next tick. */
export async function releaseJob(db: StoreDb, jobId: string, holder: number | null): Promise<void> {
  await storeQuery(db, {
    text: `UPDATE credbroker_jobs SET claimed_by = NULL, claimed_until = NULL
        WHERE id = $1 AND state = 'running' AND claimed_by IS NOT DISTINCT FROM $2`,
    values: [jobId, holder],
  });
}

export async function findJob(db: StoreDb, id: string): Promise<JobRow | null> {
  const { rows } = await storeQuery<JobRow>(db, {
    name: 'credbroker.find_job',
    text: `SELECT * FROM credbroker_jobs WHERE id = $1`,
    values: [id],
  });
  return rows[0] ?? null;
}

/** The most recent jobs first. */
export async function recentJobs(db: StoreDb, limit: number): Promise<JobRow[]> {
  const { rows } = await storeQuery<JobRow>(db, {
    name: 'credbroker.recent_jobs',
    text: `SELECT * FROM credbroker_jobs ORDER BY created_at DESC, id LIMIT $1`,
    values: [limit],
  });
  return rows;
}

/** The job's failed leases with their errors, in lease id order after `after`. */
export async function jobFailures(
  db: StoreDb,
  jobId: string,
  after: string,
  limit: number,
): Promise<{ lease_id: string; error: string | null }[]> {
  const { rows } = await storeQuery<{ lease_id: string; error: string | null }>(db, {
    name: 'credbroker.job_failures',
    text: `SELECT lease_id, error FROM credbroker_job_leases
        WHERE job_id = $1 AND outcome = 'failed' AND lease_id > $2 ORDER BY lease_id LIMIT $3`,
    values: [jobId, after, limit],
  });
  return rows;
}

/** How many jobs are running and how many leases they still have to do: for the metrics. */
export async function runningJobCounts(db: StoreDb): Promise<{ running: number; remaining: number }> {
  const { rows } = await storeQuery<{ running: number; remaining: number }>(db, {
    name: 'credbroker.running_job_counts',
    text: `SELECT count(*)::int AS running, COALESCE(sum(total - revoked - failed), 0)::int AS remaining
             FROM credbroker_jobs WHERE state = 'running'`,
    values: [],
  });
  return rows[0]!;
}
