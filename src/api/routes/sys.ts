import type { Request } from 'express';
import { stableUuid } from '../../mount-description.js';
import { healthQuery, parseBody } from '../request-schemas.js';
import type { Handler, Route } from './route.js';

export interface HealthState {
  storeReachable: () => Promise<boolean>;
  version: string;
  clusterName: string;
  /** Whether the reaper is paused on every replica (sys/broker/reaper/pause). */
  reaperPaused: () => Promise<boolean>;
}

/** Vault's health codes, honouring the query overrides clients send. This broker is always active. */
function healthStatus(
  query: Request['query'],
  storeOk: () => Promise<boolean>,
): Promise<{ status: number; storeOk: boolean }> {
  const { activecode } = parseBody(healthQuery, query); // a bad override is refused before anything is checked
  return storeOk().then((ok) => ({ status: ok ? (activecode ?? 200) : 503, storeOk: ok }));
}

/**
 * Vault's answers for a server that is initialized and unsealed, as every replica always is: no
 * key shares exist, and t = n = 1 keeps clients that check the numbers (node-vault's status()
 * schema, `vault status`) satisfied. Public, as in Vault: probes call it without a token.
 */
function sealStatus(health: HealthState) {
  return {
    type: 'shamir',
    initialized: true,
    sealed: false,
    t: 1,
    n: 1,
    progress: 0,
    nonce: '',
    version: health.version,
    build_date: '',
    migration: false,
    cluster_name: health.clusterName,
    cluster_id: stableUuid(`cluster:${health.clusterName}`),
    recovery_seal: false,
    storage_type: 'postgresql',
    removed_from_cluster: false,
  };
}

/**
 * What a Vault server without HA answers: replicas are all active and elect no leader, so
 * `ha_enabled: false` keeps clients on their single-server path; none of them looks for a
 * leader to forward to (an empty leader_address with HA on would send them looking).
 */
const LEADER = {
  ha_enabled: false,
  is_self: false,
  active_time: '0001-01-01T00:00:00Z',
  leader_address: '',
  leader_cluster_address: '',
  performance_standby: false,
  performance_standby_last_remote_wal: 0,
  last_wal: 0,
  raft_committed_index: 0,
  raft_applied_index: 0,
};

/** Vault's sys/health, sys/seal-status and sys/leader, public. */
export function sysRoutes(health: HealthState): Route[] {
  const healthCheck: Handler = async ({ req }) => {
    const { status, storeOk } = await healthStatus(req.query, health.storeReachable);
    // Unknown when the store is down: the switch lives there, and health must answer without it.
    const reaper = storeOk
      ? await health.reaperPaused().then(
          (p) => (p ? 'paused' : 'running'),
          () => 'unknown',
        )
      : 'unknown';
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
        reaper,
      },
    };
  };
  // HEAD only where it cannot have a side effect: a HEAD on creds would mint a credential nobody sees.
  return [
    { pattern: /^sys\/health$/, public: true, methods: { GET: healthCheck, HEAD: healthCheck } },
    {
      pattern: /^sys\/seal-status$/,
      public: true,
      methods: { GET: async () => ({ status: 200, body: sealStatus(health) }) },
    },
    {
      pattern: /^sys\/leader$/,
      public: true,
      methods: { GET: async () => ({ status: 200, body: LEADER }) },
    },
  ];
}
