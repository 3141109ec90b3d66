import type { Logger } from 'pino';
import { messageOf } from '../errors.js';
import type { StoreDb } from '../store/query.js';
import { extendClaims } from './sql/claims.js';

/**
 * Keeps this process's claims alive while their revocations run: every third of the claim TTL,
 * one UPDATE renews every lease held. A process that dies (or cannot reach the store for two
 * thirds of the TTL) stops renewing, and its leases are due again on any replica within one TTL.
 * Only the ids in flight are held in memory, never the lease table.
 */
export class ClaimHeartbeat {
  private readonly held = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private beating = false;
  private readonly intervalMs: number;

  constructor(
    private readonly db: StoreDb,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
  ) {
    this.intervalMs = (ttlSeconds * 1000) / 3;
  }

  /** Renews the claims on `ids` until each is released (as many times as it was held). */
  hold(ids: Iterable<string>): void {
    for (const id of ids) this.held.set(id, (this.held.get(id) ?? 0) + 1);
    if (this.held.size > 0 && !this.timer) {
      this.timer = setInterval(() => this.beat(), this.intervalMs);
      this.timer.unref();
    }
  }

  release(id: string): void {
    const count = (this.held.get(id) ?? 0) - 1;
    if (count > 0) this.held.set(id, count);
    else this.held.delete(id);
    if (this.held.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private beat(): void {
    // A heartbeat still in flight is bounded by the interval: never two at once.
    if (this.beating || this.held.size === 0) return;
    this.beating = true;
    extendClaims(this.db, [...this.held.keys()], this.ttlSeconds, this.intervalMs)
      .catch((err) =>
        this.log.warn(
          { err: messageOf(err), leases: this.held.size },
          'could not renew revocation claims; another replica may revoke them again',
        ),
      )
      .finally(() => {
        this.beating = false;
      });
  }
}
