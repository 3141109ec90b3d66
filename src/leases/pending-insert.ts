import type pg from 'pg';
import { QuotaExceeded, StoreUnavailable } from '../errors.js';
import type { RevokeHandle } from '../engines.js';
import { isConnectionFailure } from '../store/pool.js';

export interface PendingLease {
  id: string;
  mount: string;
  role: string;
  engine: string;
  handle: RevokeHandle;
  requester: string | null;
  ttlSeconds: number;
  maxTtlSeconds: number;
  pendingGraceSeconds: number;
  renewable: boolean;
  /** Who holds it (see identityRecord) and the token that asked, for ownership, quotas and audit. */
  identity?: Record<string, unknown> | null;
  tokenAccessor?: string | null;
}

export interface Quota {
  perRole?: number;
  perIdentity?: number;
}

/**
 * Step 2 of an issue for any number of leases at once: one INSERT, one commit. Answers each
 * lease's expiry, computed by the store's clock, in the order given.
 */
export async function insertPendingRows(db: pg.Pool | pg.PoolClient, leases: PendingLease[]): Promise<{ expires_at: Date }[]> {
  const { rows } = await db.query<{ id: string; expires_at: Date }>(
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester,
                                    expires_at, max_expires_at, next_attempt_at, renewable, identity, token_accessor)
     SELECT id, mount, role, engine, 'pending', handle::jsonb, requester,
            now() + make_interval(secs => ttl), now() + make_interval(secs => max_ttl), now() + make_interval(secs => grace), renewable,
            identity::jsonb, accessor
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::float8[], $9::float8[], $10::bool[],
                   $11::text[], $12::text[])
            AS t(id, mount, role, engine, handle, requester, ttl, max_ttl, grace, renewable, identity, accessor)
     RETURNING id, expires_at`,
    [
      leases.map((l) => l.id),
      leases.map((l) => l.mount),
      leases.map((l) => l.role),
      leases.map((l) => l.engine),
      leases.map((l) => JSON.stringify(l.handle)),
      leases.map((l) => l.requester),
      leases.map((l) => l.ttlSeconds),
      leases.map((l) => l.maxTtlSeconds),
      leases.map((l) => l.pendingGraceSeconds),
      leases.map((l) => l.renewable),
      leases.map((l) => (l.identity ? JSON.stringify(l.identity) : null)),
      leases.map((l) => l.tokenAccessor ?? null),
    ],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  return leases.map((l) => byId.get(l.id)!);
}

/**
 * The pending insert of a role with quotas: counted and written under a transaction-scoped
 * advisory lock on the role, so concurrent issues on any replica cannot both take the last place.
 */
export async function insertWithinQuota(pool: pg.Pool, lease: PendingLease, quota: Quota): Promise<{ expires_at: Date }> {
  const client = await pool.connect().catch((err) => {
    throw new StoreUnavailable('lease store unavailable', { cause: err });
  });
  let broken = false;
  try {
    await client.query('BEGIN');
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('credbroker-quota:' || $1 || '/' || $2))`, [lease.mount, lease.role]);
    const identity = lease.identity as { name?: string; auth_mount?: string } | null | undefined;
    const { rows } = await client.query<{ total: number; mine: number }>(
      `SELECT count(*)::int AS total,
              count(*) FILTER (WHERE identity->>'name' = $3 AND identity->>'auth_mount' = $4)::int AS mine
         FROM credbroker_leases WHERE mount = $1 AND role = $2 AND state IN ('pending', 'active')`,
      [lease.mount, lease.role, identity?.name ?? null, identity?.auth_mount ?? null],
    );
    const { total, mine } = rows[0]!;
    if (quota.perRole !== undefined && total >= quota.perRole) {
      throw new QuotaExceeded(`quota reached: role ${lease.mount}/${lease.role} allows ${quota.perRole} active leases`);
    }
    if (quota.perIdentity !== undefined && mine >= quota.perIdentity) {
      throw new QuotaExceeded(`quota reached: ${identity?.name ?? 'this identity'} may hold ${quota.perIdentity} active leases of ${lease.mount}/${lease.role}`);
    }
    const [out] = await insertPendingRows(client, [lease]);
    await client.query('COMMIT');
    return out!;
  } catch (err) {
    broken = isConnectionFailure(err) && !(err instanceof QuotaExceeded);
    // A connection that failed (or timed out on a frozen store) is discarded, not rolled back.
    if (!broken) await client.query('ROLLBACK').catch(() => undefined);
    throw broken ? new StoreUnavailable('lease store unavailable', { cause: err }) : err;
  } finally {
    client.release(broken);
  }
}
