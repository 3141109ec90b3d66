import type { StoreDb } from '../store/query.js';
import type { LeaseRow, RevokeReason } from './lease-row.js';
import type { LeaseStore } from './lease-store.js';
import { claimLease, countClaimed } from './sql/claims.js';
import { leaseState } from './sql/lookup.js';

/** How often a caller waiting for another process's revocation of the same leases looks again. */
const POLL_MS = 50;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Claims one lease for this request, unless another process is revoking it right now: then
 * waits for that revocation rather than run a second one. Null once it is revoked (or never
 * existed). If that revocation fails or its claim lapses, the lease is claimed here; after
 * `waitMs` it is taken over all the same, so no caller waits longer than that for another.
 */
export async function claimOrAwait(
  store: LeaseStore,
  id: string,
  reason: RevokeReason,
  ttlSeconds: number,
  waitMs: number,
): Promise<LeaseRow | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const takeOver = Date.now() >= deadline;
    const claimed = await claimLease(store.pool, id, reason, ttlSeconds, { takeOver, holder: store.holder() });
    if (claimed || takeOver) return claimed;
    const state = await leaseState(store.pool, id);
    if (state === null || state === 'revoked') return null;
    await sleep(POLL_MS);
  }
}

/**
 * Waits (at most `waitMs`) until no lease of `ids` has a live claim any more. Answers how many
 * of them are revoked by then; the rest failed, lapsed or are still running, for the caller.
 */
export async function awaitClaims(db: StoreDb, ids: string[], waitMs: number): Promise<number> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const { live, revoked } = await countClaimed(db, ids);
    if (live === 0 || Date.now() >= deadline) return revoked;
    await sleep(POLL_MS);
  }
}
