import type { Logger } from 'pino';
import type { ReaperConfig } from '../config/schema.js';
import type { MountRegistry } from '../mounts.js';
import type { LeaseRow, LeaseState, LeaseStore } from './lease-store.js';

export type RevokeOutcome = { ok: true } | { ok: false; error: string; state: LeaseState | null };

/** Most handles sent to a target in one revokeMany call. */
const TARGET_BATCH = 256;

/**
 * Revokes leases already claimed (state 'revoking') on their targets, within each mount's
 * concurrency bound, and records the outcomes: revoked (one UPDATE for all that succeeded), or
 * retried later with backoff, or irrevocable after the last attempt. Used by the reaper and by
 * operator revokes alike.
 */
export class Revoker {
  constructor(
    private readonly store: LeaseStore,
    private readonly mounts: MountRegistry,
    private readonly policy: ReaperConfig,
    private readonly log: Logger,
    /**
     * Engine-level events for the audit log: revoked, revoke failed (will retry), irrevocable.
     * Awaited: a revocation is reported done only once its event is recorded (or has failed to be).
     */
    private readonly onEvent: (event: { operation: string; lease_id: string; error?: string; data?: Record<string, unknown> }) => void | Promise<void> = () => undefined,
  ) {}

  async revokeClaimed(lease: LeaseRow): Promise<RevokeOutcome> {
    return (await this.revokeClaimedMany([lease])).get(lease.id)!;
  }

  async revokeClaimedMany(leases: LeaseRow[]): Promise<Map<string, RevokeOutcome>> {
    const byMount = new Map<string, LeaseRow[]>();
    for (const lease of leases) byMount.set(lease.mount, [...(byMount.get(lease.mount) ?? []), lease]);
    const outcomes = new Map<string, RevokeOutcome>();
    await Promise.all(
      [...byMount].map(async ([mountName, group]) => {
        for (let i = 0; i < group.length; i += TARGET_BATCH) {
          const chunk = group.slice(i, i + TARGET_BATCH);
          const errors = await this.revokeOnTarget(mountName, chunk);
          const revoked = chunk.filter((_, j) => errors[j] === null);
          await this.store.markRevoked(revoked.map((l) => l.id));
          const events: (void | Promise<void>)[] = [];
          for (const lease of revoked) {
            outcomes.set(lease.id, { ok: true });
            this.log.info({ lease_id: lease.id, reason: lease.revoke_reason }, 'lease revoked');
            events.push(this.onEvent({ operation: 'revoked', lease_id: lease.id, data: { reason: lease.revoke_reason } }));
          }
          await Promise.all(events);
          for (const [j, lease] of chunk.entries()) {
            const error = errors[j];
            if (error) outcomes.set(lease.id, await this.recordFailure(lease, error));
          }
        }
      }),
    );
    return outcomes;
  }

  private async revokeOnTarget(mountName: string, leases: LeaseRow[]): Promise<(string | null)[]> {
    const mount = this.mounts.get(mountName);
    if (!mount) return leases.map(() => `mount "${mountName}" is not configured on this broker`);
    return mount.target.revokeMany(
      leases.map((l) => ({ handle: l.revoke_handle, expiresAt: l.expires_at })),
      mount.revokeSlots,
    );
  }

  private async recordFailure(lease: LeaseRow, error: string): Promise<RevokeOutcome> {
    const state = await this.store.markRevokeFailed(lease.id, error, {
      maxAttempts: this.policy.max_attempts,
      backoffBaseSeconds: this.policy.backoff_base,
      backoffMaxSeconds: this.policy.backoff_max,
    });
    await this.onEvent({ operation: state === 'irrevocable' ? 'irrevocable' : 'revoke-failed', lease_id: lease.id, error, data: { attempts: lease.attempts + 1 } });
    if (state === 'irrevocable') {
      this.log.error({ lease_id: lease.id, attempts: lease.attempts + 1, err: error }, 'lease is irrevocable: operator action needed');
    } else {
      this.log.warn({ lease_id: lease.id, attempts: lease.attempts + 1, err: error }, 'revocation failed; will retry');
    }
    return { ok: false, error, state };
  }
}
