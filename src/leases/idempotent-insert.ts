import { createHash } from 'node:crypto';
import { IdempotentLeaseExists } from '../errors.js';
import { inStoreTransaction } from '../store/query.js';
import type { LeaseDeps } from './lease-deps.js';
import type { PendingLease, Quota } from './lease-row.js';
import { takeQuotaPlace } from './pending-insert.js';
import { insertKeyedPending, liveLeaseOfScope, releaseExpiredKey, type KeyedInsert } from './sql/pending.js';

/** How often a request reads a first request's pending lease with its key: from 50 ms, doubling to 500 ms. */
const POLL_MS = 100;
const MAX_POLL_MS = 500;

/**
 * The scope of an idempotency key: the same key from another identity (name and auth mount) or
 * on another path is another request. Hashed, so the index entry has one width whatever the
 * identity's name; the key itself is not a secret (see README, idempotent lease requests).
 */
export function idempotencyScope(
  identity: { name: string; authMount: string },
  requestPath: string,
  key: string,
): string {
  return createHash('sha256')
    .update(JSON.stringify([identity.authMount, identity.name, requestPath, key]))
    .digest('hex');
}

/**
 * Step 2 of an issue with an idempotency key: the pending row carries the scope, and the unique
 * index makes a second live lease in the scope impossible on any replica. A request that finds
 * the key held by a live lease throws IdempotentLeaseExists with its id; while that lease is
 * still pending it waits for it first (bounded by engine_timeout, the longest an issue runs), so
 * that a failed first issue lets this one mint the lease instead of refusing it.
 */
export async function insertKeyed(
  deps: LeaseDeps,
  lease: PendingLease,
  scope: string,
  quota: Quota | null,
): Promise<{ expires_at: Date }> {
  const deadline = Date.now() + deps.engineTimeoutSeconds * 1000;
  for (let attempt = 0; ; attempt++) {
    const found = await insertOnce(deps, lease, scope, quota);
    if (found?.inserted) return { expires_at: found.expires_at };
    if (found?.expired) {
      await releaseExpiredKey(deps.store.pool, found.id);
    } else if (found?.state === 'pending' && Date.now() < deadline) {
      await whilePending(deps, scope, deadline);
    } else if (found) {
      throw new IdempotentLeaseExists(found.id, found.state);
    } else if (Date.now() >= deadline) {
      throw new Error('idempotent insert: a key conflict without a live holder');
    } else if (attempt > 0) {
      // A holder that left between the conflict and the read is seen by the next statement at once.
      await sleep(POLL_MS);
    }
  }
}

/** Waits, reading (not inserting), until the scope's lease is no longer pending or the deadline passes. */
async function whilePending(deps: LeaseDeps, scope: string, deadline: number): Promise<void> {
  for (let delay = POLL_MS / 2; Date.now() < deadline; delay = Math.min(delay * 2, MAX_POLL_MS)) {
    await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
    if ((await liveLeaseOfScope(deps.store.pool, scope))?.state !== 'pending') return;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function insertOnce(deps: LeaseDeps, lease: PendingLease, scope: string, quota: Quota | null) {
  if (!quota) return insertKeyedPending(deps.store.pool, lease, scope);
  return inStoreTransaction(deps.store.pool, async (client): Promise<KeyedInsert | null> => {
    // The lease that holds the key is the answer even when the quota is full (it is counted in it).
    const live = await liveLeaseOfScope(client, scope);
    if (live) return { inserted: false, ...live };
    await takeQuotaPlace(client, lease, quota);
    return insertKeyedPending(client, lease, scope);
  });
}
