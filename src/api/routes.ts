import type { AuthService } from '../auth/auth-service.js';
import type { LeaseService } from '../leases/lease-service.js';
import { authRoutes } from './routes/auth.js';
import { credsRoutes } from './routes/creds.js';
import { incidentRoutes, leaseRoutes } from './routes/leases.js';
import type { Route } from './routes/route.js';
import { sysRoutes, type HealthState } from './routes/sys.js';
import { wrappingRoutes } from './routes/wrapping.js';
import type { WrappingService } from '../wrapping/wrapping-service.js';

export type { Handler, Method, Reply, Route, RouteContext } from './routes/route.js';
export type { HealthState } from './routes/sys.js';
export { REVOKE_OUTCOME_HEADER, REVOKED_COUNT_HEADER } from './routes/leases.js';

/**
 * Every route, one module per group, in the order they are matched: logins and token
 * self-service, health, sys/wrapping, sys/leases, the sys/broker extensions, then the engines'
 * paths (whose `<mount>/…` patterns would otherwise shadow nothing, but come last as the
 * catch-all shape).
 */
export function buildRoutes(deps: {
  leases: LeaseService;
  auth: AuthService;
  health: HealthState;
  wrapping: WrappingService;
}): Route[] {
  return [
    ...authRoutes(deps.auth, deps.leases),
    ...sysRoutes(deps.health),
    ...wrappingRoutes(deps.wrapping),
    ...leaseRoutes(deps.leases),
    ...incidentRoutes(deps.leases),
    ...credsRoutes(deps.leases),
  ];
}
