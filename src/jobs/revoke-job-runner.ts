import type { Logger } from 'pino';
import { messageOf } from '../errors.js';
import { SingleRun } from '../single-run.js';
import type { LeaseDeps } from '../leases/lease-deps.js';
import { waitForOthersMs } from '../leases/lease-deps.js';
import { cutRolesAtTargets } from '../leases/role-cutoff.js';
import type { RevokeOutcome } from '../leases/revoker.js';
import {
  claimRunningJob,
  extendJobClaim,
  finishJobIfDone,
  jobLeasesToDo,
  recordJobOutcomes,
  releaseJob,
  type JobLeaseOutcome,
  type JobRow,
} from './job-store.js';
import { selectorFromRecord, selectsWholeRoles } from './lease-selector.js';
import { claimJobLeases, markJobRoleRevoked, rolesOfJob, revokedAmong } from './job-leases-sql.js';

/** Leases read, claimed and revoked per step of a job. */
const JOB_PAGE = 500;
/** How long a pass that found every remaining lease claimed elsewhere waits before looking again. */
const RETRY_PASS_MS = 250;

export interface JobEvents {
  /** Progress of a job this process runs: counts just recorded. */
  progress?(job: string, outcomes: JobLeaseOutcome[]): void;
  /** The job finished: for the audit log. */
  finished?(job: JobRow): void | Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs incident revocation jobs (recorded by createRevokeJob), in every replica: at each tick it
 * claims one running job nobody else holds, and revokes its leases page by page through the
 * Revoker (the reaper's path: bounded per mount, backoff and `irrevocable` on failure), never
 * stopping at a failure. Each outcome is recorded with the job's counts in one statement, so a
 * process killed mid-job leaves a job any replica continues where it stopped: leases already
 * revoked are counted, not revoked again.
 */
export class RevokeJobRunner {
  private readonly ticks = new SingleRun();

  constructor(
    private readonly deps: LeaseDeps,
    private readonly log: Logger,
    private readonly events: JobEvents = {},
  ) {}

  /** What the timer calls (and a new job's request, to start at once): never throws, never overlaps. */
  tick(): Promise<void> {
    return this.ticks.run(() =>
      this.runAvailable().catch((err) => this.log.warn({ err: messageOf(err) }, 'revoke job step failed; will retry')),
    );
  }

  stop(): Promise<void> {
    return this.ticks.stop();
  }

  private async runAvailable(): Promise<void> {
    while (!this.ticks.isStopped) {
      const job = await claimRunningJob(this.deps.store.pool, this.deps.store.holder(), this.deps.policy.claim_ttl);
      if (!job) return;
      await this.run(job);
    }
  }

  private async run(job: JobRow): Promise<void> {
    const { pool } = this.deps.store;
    const holder = this.deps.store.holder();
    let lost = false;
    const heartbeat = setInterval(
      () => {
        extendJobClaim(pool, job.id, holder, this.deps.policy.claim_ttl).then(
          (held) => {
            if (!held) lost = true;
          },
          (err) => this.log.warn({ job: job.id, err: messageOf(err) }, 'could not renew the claim on a revoke job'),
        );
      },
      Math.max(200, (this.deps.policy.claim_ttl * 1000) / 3),
    );
    heartbeat.unref();
    try {
      this.log.info({ job: job.id, total: job.total, done: job.revoked + job.failed }, 'revoke job running');
      await this.cutWholeRoles(job);
      const takeOverAt = Date.now() + waitForOthersMs(this.deps);
      for (;;) {
        const left = await this.pass(job, Date.now() >= takeOverAt, () => lost || this.ticks.isStopped);
        if (lost || this.ticks.isStopped) break;
        if (left === 0) {
          const finished = await finishJobIfDone(pool, job.id);
          if (finished) {
            this.log.info(
              { job: job.id, total: finished.total, revoked: finished.revoked, failed: finished.failed },
              'revoke job finished',
            );
            await this.events.finished?.(finished);
          }
          break;
        }
        await sleep(RETRY_PASS_MS);
      }
    } finally {
      clearInterval(heartbeat);
      if (this.ticks.isStopped && !lost) await releaseJob(pool, job.id, holder).catch(() => undefined);
    }
  }

  /**
   * One pass over the job's leases still to do. Leases another process is revoking right now are
   * left to it (unless `takeOver`); answers how many were left so.
   */
  private async pass(job: JobRow, takeOver: boolean, shouldStop: () => boolean): Promise<number> {
    const { pool } = this.deps.store;
    let left = 0;
    for (let after = ''; ;) {
      if (shouldStop()) return left;
      const ids = await jobLeasesToDo(pool, job.id, after, JOB_PAGE);
      if (ids.length === 0) return left;
      after = ids[ids.length - 1]!;
      const claimed = await claimJobLeases(pool, ids, {
        ttlSeconds: this.deps.policy.claim_ttl,
        holder: this.deps.store.holder(),
        takeOver,
      });
      const claimedIds = new Set(claimed.map((l) => l.id));
      const unclaimed = ids.filter((id) => !claimedIds.has(id));
      // Revoked by someone else (the reaper, an earlier run of this job): counted, not revoked again.
      const alreadyRevoked = unclaimed.length ? await revokedAmong(pool, unclaimed) : new Set<string>();
      left += unclaimed.length - alreadyRevoked.size;
      const outcomes: JobLeaseOutcome[] = [...alreadyRevoked].map((leaseId) => ({
        leaseId,
        outcome: 'revoked',
        error: null,
      }));
      if (claimed.length) {
        const results = await this.deps.revoker.revokeClaimedMany(claimed);
        for (const [leaseId, result] of results) outcomes.push(outcomeOf(leaseId, result));
      }
      await recordJobOutcomes(pool, job.id, outcomes);
      this.events.progress?.(job.id, outcomes);
    }
  }

  /**
   * A job that selects whole roles (no identity, token or prefix in its selector) lets a target
   * that can end every credential of a role issued before a time (AWS's aws:TokenIssueTime deny)
   * do so at once; those leases are marked revoked and each still gets its audit event.
   */
  private async cutWholeRoles(job: JobRow): Promise<void> {
    const selector = selectorFromRecord(job.selector);
    if (!selectsWholeRoles(selector)) return;
    const before = selector.issued_before ?? job.created_at;
    const { pool } = this.deps.store;
    // A failed cut must not stop the job: those leases are revoked one by one instead.
    await cutRolesAtTargets(this.deps, await rolesOfJob(pool, job.id), before, {
      markRevoked: (mount, role) => markJobRoleRevoked(pool, job.id, mount, role, before),
      reason: 'revoked',
      log: { job: job.id },
      tolerateFailures: true,
    });
  }
}

function outcomeOf(leaseId: string, result: RevokeOutcome): JobLeaseOutcome {
  return result.ok ? { leaseId, outcome: 'revoked', error: null } : { leaseId, outcome: 'failed', error: result.error };
}
