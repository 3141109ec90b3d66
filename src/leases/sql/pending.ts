import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';
import type { PendingLease } from '../lease-row.js';

/**
 * Step 2 of an issue for any number of leases at once: one INSERT, one commit. Answers each
 * lease's expiry, computed by the store's clock, in the order given.
 */
export async function insertPendingRows(
  db: StoreDb,
  leases: PendingLease[],
  opts: { timed?: boolean } = {},
): Promise<{ expires_at: Date }[]> {
  const { rows } = await storeQuery<{ id: string; expires_at: Date }>(
    db,
    {
      name: 'credbroker.insert_pending',
      text: `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester,
                                    expires_at, max_expires_at, next_attempt_at, renewable, identity, token_accessor)
     SELECT id, mount, role, engine, 'pending', handle::jsonb, requester,
            now() + make_interval(secs => ttl), now() + make_interval(secs => max_ttl), now() + make_interval(secs => grace), renewable,
            identity::jsonb, accessor
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::float8[], $9::float8[], $10::bool[],
                   $11::text[], $12::text[])
            AS t(id, mount, role, engine, handle, requester, ttl, max_ttl, grace, renewable, identity, accessor)
     RETURNING id, expires_at`,
      values: [
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
    },
    opts,
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  return leases.map((l) => byId.get(l.id)!);
}

/** A transaction-scoped advisory lock on one role's quota: concurrent issues of the role queue here. */
export async function lockRoleQuota(db: StoreDb, mount: string, role: string): Promise<void> {
  await storeQuery(db, {
    name: 'credbroker.lock_role_quota',
    text: `SELECT pg_advisory_xact_lock(hashtext('credbroker-quota:' || $1 || '/' || $2))`,
    values: [mount, role],
  });
}

/** Live (pending or active) leases of a role: all of them, and those of one identity. */
export async function countLiveOfRole(
  db: StoreDb,
  mount: string,
  role: string,
  identity: { name?: string; auth_mount?: string } | null,
): Promise<{ total: number; mine: number }> {
  const { rows } = await storeQuery<{ total: number; mine: number }>(db, {
    name: 'credbroker.count_live_of_role',
    text: `SELECT count(*)::int AS total,
              count(*) FILTER (WHERE identity->>'name' = $3 AND identity->>'auth_mount' = $4)::int AS mine
         FROM credbroker_leases WHERE mount = $1 AND role = $2 AND state IN ('pending', 'active')`,
    values: [mount, role, identity?.name ?? null, identity?.auth_mount ?? null],
  });
  return rows[0]!;
}

/**
 * Step 4, for a batch: active only if still pending. Answers, per id in order, the seconds left
 * by the store's clock (the TTL ran from the pending insert), or null where the reaper took the row.
 */
export async function activateLeases(
  db: StoreDb,
  ids: string[],
  opts: { timed?: boolean } = {},
): Promise<(number | null)[]> {
  const { rows } = await storeQuery<{ id: string; seconds_left: number }>(
    db,
    {
      name: 'credbroker.activate_leases',
      text: `UPDATE credbroker_leases SET state = 'active', next_attempt_at = expires_at
              WHERE id = ANY($1) AND state = 'pending'
          RETURNING id, extract(epoch FROM expires_at - now())::float8 AS seconds_left`,
      values: [ids],
    },
    opts,
  );
  const activated = new Map(rows.map((r) => [r.id, r.seconds_left]));
  return ids.map((id) => activated.get(id) ?? null);
}

/** The issuer is alive and its engine call still running: push the pending grace forward. */
export async function extendPending(db: StoreDb, id: string, graceSeconds: number): Promise<void> {
  await storeQuery(db, {
    name: 'credbroker.extend_pending',
    text: `UPDATE credbroker_leases SET next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1 AND state = 'pending'`,
    values: [id, graceSeconds],
  });
}

/** An issue failed after its pending row: whatever it may have created is due for cleanup now. */
export async function markForCleanup(db: StoreDb, id: string, error: string): Promise<void> {
  await storeQuery(db, {
    name: 'credbroker.mark_for_cleanup',
    text: `UPDATE credbroker_leases SET state = 'revoking', revoke_reason = 'cleanup', next_attempt_at = now(), last_error = $2
            WHERE id = $1 AND state = 'pending'`,
    values: [id, error],
  });
}

/** What a keyed pending insert found: its own row written, or the live lease that holds the key. */
export type KeyedInsert =
  { inserted: true; expires_at: Date } | { inserted: false; id: string; state: 'pending' | 'active'; expired: boolean };

/**
 * Step 2 for a request with an idempotency key: one row, written unless a live lease already holds
 * the scope (the unique index credbroker_leases_idempotency, so across replicas). On a conflict,
 * answers that lease; null when it left pending/active between the conflict and the read (the
 * statement's snapshot predates its commit, or it was revoked meanwhile): try again. Never batched:
 * one request's conflict must not fail the others' inserts.
 */
export async function insertKeyedPending(db: StoreDb, lease: PendingLease, scope: string): Promise<KeyedInsert | null> {
  const { rows } = await storeQuery<{
    id: string;
    state: 'pending' | 'active';
    expires_at: Date;
    inserted: boolean;
    expired: boolean;
  }>(db, {
    name: 'credbroker.insert_keyed_pending',
    text: `WITH inserted AS (
       INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester, expires_at, max_expires_at,
                                      next_attempt_at, renewable, identity, token_accessor, idempotency_scope)
       VALUES ($1, $2, $3, $4, 'pending', $5::jsonb, $6, now() + make_interval(secs => $7::float8),
               now() + make_interval(secs => $8::float8), now() + make_interval(secs => $9::float8), $10, $11::jsonb, $12, $13)
       ON CONFLICT (idempotency_scope) WHERE idempotency_scope IS NOT NULL AND state IN ('pending', 'active') DO NOTHING
       RETURNING id, state, expires_at)
     SELECT id, state, expires_at, true AS inserted, false AS expired FROM inserted
     UNION ALL
     SELECT id, state, expires_at, false, state = 'active' AND expires_at <= now() FROM credbroker_leases
      WHERE idempotency_scope = $13 AND state IN ('pending', 'active') AND NOT EXISTS (SELECT 1 FROM inserted)`,
    values: [
      lease.id,
      lease.mount,
      lease.role,
      lease.engine,
      JSON.stringify(lease.handle),
      lease.requester,
      lease.ttlSeconds,
      lease.maxTtlSeconds,
      lease.pendingGraceSeconds,
      lease.renewable,
      lease.identity ? JSON.stringify(lease.identity) : null,
      lease.tokenAccessor ?? null,
      scope,
    ],
  });
  const row = rows[0];
  if (!row) return null;
  if (row.inserted) return { inserted: true, expires_at: row.expires_at };
  return { inserted: false, id: row.id, state: row.state, expired: row.expired };
}

/** The live lease holding an idempotency scope, if any (for a quota-counted insert, before counting). */
export async function liveLeaseOfScope(
  db: StoreDb,
  scope: string,
): Promise<{ id: string; state: 'pending' | 'active'; expired: boolean } | null> {
  const { rows } = await storeQuery<{ id: string; state: 'pending' | 'active'; expired: boolean }>(db, {
    name: 'credbroker.live_lease_of_scope',
    text: `SELECT id, state, state = 'active' AND expires_at <= now() AS expired FROM credbroker_leases
            WHERE idempotency_scope = $1 AND state IN ('pending', 'active')`,
    values: [scope],
  });
  return rows[0] ?? null;
}

/**
 * An expired lease the reaper has not reached yet still holds its idempotency key: hand it to the
 * reaper now (due at once, as claimDue would find it), so the key is free for a new lease.
 */
export async function releaseExpiredKey(db: StoreDb, id: string): Promise<void> {
  await storeQuery(db, {
    name: 'credbroker.release_expired_key',
    text: `UPDATE credbroker_leases SET state = 'revoking', revoke_reason = 'expired', next_attempt_at = now()
            WHERE id = $1 AND state = 'active' AND expires_at <= now()`,
    values: [id],
  });
}
