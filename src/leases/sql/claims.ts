import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';
import { PROCESS_LOCK_CLASS, liveHoldersSql } from '../../store/process-lock.js';
import type { LeaseRow, RevokeReason } from '../lease-row.js';
import { prefixUpperBound } from './prefix-range.js';

/*
 * Claims on credbroker_leases: which process is revoking a lease right now. A claim sets
 * `claimed_until` (and `next_attempt_at` with it) a short TTL ahead and records the claimer's
 * process lock key (`holder`, src/store/process-lock.ts; null: none held); the claimer renews it
 * with extendClaims while its revocation runs, and recording the outcome clears it. A process
 * that dies stops renewing, so its leases are due again within one TTL, on any replica.
 */

/**
 * Claims one lease for revocation by an operator. Any non-revoked state qualifies (an
 * irrevocable lease is retried this way, a pending one makes its issuer back out), except a
 * lease another process holds a live claim on: that one is already being revoked. `takeOver`
 * claims it all the same.
 */
export async function claimLease(
  db: StoreDb,
  id: string,
  reason: RevokeReason,
  ttlSeconds: number,
  opts: { takeOver?: boolean; holder?: number | null } = {},
): Promise<LeaseRow | null> {
  const { rows } = await storeQuery<LeaseRow>(db, {
    name: 'credbroker.claim_lease',
    text: `UPDATE credbroker_leases
          SET state = 'revoking', revoke_reason = $2, claimed_by = $5,
              claimed_until = now() + make_interval(secs => $3), next_attempt_at = now() + make_interval(secs => $3)
        WHERE id = $1 AND state <> 'revoked'
          AND ($4 OR state <> 'revoking' OR claimed_until IS NULL OR claimed_until <= now())
        RETURNING *`,
    values: [id, reason, ttlSeconds, opts.takeOver ?? false, opts.holder ?? null],
  });
  return rows[0] ?? null;
}

/**
 * Claims the next page of unrevoked leases under a prefix, in id order after `after` (start
 * with the prefix itself, which ends in "/" and so is no lease id). For revoke-prefix. Leases
 * another process holds a live claim on are left to it, unless `takeOver`.
 */
export async function claimPrefixPage(
  db: StoreDb,
  page: {
    prefix: string;
    after: string;
    limit: number;
    reason: RevokeReason;
    ttlSeconds: number;
    holder: number | null;
  },
  opts: { issuedBefore?: Date | null; takeOver?: boolean } = {},
): Promise<LeaseRow[]> {
  const { rows } = await storeQuery<LeaseRow>(db, {
    name: 'credbroker.claim_prefix_page',
    text: `UPDATE credbroker_leases
          SET state = 'revoking', revoke_reason = $4, claimed_by = $8,
              claimed_until = now() + make_interval(secs => $5), next_attempt_at = now() + make_interval(secs => $5)
        WHERE id IN (SELECT id FROM credbroker_leases
                      WHERE id > $1 AND id < $2 AND state <> 'revoked' AND ($6::timestamptz IS NULL OR issued_at < $6)
                        AND ($7 OR state <> 'revoking' OR claimed_until IS NULL OR claimed_until <= now())
                      ORDER BY id LIMIT $3 FOR UPDATE)
        RETURNING *`,
    values: [
      page.after,
      prefixUpperBound(page.prefix),
      page.limit,
      page.reason,
      page.ttlSeconds,
      opts.issuedBefore ?? null,
      opts.takeOver ?? false,
      page.holder,
    ],
  });
  return rows.sort((a, b) => (a.id < b.id ? -1 : 1));
}

/** Ids under a prefix that another process is revoking right now (a live claim). */
export async function liveClaimsUnder(db: StoreDb, prefix: string, issuedBefore: Date | null): Promise<string[]> {
  const { rows } = await storeQuery<{ id: string }>(db, {
    name: 'credbroker.live_claims_under',
    text: `SELECT id FROM credbroker_leases
        WHERE id >= $1 AND id < $2 AND state = 'revoking' AND claimed_until > now() AND ($3::timestamptz IS NULL OR issued_at < $3)`,
    values: [prefix, prefixUpperBound(prefix), issuedBefore],
  });
  return rows.map((r) => r.id);
}

/** Of `ids`: how many have a live claim, and how many are revoked. */
export async function countClaimed(db: StoreDb, ids: string[]): Promise<{ live: number; revoked: number }> {
  const { rows } = await storeQuery<{ live: number; revoked: number }>(db, {
    name: 'credbroker.count_claimed',
    text: `SELECT count(*) FILTER (WHERE state = 'revoking' AND claimed_until > now())::int AS live,
                count(*) FILTER (WHERE state = 'revoked')::int AS revoked
           FROM credbroker_leases WHERE id = ANY($1)`,
    values: [ids],
  });
  return rows[0]!;
}

// What is due. While the reaper is paused (credbroker_reaper_pause, read in the same statement,
// so every replica honours a pause at its next claim) only revocations already begun qualify.
const DUE_UNLESS_PAUSED = `next_attempt_at <= now()
                          AND (state = 'revoking' OR NOT (SELECT paused FROM credbroker_reaper_pause))`;
// The same while paused, through the partial index on revoking rows: a paused store may hold a
// large queue of expiries, which the index on next_attempt_at would walk and filter every tick.
const DUE_BEGUN = `next_attempt_at <= now() AND state = 'revoking'`;

/**
 * Claims up to `limit` due leases: expired, pending past their grace, retries whose backoff has
 * passed, and claims that lapsed. SKIP LOCKED lets any number of reapers share the table. While
 * the reaper is paused only revocations already begun are claimed; `begunOnly` (the caller has
 * read that it is paused) claims just those, cheaply.
 */
export async function claimDue(
  db: StoreDb,
  limit: number,
  ttlSeconds: number,
  holder: number | null,
  opts: { begunOnly?: boolean } = {},
): Promise<LeaseRow[]> {
  const { rows } = await storeQuery<LeaseRow>(db, {
    name: opts.begunOnly ? 'credbroker.claim_due_begun' : 'credbroker.claim_due',
    text: `UPDATE credbroker_leases l
          SET state = 'revoking',
              revoke_reason = COALESCE(l.revoke_reason, CASE l.state WHEN 'pending' THEN 'cleanup' ELSE 'expired' END),
              claimed_by = $3,
              claimed_until = now() + make_interval(secs => $2),
              next_attempt_at = now() + make_interval(secs => $2)
        WHERE l.id IN (SELECT id FROM credbroker_leases
                        WHERE ${opts.begunOnly ? DUE_BEGUN : DUE_UNLESS_PAUSED}
                        ORDER BY next_attempt_at
                        LIMIT $1
                        FOR UPDATE SKIP LOCKED)
        RETURNING l.*`,
    values: [limit, ttlSeconds, holder],
  });
  return rows;
}

/** Claims the next page of unrevoked leases a token created, for revoking them with the token. */
export async function claimAccessorPage(
  db: StoreDb,
  accessor: string,
  limit: number,
  ttlSeconds: number,
  holder: number | null,
): Promise<LeaseRow[]> {
  const { rows } = await storeQuery<LeaseRow>(db, {
    name: 'credbroker.claim_accessor_page',
    text: `UPDATE credbroker_leases
          SET state = 'revoking', revoke_reason = 'revoked', claimed_by = $4,
              claimed_until = now() + make_interval(secs => $3), next_attempt_at = now() + make_interval(secs => $3)
        WHERE id IN (SELECT id FROM credbroker_leases
                      WHERE token_accessor = $1 AND state IN ('pending', 'active')
                      LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING *`,
    values: [accessor, limit, ttlSeconds, holder],
  });
  return rows;
}

/**
 * Makes due at once the leases whose claim is held by a process that is gone: its process lock
 * (a session advisory lock on this database) is no longer held by anyone. Called before each
 * reaper pass, so a killed replica's batch is taken over at the next tick, not after its TTL.
 * Uses the partial index on claim holders: only rows being revoked are read.
 */
export async function releaseDeadClaims(db: StoreDb): Promise<number> {
  const { rowCount } = await storeQuery(db, {
    name: 'credbroker.release_dead_claims',
    text: `UPDATE credbroker_leases
          SET claimed_until = now(), next_attempt_at = now(), claimed_by = NULL
        WHERE state = 'revoking' AND claimed_by IS NOT NULL AND claimed_until > now()
          AND claimed_by NOT IN (${liveHoldersSql('$1')})`,
    values: [PROCESS_LOCK_CLASS],
  });
  return rowCount ?? 0;
}

/**
 * The heartbeat: the claimer is alive and still revoking these. Only rows still claimed are
 * touched, so a lease whose outcome was recorded meanwhile (a retry's backoff) keeps it. Bounded
 * by `timeoutMs`, so one heartbeat stuck on a slow store cannot outlive the claim it renews.
 */
export async function extendClaims(db: StoreDb, ids: string[], ttlSeconds: number, timeoutMs: number): Promise<void> {
  if (ids.length === 0) return;
  await storeQuery(
    db,
    {
      name: 'credbroker.extend_claims',
      text: `UPDATE credbroker_leases
          SET claimed_until = now() + make_interval(secs => $2), next_attempt_at = now() + make_interval(secs => $2)
        WHERE id = ANY($1) AND state = 'revoking' AND claimed_until IS NOT NULL`,
      values: [ids, ttlSeconds],
    },
    { timeoutMs },
  );
}
