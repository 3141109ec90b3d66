import type pg from 'pg';
import { randomLeaseSuffix } from '../random.js';
import { storeQuery } from '../store/query.js';
import { createRevokeJob, findJob, jobFailures, recentJobs, type JobRow } from './job-store.js';
import { selectorWhere, type LeaseSelector } from './lease-selector.js';
import type { RevokeJobRunner } from './revoke-job-runner.js';

/** Most lease ids a dry run shows. */
const DRY_RUN_IDS = 100;
/** Most failures a job report lists; the rest are paged with `failures_after`. */
export const FAILURES_SHOWN = 1000;

export interface DryRun {
  total: number;
  by_role: { mount: string; role: string; state: string; count: number }[];
  lease_ids: string[];
}

export interface JobReport {
  job: JobRow;
  failures: { lease_id: string; error: string | null }[];
  /** More failures than listed. */
  failuresTruncated: boolean;
}

/** A row of the operator's listing: who has what, in which state, and what last went wrong. */
export interface ListedLease {
  lease_id: string;
  identity: string | null;
  auth_mount: string | null;
  metadata: Record<string, string> | null;
  mount: string;
  role: string;
  engine: string;
  state: string;
  issued_at: Date;
  expires_at: Date;
  attempts: number;
  last_error: string | null;
}

/**
 * Incident revocation for the API: a selector becomes a job recorded in the store (or, dry, a
 * count that changes nothing); the runner of any replica revokes it.
 */
export class RevokeJobs {
  constructor(
    private readonly pool: pg.Pool,
    private readonly runner: RevokeJobRunner,
  ) {}

  async start(selector: LeaseSelector, requestedBy: string, reason: string | null): Promise<JobRow> {
    const job = await createRevokeJob(this.pool, {
      id: `revoke-${randomLeaseSuffix().slice(0, 16)}`,
      selector,
      requestedBy,
      reason,
    });
    // Started here at once, not at the next tick; any replica may take it over.
    void this.runner.tick();
    return job;
  }

  /** What a job with this selector would revoke, by mount, role and state, and the first ids. */
  async dryRun(selector: LeaseSelector): Promise<DryRun> {
    const where = selectorWhere(selector);
    const [groups, ids] = await Promise.all([
      storeQuery<{ mount: string; role: string; state: string; count: number }>(this.pool, {
        text: `SELECT mount, role, state, count(*)::int AS count FROM credbroker_leases WHERE ${where.sql}
               GROUP BY mount, role, state ORDER BY mount, role, state`,
        values: where.values,
      }),
      storeQuery<{ id: string }>(this.pool, {
        text: `SELECT id FROM credbroker_leases WHERE ${where.sql} ORDER BY id LIMIT ${DRY_RUN_IDS}`,
        values: where.values,
      }),
    ]);
    return {
      total: groups.rows.reduce((n, g) => n + g.count, 0),
      by_role: groups.rows,
      lease_ids: ids.rows.map((r) => r.id),
    };
  }

  async report(id: string, failuresAfter = ''): Promise<JobReport | null> {
    const job = await findJob(this.pool, id);
    if (!job) return null;
    const failures = await jobFailures(this.pool, id, failuresAfter, FAILURES_SHOWN + 1);
    return {
      job,
      failures: failures.slice(0, FAILURES_SHOWN),
      failuresTruncated: failures.length > FAILURES_SHOWN,
    };
  }

  recent(limit: number): Promise<JobRow[]> {
    return recentJobs(this.pool, limit);
  }

  /** The selected leases in id order after `after`, at most `limit`. */
  async list(selector: LeaseSelector, after: string, limit: number): Promise<ListedLease[]> {
    const where = selectorWhere(selector, 3);
    const { rows } = await storeQuery<ListedLease>(this.pool, {
      text: `SELECT id AS lease_id, identity->>'name' AS identity, identity->>'auth_mount' AS auth_mount,
                    identity->'metadata' AS metadata, mount, role, engine, state, issued_at, expires_at, attempts, last_error
               FROM credbroker_leases WHERE id > $1 AND ${where.sql} ORDER BY id LIMIT $2`,
      values: [after, limit, ...where.values],
    });
    return rows;
  }
}

/** A job as the API shows it: counts, rate and ETA from the store's record. */
export function jobData(job: JobRow, now = new Date()): Record<string, unknown> {
  const done = job.revoked + job.failed;
  const remaining = Math.max(0, job.total - done);
  const end = job.finished_at ?? now;
  const seconds = Math.max(0.001, (end.getTime() - job.created_at.getTime()) / 1000);
  const rate = done / seconds;
  return {
    id: job.id,
    kind: job.kind,
    state: job.state,
    selector: job.selector,
    requested_by: job.requested_by,
    reason: job.reason,
    created_at: job.created_at.toISOString(),
    finished_at: job.finished_at?.toISOString() ?? null,
    total: job.total,
    revoked: job.revoked,
    failed: job.failed,
    remaining,
    rate_per_second: Math.round(rate * 10) / 10,
    eta_seconds: job.state === 'done' ? 0 : rate > 0 ? Math.ceil(remaining / rate) : null,
    elapsed_seconds: Math.round(seconds * 10) / 10,
  };
}
