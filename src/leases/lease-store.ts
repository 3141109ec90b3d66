import type pg from 'pg';
import { Batcher } from '../store/batcher.js';
import { timed } from '../timing.js';
import type { PendingLease, Quota } from './lease-row.js';
import { insertWithinQuota } from './pending-insert.js';
import { activateLeases, insertPendingRows } from './sql/pending.js';

/**
 * The lease table's handle: its pool, this process's claim holder key, and the two writes of an
 * issue, batched. Every other statement is a function of its own in ./sql/, called with `pool`.
 */
export class LeaseStore {
  // Concurrent issues share their two store writes: one INSERT and one UPDATE (and one commit
  // each) for every batch of requests in flight, instead of one per request. The wait for the
  // batch is timed as a whole, flush included, so the flush itself is not timed again.
  private readonly pendingInserts = new Batcher((leases: PendingLease[]) =>
    insertPendingRows(this.pool, leases, { timed: false }),
  );
  private readonly activations = new Batcher((ids: string[]) => activateLeases(this.pool, ids, { timed: false }));

  constructor(
    readonly pool: pg.Pool,
    /** This process's lock key, recorded on its claims (src/store/process-lock.ts); null: none held. */
    readonly holder: () => number | null = () => null,
  ) {}

  /** Step 2 of an issue: the intent, committed before the target is touched. */
  insertPending(lease: PendingLease): Promise<{ expires_at: Date }> {
    return timed('store', () => this.pendingInserts.run(lease));
  }

  /** The pending insert of a role with quotas, counted under a lock on the role (see pending-insert.ts). */
  insertPendingWithinQuota(lease: PendingLease, quota: Quota): Promise<{ expires_at: Date }> {
    return insertWithinQuota(this.pool, lease, quota);
  }

  /**
   * Step 4: active only if still pending. The seconds left by the store's clock, or null: the
   * reaper took the row, and the credential must go.
   */
  activate(id: string): Promise<number | null> {
    return timed('store', () => this.activations.run(id));
  }
}
