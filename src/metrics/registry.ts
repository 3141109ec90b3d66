import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Seconds buckets for an API operation that crosses the store and a target. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds from a lease's expiry to its revocation: one reaper tick is ~10 s, a backlog is minutes. */
const LAG_BUCKETS = [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
const BATCH_BUCKETS = [0, 1, 5, 10, 25, 50, 100, 250, 500, 1000];
const SINK_BUCKETS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];

/**
 * Every metric a broker exports, defined here and nowhere else, in a registry of its own (not
 * prom-client's global one: one process may run several brokers). The gauges that read state
 * (leases by state, target pools) are collected at scrape time by collectors.ts.
 */
export function defineMetrics(registry: Registry) {
  const registers = [registry];
  return {
    leaseOperations: new Counter({
      name: 'credbroker_lease_operations_total',
      help: 'Lease operations answered, by operation (issue, renew, revoke), mount and outcome (ok or an error code)',
      labelNames: ['operation', 'mount', 'outcome'] as const,
      registers,
    }),
    leaseOperationSeconds: new Histogram({
      name: 'credbroker_lease_operation_duration_seconds',
      help: 'Time to answer a lease operation, by operation, mount and outcome',
      labelNames: ['operation', 'mount', 'outcome'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    reaperBatchSize: new Histogram({
      name: 'credbroker_reaper_batch_size',
      help: 'Leases claimed by one reaper batch',
      buckets: BATCH_BUCKETS,
      registers,
    }),
    reaperLagSeconds: new Histogram({
      name: 'credbroker_reaper_lag_seconds',
      help: 'Seconds between an expired lease’s expires_at and its revocation, by mount',
      labelNames: ['mount'] as const,
      buckets: LAG_BUCKETS,
      registers,
    }),
    revocationFailures: new Counter({
      name: 'credbroker_revocation_failures_total',
      help: 'Failed revocation attempts, by mount and result (retry: queued with backoff; irrevocable: given up)',
      labelNames: ['mount', 'result'] as const,
      registers,
    }),
    leases: new Gauge({
      name: 'credbroker_leases',
      help: 'Leases not yet revoked, by mount and state (pending, active, revoking, irrevocable), from the store',
      labelNames: ['mount', 'state'] as const,
      registers,
    }),
    irrevocableLeases: new Gauge({
      name: 'credbroker_irrevocable_leases',
      help: 'Leases whose revocation failed for good, by mount: operator action needed',
      labelNames: ['mount'] as const,
      registers,
    }),
    targetPoolConnections: new Gauge({
      name: 'credbroker_target_pool_connections',
      help: 'Connections of each mount’s target pool in this process, by state (in_use, idle)',
      labelNames: ['mount', 'state'] as const,
      registers,
    }),
    reaperPaused: new Gauge({
      name: 'credbroker_reaper_paused',
      help: 'Whether the reaper is paused on every replica (1: expiries and crashed issues queue), from the store',
      registers,
    }),
    targetPoolWaiting: new Gauge({
      name: 'credbroker_target_pool_waiting',
      help: 'Requests queued for a connection of the mount’s target pool in this process',
      labelNames: ['mount'] as const,
      registers,
    }),
    auditSinkFailures: new Counter({
      name: 'credbroker_audit_sink_failures_total',
      help: 'Audit records a sink failed to write (or did not answer in time), by sink',
      labelNames: ['sink'] as const,
      registers,
    }),
    auditSinkSeconds: new Histogram({
      name: 'credbroker_audit_sink_write_duration_seconds',
      help: 'Time a sink took to accept or refuse one audit record, by sink',
      labelNames: ['sink'] as const,
      buckets: SINK_BUCKETS,
      registers,
    }),
    logins: new Counter({
      name: 'credbroker_logins_total',
      help: 'Logins, by auth mount, outcome (ok, failed) and reason (an error code; "ok" on success)',
      labelNames: ['auth_mount', 'outcome', 'reason'] as const,
      registers,
    }),
    policyDenials: new Counter({
      name: 'credbroker_policy_denials_total',
      help: 'Requests answered 403, by identity (auth_mount/name; the first 100 seen, then "_other")',
      labelNames: ['identity'] as const,
      registers,
    }),
    alerts: new Counter({
      name: 'credbroker_alerts_total',
      help: 'Alerts raised on the audit stream, by detector and severity',
      labelNames: ['detector', 'severity'] as const,
      registers,
    }),
    sweepOrphans: new Gauge({
      name: 'credbroker_sweep_orphans',
      help: "Objects on the mount's target that no live lease owns, past the grace, at this replica's last sweep",
      labelNames: ['mount'] as const,
      registers,
    }),
    sweepDropped: new Counter({
      name: 'credbroker_sweep_dropped_total',
      help: 'Orphaned objects the sweep revoked through the engine',
      labelNames: ['mount'] as const,
      registers,
    }),
    revokeJobLeases: new Counter({
      name: 'credbroker_revoke_job_leases_total',
      help: 'Leases of incident revocation jobs this process handled, by outcome (revoked, failed)',
      labelNames: ['outcome'] as const,
      registers,
    }),
    revokeJobsRunning: new Gauge({
      name: 'credbroker_revoke_jobs_running',
      help: 'Incident revocation jobs not finished, in the store (every replica reports the same)',
      registers,
    }),
    revokeJobLeasesRemaining: new Gauge({
      name: 'credbroker_revoke_job_leases_remaining',
      help: 'Leases the running incident revocation jobs still have to do, in the store',
      registers,
    }),
  };
}

export type MetricSet = ReturnType<typeof defineMetrics>;

/** Every series name this broker exports: a histogram's as its _bucket, _sum and _count. */
export function exportedSeriesNames(): string[] {
  return Object.values(defineMetrics(new Registry())).flatMap((metric) => {
    const { name } = metric as unknown as { name: string };
    return metric instanceof Histogram ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
  });
}
