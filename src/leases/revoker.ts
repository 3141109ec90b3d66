import type { Logger } from 'pino';
import type { ReaperConfig } from '../config/schema.js';
import { messageOf } from '../errors.js';
import type { MountRegistry } from '../mounts.js';
import { sanitizeError } from './guarded-target.js';
import type { LeaseRow, LeaseState, LeaseStore } from './lease-store.js';

export type RevokeOutcome = { ok: true } | { ok: false; error: string; state: LeaseState | null };

/**
 * Revokes one lease already claimed (state 'revoking') on its target, within the mount's
 * concurrency bound, and records the outcome: revoked, or retried later with backoff, or
 * irrevocable after the last attempt. Used by the reaper and by operator revokes alike.
 */
export class Revoker {
  constructor(
    private readonly store: LeaseStore,
    private readonly mounts: MountRegistry,
    private readonly policy: ReaperConfig,
    private readonly log: Logger,
  ) {}

  async revokeClaimed(lease: LeaseRow): Promise<RevokeOutcome> {
    const mount = this.mounts.get(lease.mount);
    try {
      if (!mount) throw new Error(`mount "${lease.mount}" is not configured on this broker`);
      await mount.revokeSlots.run(() => mount.target.revoke({ handle: lease.revoke_handle }));
    } catch (err) {
      return this.recordFailure(lease, sanitizeError(messageOf(err)));
    }
    await this.store.markRevoked(lease.id);
    this.log.info({ lease_id: lease.id, reason: lease.revoke_reason }, 'lease revoked');
    return { ok: true };
  }

  private async recordFailure(lease: LeaseRow, error: string): Promise<RevokeOutcome> {
    const state = await this.store.markRevokeFailed(lease.id, error, {
      maxAttempts: this.policy.max_attempts,
      backoffBaseSeconds: this.policy.backoff_base,
      backoffMaxSeconds: this.policy.backoff_max,
    });
    if (state === 'irrevocable') {
      this.log.error({ lease_id: lease.id, attempts: lease.attempts + 1, err: error }, 'lease is irrevocable: operator action needed');
    } else {
      this.log.warn({ lease_id: lease.id, attempts: lease.attempts + 1, err: error }, 'revocation failed; will retry');
    }
    return { ok: false, error, state };
  }
}
