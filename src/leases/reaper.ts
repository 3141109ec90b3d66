import type { Logger } from 'pino';
import type { ReaperConfig } from '../config/schema.js';
import { messageOf } from '../errors.js';
import { SingleRun } from '../single-run.js';
import type { BrokerMetrics } from '../metrics/broker-metrics.js';
import type { LeaseStore } from './lease-store.js';
import { isReaperPaused } from './reaper-pause.js';
import { claimDue, releaseDeadClaims } from './sql/claims.js';
import type { Revoker } from './revoker.js';

export interface ReapResult {
  claimed: number;
  revoked: string[];
  failed: string[];
}

/**
 * Revokes what is due: expired leases, pending leases older than the grace (crashed issues),
 * failed revocations whose backoff has passed, and claims whose reaper died. Holds nothing about
 * leases in memory; any number of reapers share the table through SKIP LOCKED claims.
 */
export class Reaper {
  private readonly ticks = new SingleRun();

  constructor(
    private readonly store: LeaseStore,
    private readonly revoker: Revoker,
    private readonly config: ReaperConfig,
    private readonly log: Logger,
    private readonly metrics?: BrokerMetrics,
  ) {}

  /** One batch: claim up to `limit` due leases and revoke them at each mount's bounded concurrency. */
  async reapOnce(opts: { limit?: number } = {}): Promise<ReapResult> {
    // A killed replica's claims are due again now, not once their TTL has run out.
    const released = await releaseDeadClaims(this.store.pool).catch((err) => {
      this.log.warn({ err: messageOf(err) }, 'could not look for claims of dead processes; their TTL will free them');
      return 0;
    });
    if (released > 0) this.log.info({ released }, 'took over leases whose reaper died');
    // Only picks the cheaper query: the claim itself re-checks the pause, so an unread switch is safe.
    const paused = await isReaperPaused(this.store.pool).catch(() => false);
    const claimed = await claimDue(
      this.store.pool,
      opts.limit ?? this.config.batch_size,
      this.config.claim_ttl,
      this.store.holder(),
      { begunOnly: paused },
    );
    this.metrics?.reaperBatch(claimed.length);
    const result: ReapResult = { claimed: claimed.length, revoked: [], failed: [] };
    for (const [leaseId, outcome] of await this.revoker.revokeClaimedMany(claimed)) {
      (outcome.ok ? result.revoked : result.failed).push(leaseId);
    }
    return result;
  }

  /**
   * Batches until nothing is due. Two batches are in flight, so one batch's bookkeeping (claim,
   * session sweep, marking revoked) overlaps the other's drops; the target still never sees more
   * than the mount's bound at once. A backlog after downtime drains at that same bounded pace.
   */
  async drain(): Promise<number> {
    let total = 0;
    const loop = async () => {
      for (;;) {
        const { claimed } = await this.reapOnce();
        total += claimed;
        if (claimed < this.config.batch_size || this.ticks.isStopped) return;
      }
    };
    await Promise.all([loop(), loop()]);
    return total;
  }

  /** What the timer calls: never throws, never overlaps itself. */
  tick(): Promise<void> {
    return this.ticks.run(() =>
      this.drain()
        .then((n) => {
          if (n > 0) this.log.debug({ claimed: n }, 'reaper tick');
        })
        .catch((err) => this.log.warn({ err: messageOf(err) }, 'reaper tick failed; will retry')),
    );
  }

  /** Stops claiming new work and waits for the batch in flight. */
  stop(): Promise<void> {
    return this.ticks.stop();
  }
}
