import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';
import type { LeaseState } from '../lease-row.js';

export interface RetryPolicy {
  maxAttempts: number;
  backoffBaseSeconds: number;
  backoffMaxSeconds: number;
}

/** Revocations that succeeded, in one UPDATE for every outcome arriving together. */
export async function markRevoked(db: StoreDb, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await storeQuery(db, {
    name: 'credbroker.mark_revoked',
    text: `UPDATE credbroker_leases SET state = 'revoked', revoked_at = now(), next_attempt_at = NULL, claimed_until = NULL, last_error = NULL
            WHERE id = ANY($1) AND state = 'revoking'`,
    values: [ids],
  });
}

/**
 * Records a failed revocation: retried after an exponential backoff with jitter (computed in SQL
 * so every replica agrees), or irrevocable after `maxAttempts`. `credentialDisabled`: the
 * revocation took the credential's power away; only its cleanup failed.
 */
export async function markRevokeFailed(
  db: StoreDb,
  id: string,
  error: string,
  policy: RetryPolicy,
  credentialDisabled: boolean,
): Promise<LeaseState | null> {
  const { rows } = await storeQuery<{ state: LeaseState }>(db, {
    name: 'credbroker.mark_revoke_failed',
    text: `UPDATE credbroker_leases
          SET attempts = attempts + 1,
              last_error = $2,
              claimed_until = NULL, claimed_by = NULL,
              credential_disabled_at = CASE WHEN $6 THEN COALESCE(credential_disabled_at, now()) ELSE credential_disabled_at END,
              state = CASE WHEN attempts + 1 >= $3 THEN 'irrevocable' ELSE 'revoking' END,
              next_attempt_at = CASE WHEN attempts + 1 >= $3 THEN NULL
                ELSE now() + make_interval(secs => least($5::float8, $4::float8 * power(2, attempts)) * (0.5 + random() / 2)) END
        WHERE id = $1 AND state = 'revoking' RETURNING state`,
    values: [id, error, policy.maxAttempts, policy.backoffBaseSeconds, policy.backoffMaxSeconds, credentialDisabled],
  });
  return rows[0]?.state ?? null;
}

/** Whatever state the lease is in, it is due for revocation (again) now. */
export async function requeueLease(db: StoreDb, id: string, error: string): Promise<void> {
  await storeQuery(db, {
    name: 'credbroker.requeue_lease',
    text: `UPDATE credbroker_leases
              SET state = 'revoking', next_attempt_at = now(), claimed_until = NULL, revoked_at = NULL, last_error = $2, revoke_reason = COALESCE(revoke_reason, 'cleanup')
            WHERE id = $1`,
    values: [id, error],
  });
}
