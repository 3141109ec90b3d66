import type { Logger } from 'pino';
import type { ReaperConfig } from '../config/schema.js';
import type { BrokerMetrics } from '../metrics/broker-metrics.js';
import type { MountRegistry } from '../mounts.js';
import { Batcher } from '../store/batcher.js';
import { ClaimHeartbeat } from './claim-heartbeat.js';
import type { RevokeResultListener } from './guarded-target.js';
import type { LeaseRow, LeaseState } from './lease-row.js';
import type { LeaseStore } from './lease-store.js';
import { markRevoked, markRevokeFailed } from './sql/revoke-outcome.js';

export type RevokeOutcome = { ok: true } | { ok: false; error: string; state: LeaseState | null };

/** Most handles sent to a target in one revokeMany call. */
const TARGET_BATCH = 256;

/**
 * Revokes leases already claimed (state 'revoking') on their targets, within each mount's
 * concurrency bound, and records each outcome as soon as the engine reports it: revoked (marks of
 * results arriving together share one UPDATE), or retried later with backoff, or irrevocable
 * after the last attempt. Claims are renewed by a heartbeat until their outcome is recorded, so a
 * process that dies mid-batch leaves only short claims behind. Used by the reaper and by operator
 * revokes alike.
 */
export class Revoker {
  private readonly heartbeat: ClaimHeartbeat;
  private readonly revokedMarks: Batcher<string, undefined>;

  constructor(
    private readonly store: LeaseStore,
    private readonly mounts: MountRegistry,
    private readonly policy: ReaperConfig,
    private readonly log: Logger,
    /**
     * Engine-level events for the audit log: revoked, revoke failed (will retry), irrevocable.
     * Awaited: a revocation is reported done only once its event is recorded (or has failed to be).
     */
    private readonly onEvent: (event: {
      operation: string;
      lease_id: string;
      error?: string;
      data?: Record<string, unknown>;
    }) => void | Promise<void> = () => undefined,
    private readonly metrics?: BrokerMetrics,
  ) {
    this.heartbeat = new ClaimHeartbeat(store.pool, policy.claim_ttl, log);
    this.revokedMarks = new Batcher(async (ids: string[]) => {
      await markRevoked(this.store.pool, ids);
      return ids.map(() => undefined);
    });
  }

  /**
   * Audit events for leases revoked without a revocation of their own (a whole role cut at its
   * target at once): each still gets its 'revoked' event, as if revoked one by one.
   */
  async announceRevoked(ids: string[], reason: string): Promise<void> {
    await Promise.all(
      ids.map((id) =>
        this.onEvent({ operation: 'revoked', lease_id: id, data: { reason, via: 'role cut-off at the target' } }),
      ),
    );
  }

  async revokeClaimed(lease: LeaseRow): Promise<RevokeOutcome> {
    return (await this.revokeClaimedMany([lease])).get(lease.id)!;
  }

  async revokeClaimedMany(leases: LeaseRow[]): Promise<Map<string, RevokeOutcome>> {
    const byMount = new Map<string, LeaseRow[]>();
    for (const lease of leases) byMount.set(lease.mount, [...(byMount.get(lease.mount) ?? []), lease]);
    const outcomes = new Map<string, RevokeOutcome>();
    const recordings: Promise<void>[] = [];
    const unreleased = new Set(leases.map((l) => l.id));
    const release = (id: string) => {
      if (unreleased.delete(id)) this.heartbeat.release(id);
    };
    this.heartbeat.hold(unreleased);
    const onTargets = Promise.all(
      [...byMount].map(async ([mountName, group]) => {
        for (let i = 0; i < group.length; i += TARGET_BATCH) {
          const chunk = group.slice(i, i + TARGET_BATCH);
          await this.revokeOnTarget(mountName, chunk, (j, error, credentialDisabled) => {
            const lease = chunk[j]!;
            recordings.push(
              this.record(lease, error, credentialDisabled)
                .then((outcome) => void outcomes.set(lease.id, outcome))
                .finally(() => release(lease.id)),
            );
          });
        }
      }),
    ).then(
      () => null,
      (err: unknown) => ({ err }),
    );
    const targetFailure = await onTargets;
    // Every outcome reported is recorded (or failed to be) before anything is thrown.
    const settled = await Promise.allSettled(recordings);
    for (const id of [...unreleased]) release(id);
    const failed = settled.find((s) => s.status === 'rejected');
    // The store could not take an outcome: the claim lapses and the lease is revoked again.
    if (failed) throw failed.reason;
    if (targetFailure) throw targetFailure.err;
    return outcomes;
  }

  private revokeOnTarget(mountName: string, leases: LeaseRow[], onResult: RevokeResultListener): Promise<unknown> {
    const mount = this.mounts.get(mountName);
    if (!mount) {
      leases.forEach((_, j) => onResult(j, `mount "${mountName}" is not configured on this broker`, false));
      return Promise.resolve();
    }
    return mount.target.revokeMany(
      leases.map((l) => ({ handle: l.revoke_handle, expiresAt: l.expires_at })),
      mount.revokeSlots,
      onResult,
    );
  }

  private async record(lease: LeaseRow, error: string | null, credentialDisabled: boolean): Promise<RevokeOutcome> {
    if (error !== null) return this.recordFailure(lease, error, credentialDisabled);
    // The event before the mark: a process killed between the two leaves the lease revoking, so it
    // is revoked (and audited) again; the other order lost the event of a revocation for good.
    await this.onEvent({ operation: 'revoked', lease_id: lease.id, data: { reason: lease.revoke_reason } });
    await this.revokedMarks.run(lease.id);
    if (lease.revoke_reason === 'expired') this.metrics?.expiredLeaseRevoked(lease.mount, lease.expires_at);
    this.log.info({ lease_id: lease.id, reason: lease.revoke_reason }, 'lease revoked');
    return { ok: true };
  }

  private async recordFailure(lease: LeaseRow, error: string, credentialDisabled: boolean): Promise<RevokeOutcome> {
    const policy = {
      maxAttempts: this.policy.max_attempts,
      backoffBaseSeconds: this.policy.backoff_base,
      backoffMaxSeconds: this.policy.backoff_max,
    };
    const state = await markRevokeFailed(this.store.pool, lease.id, error, policy, credentialDisabled);
    this.metrics?.revocationFailed(lease.mount, state === 'irrevocable');
    await this.onEvent({
      operation: state === 'irrevocable' ? 'irrevocable' : 'revoke-failed',
      lease_id: lease.id,
      error,
      data: { attempts: lease.attempts + 1, credential_disabled: credentialDisabled },
    });
    if (state === 'irrevocable') {
      this.log.error(
        { lease_id: lease.id, attempts: lease.attempts + 1, err: error },
        'lease is irrevocable: operator action needed',
      );
    } else {
      this.log.warn({ lease_id: lease.id, attempts: lease.attempts + 1, err: error }, 'revocation failed; will retry');
    }
    return { ok: false, error, state };
  }
}
