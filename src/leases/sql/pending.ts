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
