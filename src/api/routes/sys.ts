import type { Request } from 'express';
import { healthQuery, parseBody } from '../request-schemas.js';
import type { Handler, Route } from './route.js';

export interface HealthState {
  storeReachable: () => Promise<boolean>;
  version: string;
  clusterName: string;
}

/** Vault's health codes, honouring the query overrides clients send. This broker is always active. */
function healthStatus(
  query: Request['query'],
  storeOk: () => Promise<boolean>,
): Promise<{ status: number; storeOk: boolean }> {
  const { activecode } = parseBody(healthQuery, query); // a bad override is refused before anything is checked
  return storeOk().then((ok) => ({ status: ok ? (activecode ?? 200) : 503, storeOk: ok }));
}

/** Vault's sys/health, public. */
export function sysRoutes(health: HealthState): Route[] {
  const healthCheck: Handler = async ({ req }) => {
    const { status, storeOk } = await healthStatus(req.query, health.storeReachable);
    return {
      status,
      body: {
        initialized: true,
        sealed: false,
        standby: false,
        performance_standby: false,
        replication_performance_mode: 'disabled',
        replication_dr_mode: 'disabled',
        server_time_utc: Math.floor(Date.now() / 1000),
        version: health.version,
        cluster_name: health.clusterName,
        lease_store: storeOk ? 'ok' : 'unreachable',
      },
    };
  };
  // HEAD only where it cannot have a side effect: a HEAD on creds would mint a credential nobody sees.
  return [{ pattern: /^sys\/health$/, public: true, methods: { GET: healthCheck, HEAD: healthCheck } }];
}
