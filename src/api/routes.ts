import type { AuthService } from '../auth/auth-service.js';
import type { LeaseService } from '../leases/lease-service.js';
import type { BrokerMetrics } from '../metrics/broker-metrics.js';
import type pg from 'pg';
import { auditRoutes } from './routes/audit.js';
import { authRoutes } from './routes/auth.js';
import { credsRoutes } from './routes/creds.js';
import { discoveryRoutes, type DiscoveryDeps } from './routes/discovery.js';
import { incidentRoutes, leaseRoutes } from './routes/leases.js';
import { jobRoutes } from './routes/jobs.js';
import type { RevokeJobs } from '../jobs/revoke-jobs.js';
import { metricsRoutes } from './routes/metrics.js';
import type { Route } from './routes/route.js';
import { reaperRoutes } from './routes/reaper.js';
import { sysRoutes, type HealthState } from './routes/sys.js';
import { sweepRoutes } from './routes/sweep.js';
import type { Sweeper } from '../sweep/sweeper.js';
import { wrappingRoutes } from './routes/wrapping.js';
import type { WrappingService } from '../wrapping/wrapping-service.js';
import type { ReaperPauseControl } from '../leases/reaper-pause.js';

export type { Handler, Method, Reply, Route, RouteContext } from './routes/route.js';
export type { HealthState } from './routes/sys.js';
export type { DiscoveryDeps } from './routes/discovery.js';
export { REVOKE_OUTCOME_HEADER, REVOKED_COUNT_HEADER } from './routes/leases.js';

/**
 * Every route, one module per group, in the order they are matched: logins and token
 * self-service, health, sys/wrapping, sys/leases, the sys/broker extensions, discovery
 * (sys/mounts…, and `<mount>/roles`, which no issue path can be: those are `creds` and the
 * engines' own words), then the engines' paths (whose `<mount>/…` patterns come last as the
 * catch-all shape).
 */
export function buildRoutes(deps: {
  leases: LeaseService;
  auth: AuthService;
  health: HealthState;
  discovery: Omit<DiscoveryDeps, 'leases' | 'version'>;
  wrapping: WrappingService;
  reaperPause: ReaperPauseControl;
  jobs: RevokeJobs;
  metrics: BrokerMetrics;
  /** The store holding the postgres audit sink's table; null when that sink is off. */
  auditStore: pg.Pool | null;
  /** The orphan sweep (sys/broker/sweep); absent in an app built without one. */
  sweeper?: Sweeper;
}): Route[] {
  return [
    ...authRoutes(deps.auth, deps.leases),
    ...sysRoutes(deps.health),
    ...metricsRoutes(deps.metrics),
    ...wrappingRoutes(deps.wrapping),
    ...leaseRoutes(deps.leases),
    ...incidentRoutes(deps.leases),
    ...reaperRoutes(deps.reaperPause),
    ...sweepRoutes(deps.sweeper),
    ...jobRoutes(deps.jobs),
    ...auditRoutes(deps.auditStore),
    ...discoveryRoutes({ ...deps.discovery, leases: deps.leases, version: deps.health.version }),
    ...credsRoutes(deps.leases),
  ];
}
