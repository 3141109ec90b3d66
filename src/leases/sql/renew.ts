import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';

export interface RenewedRow {
  expires_at: Date;
  /** Seconds until the new expiry, by the same clock that computed it. */
  seconds_left: number;
  /** The new expiry falls short of what was asked (by more than a second): max_ttl capped it. */
  capped: boolean;
}

/**
 * Moves the expiry of a lease that is still active and unexpired to `incrementSeconds` from now,
 * never past its max_expires_at: computed in SQL, so one clock (the store's) sets the expiry,
 * caps it and tells how long is left. Null when the lease is not active or has expired.
 * `askedSeconds` is the increment before any policy cap, for telling the caller it was capped.
 */
export async function extendActiveLease(
  db: StoreDb,
  id: string,
  incrementSeconds: number,
  askedSeconds: number,
): Promise<RenewedRow | null> {
  const { rows } = await storeQuery<RenewedRow>(db, {
    name: 'credbroker.renew_lease',
    text: `UPDATE credbroker_leases
              SET expires_at = least(now() + make_interval(secs => $2), max_expires_at),
                  next_attempt_at = least(now() + make_interval(secs => $2), max_expires_at),
                  last_renewal = now()
            WHERE id = $1 AND state = 'active' AND expires_at > now()
        RETURNING expires_at,
                  extract(epoch FROM expires_at - now())::float8 AS seconds_left,
                  expires_at < now() + make_interval(secs => $3) - interval '1 second' AS capped`,
    values: [id, incrementSeconds, askedSeconds],
  });
  return rows[0] ?? null;
}
