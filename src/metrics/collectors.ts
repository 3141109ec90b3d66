import type { StoreDb } from '../store/query.js';
import { liveLeaseCounts, type LiveLeaseCount } from '../leases/sql/live-lease-counts.js';
import type { MountRegistry } from '../mounts.js';
import type { MetricSet } from './registry.js';

const LIVE_STATES = ['pending', 'active', 'revoking', 'irrevocable'];

/**
 * The lease gauges, read from the store at scrape time and cached for `ttlMs`: scrapes from
 * several Prometheus servers (or a fast scrape interval) cost one query per interval, and no
 * request ever waits on it.
 */
export class LeaseGaugeCollector {
  private cached: { at: number; rows: Promise<LiveLeaseCount[]> } | undefined;

  constructor(
    private readonly db: StoreDb,
    private readonly mounts: MountRegistry,
    private readonly ttlMs = 10_000,
  ) {}

  async collect(metrics: MetricSet, now = Date.now()): Promise<void> {
    if (!this.cached || now - this.cached.at >= this.ttlMs) {
      const rows = liveLeaseCounts(this.db);
      this.cached = { at: now, rows };
      // A failed read is not cached: the next scrape asks again.
      rows.catch(() => {
        if (this.cached?.rows === rows) this.cached = undefined;
      });
    }
    const rows = await this.cached.rows;
    metrics.leases.reset();
    metrics.irrevocableLeases.reset();
    // Every configured mount shows every state, so a count that drops to zero reads 0, not absent.
    for (const mount of this.mounts.names()) {
      for (const state of LIVE_STATES) metrics.leases.set({ mount, state }, 0);
      metrics.irrevocableLeases.set({ mount }, 0);
    }
    for (const row of rows) {
      metrics.leases.set({ mount: row.mount, state: row.state }, row.n);
      if (row.state === 'irrevocable') metrics.irrevocableLeases.set({ mount: row.mount }, row.n);
    }
  }
}

/** Each mount's target pool in this process, as its engine reports it (engines without a pool report nothing). */
export function collectTargetPools(metrics: MetricSet, mounts: MountRegistry): void {
  metrics.targetPoolConnections.reset();
  metrics.targetPoolWaiting.reset();
  for (const mount of mounts.all()) {
    const pool = mount.target.connectionPool();
    if (!pool) continue;
    metrics.targetPoolConnections.set({ mount: mount.name, state: 'in_use' }, pool.total - pool.idle);
    metrics.targetPoolConnections.set({ mount: mount.name, state: 'idle' }, pool.idle);
    metrics.targetPoolWaiting.set({ mount: mount.name }, pool.waiting);
  }
}
