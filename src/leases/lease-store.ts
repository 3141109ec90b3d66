import type pg from 'pg';
import type { RevokeHandle } from '../engines.js';
import { StoreUnavailable } from '../errors.js';
import { isConnectionFailure, storeQuery } from '../store/pool.js';
import { timed } from '../timing.js';
import { Batcher } from '../store/batcher.js';
import { LeaseClaims } from './lease-claims.js';
import { insertPendingRows, insertWithinQuota, type PendingLease, type Quota } from './pending-insert.js';

export type { PendingLease };

export type LeaseState = 'pending' | 'active' | 'revoking' | 'revoked' | 'irrevocable';
export type RevokeReason = 'expired' | 'revoked' | 'prefix' | 'forced' | 'cleanup';

export interface LeaseRow {
  id: string;
  mount: string;
  role: string;
  engine: string;
  state: LeaseState;
  revoke_handle: RevokeHandle;
  requester: string | null;
  issued_at: Date;
  expires_at: Date;
  max_expires_at: Date;
  last_renewal: Date | null;
  renewable: boolean;
  attempts: number;
  next_attempt_at: Date | null;
  last_error: string | null;
  revoked_at: Date | null;
  revoke_reason: RevokeReason | null;
  identity: { name: string; auth_mount: string; metadata?: Record<string, string>; accessor?: string; root?: boolean } | null;
  token_accessor: string | null;
  /** Set when a revocation disabled the credential but could not finish cleaning up after it. */
  credential_disabled_at: Date | null;
  /** A live claim: until when, and the process lock key of the process holding it (lease-claims.ts). */
  claimed_until: Date | null;
  claimed_by: number | null;
}


/** Queries on credbroker_leases. One place owns the table; every statement is parameterized. */
export class LeaseStore {
  // Concurrent issues share their two store writes: one INSERT and one UPDATE (and one commit
  // each) for every batch of requests in flight, instead of one per request.
  private readonly pendingInserts = new Batcher((leases: PendingLease[]) => this.insertPendingBatch(leases));
  private readonly activations = new Batcher((ids: string[]) => this.activateBatch(ids));

  /** Claims: who is revoking which lease right now (see lease-claims.ts). */
  readonly claims: LeaseClaims;

  constructor(
    readonly pool: pg.Pool,
    /** This process's lock key, recorded on its claims (src/store/process-lock.ts). */
    holder: () => number | null = () => null,
  ) {
    this.claims = new LeaseClaims(pool, holder);
  }

  private query<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    return storeQuery<R>(this.pool, sql, params);
  }

  /** Step 2 of an issue: the intent, committed before the target is touched. */
  insertPending(lease: PendingLease): Promise<{ expires_at: Date }> {
    return timed('store', () => this.pendingInserts.run(lease));
  }

  /** The pending insert of a role with quotas, counted under a lock on the role (see pending-insert.ts). */
  insertPendingWithinQuota(lease: PendingLease, quota: Quota): Promise<{ expires_at: Date }> {
    return timed('store', () => insertWithinQuota(this.pool, lease, quota));
  }

  private async insertPendingBatch(leases: PendingLease[]): Promise<{ expires_at: Date }[]> {
    try {
      return await insertPendingRows(this.pool, leases);
    } catch (err) {
      throw isConnectionFailure(err) ? new StoreUnavailable('lease store unavailable', { cause: err }) : err;
    }
  }

  /** Step 4: only if still pending. False means the reaper took the row, and the credential must go. */
  activate(id: string): Promise<boolean> {
    return timed('store', () => this.activations.run(id));
  }

  private async activateBatch(ids: string[]): Promise<boolean[]> {
    // Not timed here: activate() already counts the wait, flush included.
    const { rows } = await this.pool
      .query<{ id: string }>(`UPDATE credbroker_leases SET state = 'active', next_attempt_at = expires_at WHERE id = ANY($1) AND state = 'pending' RETURNING id`, [ids])
      .catch((err) => {
        throw isConnectionFailure(err) ? new StoreUnavailable('lease store unavailable', { cause: err }) : err;
      });
    const activated = new Set(rows.map((r) => r.id));
    return ids.map((id) => activated.has(id));
  }

  /** The issuer is alive and its engine call still running: push the pending grace forward. */
  async extendPending(id: string, graceSeconds: number): Promise<void> {
    await this.query(
      `UPDATE credbroker_leases SET next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1 AND state = 'pending'`,
      [id, graceSeconds],
    );
  }

  /** Whatever state the lease is in, it is due for revocation (again) now. */
  async requeue(id: string, error: string): Promise<void> {
    await this.query(
      `UPDATE credbroker_leases
          SET state = 'revoking', next_attempt_at = now(), claimed_until = NULL, revoked_at = NULL, last_error = $2, revoke_reason = COALESCE(revoke_reason, 'cleanup')
        WHERE id = $1`,
      [id, error],
    );
  }

  /** An issue failed after its pending row: whatever it may have created is due for cleanup now. */
  async markForCleanup(id: string, error: string): Promise<void> {
    await this.query(
      `UPDATE credbroker_leases SET state = 'revoking', revoke_reason = 'cleanup', next_attempt_at = now(), last_error = $2
        WHERE id = $1 AND state = 'pending'`,
      [id, error],
    );
  }

  async find(id: string): Promise<LeaseRow | null> {
    const { rows } = await this.query<LeaseRow>('SELECT * FROM credbroker_leases WHERE id = $1', [id]);
    return rows[0] ?? null;
  }

  /** Moves the expiry of a lease that is still active and unexpired. Null when it is not. */
  async extend(id: string, expiresAt: Date): Promise<LeaseRow | null> {
    const { rows } = await this.query<LeaseRow>(
      `UPDATE credbroker_leases SET expires_at = $2, next_attempt_at = $2, last_renewal = now()
        WHERE id = $1 AND state = 'active' AND expires_at > now() RETURNING *`,
      [id, expiresAt],
    );
    return rows[0] ?? null;
  }

  async markRevoked(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.query(
      `UPDATE credbroker_leases SET state = 'revoked', revoked_at = now(), next_attempt_at = NULL, claimed_until = NULL, last_error = NULL
        WHERE id = ANY($1) AND state = 'revoking'`,
      [ids],
    );
  }

  /**
   * Records a failed revocation: retried after an exponential backoff with jitter (computed in SQL
   * so every replica agrees), or irrevocable after `maxAttempts`.
   */
  async markRevokeFailed(
    id: string,
    error: string,
    policy: { maxAttempts: number; backoffBaseSeconds: number; backoffMaxSeconds: number },
    /** The revocation took the credential's power away; only its cleanup failed. */
    credentialDisabled = false,
  ): Promise<LeaseState | null> {
    const { rows } = await this.query<{ state: LeaseState }>(
      `UPDATE credbroker_leases
          SET attempts = attempts + 1,
              last_error = $2,
              claimed_until = NULL, claimed_by = NULL,
              credential_disabled_at = CASE WHEN $6 THEN COALESCE(credential_disabled_at, now()) ELSE credential_disabled_at END,
              state = CASE WHEN attempts + 1 >= $3 THEN 'irrevocable' ELSE 'revoking' END,
              next_attempt_at = CASE WHEN attempts + 1 >= $3 THEN NULL
                ELSE now() + make_interval(secs => least($5::float8, $4::float8 * power(2, attempts)) * (0.5 + random() / 2)) END
        WHERE id = $1 AND state = 'revoking' RETURNING state`,
      [id, error, policy.maxAttempts, policy.backoffBaseSeconds, policy.backoffMaxSeconds, credentialDisabled],
    );
    return rows[0]?.state ?? null;
  }

  /** Ids of leases not yet revoked whose id starts with `prefix` (a btree range on the "C" column). */
  async liveIdsWithPrefix(prefix: string, owner?: { name: string; auth_mount: string }): Promise<string[]> {
    const { rows } = await this.query<{ id: string }>(
      `SELECT id FROM credbroker_leases WHERE id >= $1 AND id < $2 AND state <> 'revoked'
          AND ($3::text IS NULL OR (identity->>'name' = $3 AND identity->>'auth_mount' = $4)) ORDER BY id`,
      [prefix, prefixUpperBound(prefix), owner?.name ?? null, owner?.auth_mount ?? null],
    );
    return rows.map((r) => r.id);
  }

  /** The roles that have unrevoked leases under the prefix issued before a time. */
  async rolesIssuedBefore(prefix: string, before: Date): Promise<{ mount: string; role: string }[]> {
    const { rows } = await this.query<{ mount: string; role: string }>(
      `SELECT DISTINCT mount, role FROM credbroker_leases WHERE id >= $1 AND id < $2 AND state <> 'revoked' AND issued_at < $3`,
      [prefix, prefixUpperBound(prefix), before],
    );
    return rows;
  }

  /** Leases whose target already ended every credential of their role issued before a time. */
  /** Ids of the leases marked: each gets its audit event. */
  async markRoleRevokedBefore(prefix: string, mount: string, role: string, before: Date): Promise<string[]> {
    const { rows } = await this.query<{ id: string }>(
      `UPDATE credbroker_leases
          SET state = 'revoked', revoke_reason = 'prefix', revoked_at = now(), next_attempt_at = NULL, claimed_until = NULL, last_error = NULL
        WHERE id >= $1 AND id < $2 AND state <> 'revoked' AND mount = $3 AND role = $4 AND issued_at < $5
        RETURNING id`,
      [prefix, prefixUpperBound(prefix), mount, role, before],
    );
    return rows.map((r) => r.id);
  }

  /** Leases the reaper gave up on, under a prefix: what an operator must retry or force. */
  async irrevocable(prefix: string, limit: number): Promise<LeaseRow[]> {
    const { rows } = await this.query<LeaseRow>(
      `SELECT * FROM credbroker_leases WHERE id >= $1 AND id < $2 AND state = 'irrevocable' ORDER BY id LIMIT $3`,
      [prefix, prefixUpperBound(prefix), limit],
    );
    return rows;
  }

  /** Marks every unrevoked lease under the prefix revoked without touching the target. */
  async forceRevoke(prefix: string): Promise<number> {
    const { rowCount } = await this.query(
      `UPDATE credbroker_leases
          SET state = 'revoked', revoke_reason = 'forced', revoked_at = now(), next_attempt_at = NULL, claimed_until = NULL
        WHERE id >= $1 AND id < $2 AND state <> 'revoked'`,
      [prefix, prefixUpperBound(prefix)],
    );
    return rowCount ?? 0;
  }
}

/** The smallest string greater than every string starting with `prefix`, in "C" collation. */
export function prefixUpperBound(prefix: string): string {
  if (prefix === '') return '\u{10FFFF}';
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}
