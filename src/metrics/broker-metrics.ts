import { Gauge, Registry } from 'prom-client';
import type { Identity } from '../auth/identity.js';
import { BrokerError } from '../errors.js';
import { runningJobCounts } from '../jobs/job-store.js';
import { isReaperPaused } from '../leases/reaper-pause.js';
import type { MountRegistry } from '../mounts.js';
import type { StoreDb } from '../store/query.js';
import { collectTargetPools, LeaseGaugeCollector } from './collectors.js';
import { defineMetrics, type MetricSet } from './registry.js';

export type LeaseOperation = 'issue' | 'renew' | 'revoke';

/** Distinct identities the denial counter names; past them every denial counts as "_other". */
const DENIAL_IDENTITIES = 100;
const UNKNOWN = '_unknown';

/** The outcome label of a failure: a BrokerError's stable code (a closed set), never its message. */
export const outcomeOf = (err: unknown): string => (err instanceof BrokerError ? err.code : 'ERR_INTERNAL');

/**
 * One broker's metrics: what the hot path calls (counter increments and histogram observations,
 * nothing else) and what a scrape renders. Label values a caller chooses (a mount in a request
 * path, an identity) are bounded here, so no request can grow the series without limit.
 */
export class BrokerMetrics {
  readonly registry = new Registry();
  readonly set: MetricSet = defineMetrics(this.registry);
  private readonly deniedIdentities = new Set<string>();
  private readonly leaseGauges: LeaseGaugeCollector | undefined;

  constructor(private readonly sources: { store?: StoreDb; mounts?: MountRegistry; authMounts?: string[] } = {}) {
    if (sources.store && sources.mounts) this.leaseGauges = new LeaseGaugeCollector(sources.store, sources.mounts);
  }

  /** A configured mount's name, or "_unknown" for a name only a request said. */
  private mountLabel(mount: string): string {
    return !this.sources.mounts || this.sources.mounts.get(mount) ? mount : UNKNOWN;
  }

  /** Times `work` and counts it by outcome. */
  async timeLeaseOperation<T>(operation: LeaseOperation, mount: string, work: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let outcome = 'ok';
    try {
      return await work();
    } catch (err) {
      outcome = outcomeOf(err);
      throw err;
    } finally {
      const labels = { operation, mount: this.mountLabel(mount), outcome };
      this.set.leaseOperations.inc(labels);
      this.set.leaseOperationSeconds.observe(labels, (performance.now() - started) / 1000);
    }
  }

  reaperBatch(claimed: number): void {
    this.set.reaperBatchSize.observe(claimed);
  }

  /** An expired lease revoked: how late after its expiry. */
  expiredLeaseRevoked(mount: string, expiresAt: Date, now = Date.now()): void {
    this.set.reaperLagSeconds.observe(
      { mount: this.mountLabel(mount) },
      Math.max(0, (now - expiresAt.getTime()) / 1000),
    );
  }

  revocationFailed(mount: string, irrevocable: boolean): void {
    this.set.revocationFailures.inc({ mount: this.mountLabel(mount), result: irrevocable ? 'irrevocable' : 'retry' });
  }

  auditSinkWrite(sink: string, seconds: number, ok: boolean): void {
    this.set.auditSinkSeconds.observe({ sink }, seconds);
    if (!ok) this.set.auditSinkFailures.inc({ sink });
  }

  login(authMount: string, err?: unknown): void {
    const known = !this.sources.authMounts || this.sources.authMounts.includes(authMount);
    this.set.logins.inc({
      auth_mount: known ? authMount : UNKNOWN,
      outcome: err === undefined ? 'ok' : 'failed',
      reason: err === undefined ? 'ok' : outcomeOf(err),
    });
  }

  /** A 403; `identity` undefined: no valid token was presented. */
  denied(identity: Identity | undefined): void {
    let label = identity ? (identity.root ? 'root' : `${identity.authMount}/${identity.name}`) : '_anonymous';
    if (!this.deniedIdentities.has(label)) {
      if (this.deniedIdentities.size < DENIAL_IDENTITIES) this.deniedIdentities.add(label);
      else label = '_other';
    }
    this.set.policyDenials.inc({ identity: label });
  }

  /** Outcomes a revoke job of this process just recorded. */
  revokeJobOutcomes(revoked: number, failed: number): void {
    if (revoked) this.set.revokeJobLeases.inc({ outcome: 'revoked' }, revoked);
    if (failed) this.set.revokeJobLeases.inc({ outcome: 'failed' }, failed);
  }

  /** The Prometheus text exposition, gauges read now (the store's counts at most ~10 s old). */
  async render(): Promise<string> {
    if (this.leaseGauges) await this.leaseGauges.collect(this.set);
    if (this.sources.store) {
      this.set.reaperPaused.set((await isReaperPaused(this.sources.store)) ? 1 : 0);
      const jobs = await runningJobCounts(this.sources.store);
      this.set.revokeJobsRunning.set(jobs.running);
      this.set.revokeJobLeasesRemaining.set(jobs.remaining);
    }
    if (this.sources.mounts) collectTargetPools(this.set, this.sources.mounts);
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** An alert let out by the alert engine (after deduplication); both labels are closed sets. */
  alertRaised(detector: string, severity: string): void {
    this.set.alerts.inc({ detector, severity });
  }

  sweepFound(mount: string, count: number): void {
    this.set.sweepOrphans.set({ mount: this.mountLabel(mount) }, count);
  }

  sweepDropped(mount: string): void {
    this.set.sweepDropped.inc({ mount: this.mountLabel(mount) });
  }

  private auditBuffers: Gauge<'sink'> | undefined;
  private readAuditBuffers: () => { sink: string; records: number }[] = () => [];

  /** A gauge of the records each streaming audit sink holds not yet accepted, read at each scrape. */
  watchAuditBuffers(read: () => { sink: string; records: number }[]): void {
    this.readAuditBuffers = read;
    const depths = () => this.readAuditBuffers();
    this.auditBuffers ??= new Gauge({
      name: 'credbroker_audit_sink_buffered_records',
      help: 'Audit records a streaming sink (syslog, webhook) holds that its receiver has not accepted yet, by sink',
      labelNames: ['sink'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { sink, records } of depths()) this.set({ sink }, records);
      },
    });
  }
}
