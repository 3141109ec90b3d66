import type { Logger } from 'pino';
import type { ReaperConfig } from '../config/schema.js';
import type { MountRegistry } from '../mounts.js';
import type { LeaseStore } from './lease-store.js';
import type { Revoker } from './revoker.js';

/** What the lifecycle operations (issue, renew, revoke) work with. */
export interface LeaseDeps {
  store: LeaseStore;
  mounts: MountRegistry;
  revoker: Revoker;
  policy: ReaperConfig;
  log: Logger;
  /** The bound on one engine call (config engine_timeout): how long a revoke waits for another process's. */
  engineTimeoutSeconds: number;
}

/** How long a revoke waits for another process's revocation of the same lease before taking it over. */
export function waitForOthersMs(deps: LeaseDeps): number {
  return (deps.engineTimeoutSeconds + deps.policy.claim_ttl) * 1000;
}
