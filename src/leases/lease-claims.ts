import type pg from 'pg';
import { storeQuery } from '../store/pool.js';
import { PROCESS_LOCK_CLASS } from '../store/process-lock.js';
import type { LeaseRow, RevokeReason } from './lease-store.js';
import { prefixUpperBound } from './lease-store.js';

/** How often a caller waiting for another process's revocation of the same leases looks again. */
const POLL_MS = 50;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Claims on credbroker_leases: which process is revoking a lease right now. A claim sets
 * `claimed_until` (and `next_attempt_at` with it) a short TTL ahead; the claiming process renews
 * it with `extend` while its revocation runs, and recording the outcome clears it. A process that
 * dies stops renewing, so its leases are due again within one TTL, on any replica.
 */
export class LeaseClaims {
  constructor(
    private readonly pool: pg.Pool,
    /** This process's lock key (src/store/process-lock.ts), recorded on its claims; null: none held. */
    private readonly holder: () => number | null = () => null,
  ) {}

  private query<R extends pg.QueryResultRow>(sql: string, params: unknown[], opts?: { timeoutMs?: number }) {
    return storeQuery<R>(this.pool, sql, params, opts);
  }

  /**
   * Claims one lease for revocation by an operator. Any non-revoked state qualifies (an
   * irrevocable lease is retried this way, a pending one makes its issuer back out), except a
   * lease another process holds a live claim on: that one is already being revoked. `takeOver`
   * claims it all the same.
   */
  async claim(id: string, reason: RevokeReason, ttlSeconds: number, opts: { takeOver?: boolean } = {}): Promise<LeaseRow | null> {
    const { rows } = await this.query<LeaseRow>(
      `UPDATE credbroker_leases
          SET state = 'revoking', revoke_reason = $2, claimed_by = $5,
              claimed_until = now() + make_interval(secs => $3), next_attempt_at = now() + make_interval(secs => $3)
        WHERE id = $1 AND state <> 'revoked'
          AND ($4 OR state <> 'revoking' OR claimed_until IS NULL OR claimed_until <= now())
        RETURNING *`,
      [id, reason, ttlSeconds, opts.takeOver ?? false, this.holder()],
    );
    return rows[0] ?? null;
  }

  /**
   * Claims one lease for this request, unless another process is revoking it right now: then
   * waits for that revocation rather than run a second one. Null once it is revoked (or never
   * existed). If that revocation fails or its claim lapses, the lease is claimed here; after
   * `waitMs` it is taken over all the same, so no caller waits longer than that for another.
   */
  async claimOrAwait(id: string, reason: RevokeReason, ttlSeconds: number, waitMs: number): Promise<LeaseRow | null> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const takeOver = Date.now() >= deadline;
      const claimed = await this.claim(id, reason, ttlSeconds, { takeOver });
      if (claimed || takeOver) return claimed;
      const { rows } = await this.query<{ state: string }>('SELECT state FROM credbroker_leases WHERE id = $1', [id]);
      if (!rows[0] || rows[0].state === 'revoked') return null;
      await sleep(POLL_MS);
    }
  }

  /**
   * Claims the next page of unrevoked leases under a prefix, in id order after `after` (start
   * with the prefix itself, which ends in "/" and so is no lease id). For revoke-prefix. Leases
   * another process holds a live claim on are left to it, unless `takeOver`.
   */
  async claimPrefixPage(
    prefix: string,
    after: string,
    limit: number,
    reason: RevokeReason,
    ttlSeconds: number,
    opts: { issuedBefore?: Date | null; takeOver?: boolean } = {},
  ): Promise<LeaseRow[]> {
    const { rows } = await this.query<LeaseRow>(
      `UPDATE credbroker_leases
          SET state = 'revoking', revoke_reason = $4, claimed_by = $8,
              claimed_until = now() + make_interval(secs => $5), next_attempt_at = now() + make_interval(secs => $5)
        WHERE id IN (SELECT id FROM credbroker_leases
                      WHERE id > $1 AND id < $2 AND state <> 'revoked' AND ($6::timestamptz IS NULL OR issued_at < $6)
                        AND ($7 OR state <> 'revoking' OR claimed_until IS NULL OR claimed_until <= now())
                      ORDER BY id LIMIT $3 FOR UPDATE)
        RETURNING *`,
      [after, prefixUpperBound(prefix), limit, reason, ttlSeconds, opts.issuedBefore ?? null, opts.takeOver ?? false, this.holder()],
    );
    return rows.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** Ids under a prefix that another process is revoking right now (a live claim). */
  async liveClaimsUnder(prefix: string, issuedBefore: Date | null): Promise<string[]> {
    const { rows } = await this.query<{ id: string }>(
      `SELECT id FROM credbroker_leases
        WHERE id >= $1 AND id < $2 AND state = 'revoking' AND claimed_until > now() AND ($3::timestamptz IS NULL OR issued_at < $3)`,
      [prefix, prefixUpperBound(prefix), issuedBefore],
    );
    return rows.map((r) => r.id);
  }

  /**
   * Waits (at most `waitMs`) until no lease of `ids` has a live claim any more. Answers how many
   * of them are revoked by then; the rest failed, lapsed or are still running, for the caller.
   */
  async awaitClaims(ids: string[], waitMs: number): Promise<number> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const { rows } = await this.query<{ live: number; revoked: number }>(
        `SELECT count(*) FILTER (WHERE state = 'revoking' AND claimed_until > now())::int AS live,
                count(*) FILTER (WHERE state = 'revoked')::int AS revoked
           FROM credbroker_leases WHERE id = ANY($1)`,
        [ids],
      );
      if (rows[0]!.live === 0 || Date.now() >= deadline) return rows[0]!.revoked;
      await sleep(POLL_MS);
    }
  }

  /**
   * Claims up to `limit` due leases: expired, pending past their grace, retries whose backoff has
   * passed, and claims that lapsed. SKIP LOCKED lets any number of reapers share the table.
   */
  async claimDue(limit: number, ttlSeconds: number): Promise<LeaseRow[]> {
    const { rows } = await this.query<LeaseRow>(
      `UPDATE credbroker_leases l
          SET state = 'revoking',
              revoke_reason = COALESCE(l.revoke_reason, CASE l.state WHEN 'pending' THEN 'cleanup' ELSE 'expired' END),
              claimed_by = $3,
              claimed_until = now() + make_interval(secs => $2),
              next_attempt_at = now() + make_interval(secs => $2)
        WHERE l.id IN (SELECT id FROM credbroker_leases
                        WHERE next_attempt_at <= now()
                        ORDER BY next_attempt_at
                        LIMIT $1
                        FOR UPDATE SKIP LOCKED)
        RETURNING l.*`,
      [limit, ttlSeconds, this.holder()],
    );
    return rows;
  }

  /** Claims the next page of unrevoked leases a token created, for revoking them with the token. */
  async claimAccessorPage(accessor: string, limit: number, ttlSeconds: number): Promise<LeaseRow[]> {
    const { rows } = await this.query<LeaseRow>(
      `UPDATE credbroker_leases
          SET state = 'revoking', revoke_reason = 'revoked', claimed_by = $4,
              claimed_until = now() + make_interval(secs => $3), next_attempt_at = now() + make_interval(secs => $3)
        WHERE id IN (SELECT id FROM credbroker_leases
                      WHERE token_accessor = $1 AND state IN ('pending', 'active')
                      LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING *`,
      [accessor, limit, ttlSeconds, this.holder()],
    );
    return rows;
  }

  /**
   * Makes due at once the leases whose claim is held by a process that is gone: its process lock
   * (a session advisory lock on this database) is no longer held by anyone. Called before each
   * reaper pass, so a killed replica's batch is taken over at the next tick, not after its TTL.
   * Uses the partial index on claim holders: only rows being revoked are read.
   */
  async releaseDeadClaims(): Promise<number> {
    const { rowCount } = await this.query(
      `UPDATE credbroker_leases
          SET claimed_until = now(), next_attempt_at = now(), claimed_by = NULL
        WHERE state = 'revoking' AND claimed_by IS NOT NULL AND claimed_until > now()
          AND claimed_by NOT IN (SELECT l.objid::bigint FROM pg_locks l
                                  WHERE l.locktype = 'advisory' AND l.classid = $1::bigint AND l.objsubid = 2 AND l.granted
                                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))`,
      [PROCESS_LOCK_CLASS],
    );
    return rowCount ?? 0;
  }

  /**
   * The heartbeat: the claimer is alive and still revoking these. Only rows still claimed are
   * touched, so a lease whose outcome was recorded meanwhile (a retry's backoff) keeps it. Bounded
   * by `timeoutMs`, so one heartbeat stuck on a slow store cannot outlive the claim it renews.
   */
  async extend(ids: string[], ttlSeconds: number, timeoutMs: number): Promise<void> {
    if (ids.length === 0) return;
    await this.query(
      `UPDATE credbroker_leases
          SET claimed_until = now() + make_interval(secs => $2), next_attempt_at = now() + make_interval(secs => $2)
        WHERE id = ANY($1) AND state = 'revoking' AND claimed_until IS NOT NULL`,
      [ids, ttlSeconds],
      { timeoutMs },
    );
  }
}
