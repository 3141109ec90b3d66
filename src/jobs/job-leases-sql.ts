import type { LeaseRow } from '../leases/lease-row.js';
import { PROCESS_LOCK_CLASS, liveHoldersSql } from '../store/process-lock.js';
import { storeQuery, type StoreDb } from '../store/query.js';

/*
 * The lease-table side of a revoke job: claiming its leases, and what became of them meanwhile.
 */

/**
 * Claims the given leases for revocation (reason 'revoked'): any not yet revoked, except those
 * another live process holds a claim on (unless `takeOver`). A claim whose holder's process lock
 * is gone counts as lapsed: a job continued after a kill takes its own dead claims back at once.
 */
export async function claimJobLeases(
  db: StoreDb,
  ids: string[],
  opts: { ttlSeconds: number; holder: number | null; takeOver: boolean },
): Promise<LeaseRow[]> {
  const { rows } = await storeQuery<LeaseRow>(db, {
    name: 'credbroker.claim_job_leases',
    text: `UPDATE credbroker_leases
          SET state = 'revoking', revoke_reason = COALESCE(revoke_reason, 'revoked'), claimed_by = $3,
              claimed_until = now() + make_interval(secs => $2), next_attempt_at = now() + make_interval(secs => $2)
        WHERE id IN (SELECT id FROM credbroker_leases
                      WHERE id = ANY($1) AND state <> 'revoked'
                        AND ($4 OR state <> 'revoking' OR claimed_until IS NULL OR claimed_until <= now()
                             OR claimed_by IS NULL OR claimed_by NOT IN (${liveHoldersSql('$5')}))
                      ORDER BY id FOR UPDATE SKIP LOCKED)
        RETURNING *`,
    values: [ids, opts.ttlSeconds, opts.holder, opts.takeOver, PROCESS_LOCK_CLASS],
  });
  return rows;
}

/** Of `ids`, those revoked (or gone from the table: tidied history counts as revoked). */
export async function revokedAmong(db: StoreDb, ids: string[]): Promise<Set<string>> {
  const { rows } = await storeQuery<{ id: string }>(db, {
    name: 'credbroker.revoked_among',
    text: `SELECT i.id FROM unnest($1::text[]) AS i(id)
        WHERE NOT EXISTS (SELECT 1 FROM credbroker_leases l WHERE l.id = i.id AND l.state <> 'revoked')`,
    values: [ids],
  });
  return new Set(rows.map((r) => r.id));
}

/** The (mount, role) pairs of a job's leases still to do. */
export async function rolesOfJob(db: StoreDb, jobId: string): Promise<{ mount: string; role: string }[]> {
  const { rows } = await storeQuery<{ mount: string; role: string }>(db, {
    text: `SELECT DISTINCT l.mount, l.role FROM credbroker_job_leases j JOIN credbroker_leases l ON l.id = j.lease_id
        WHERE j.job_id = $1 AND j.outcome IS NULL AND l.state <> 'revoked'`,
    values: [jobId],
  });
  return rows;
}

/** Marks revoked the job's leases of a role that its target cut off before a time; answers their ids. */
export async function markJobRoleRevoked(
  db: StoreDb,
  jobId: string,
  mount: string,
  role: string,
  before: Date,
): Promise<string[]> {
  const { rows } = await storeQuery<{ id: string }>(db, {
    text: `UPDATE credbroker_leases
          SET state = 'revoked', revoke_reason = COALESCE(revoke_reason, 'revoked'), revoked_at = now(),
              next_attempt_at = NULL, claimed_until = NULL, claimed_by = NULL, last_error = NULL
        WHERE id IN (SELECT lease_id FROM credbroker_job_leases WHERE job_id = $1 AND outcome IS NULL)
          AND state <> 'revoked' AND mount = $2 AND role = $3 AND issued_at < $4
        RETURNING id`,
    values: [jobId, mount, role, before],
  });
  return rows.map((r) => r.id);
}
