import type { HandleFacts } from '../engines.js';
import type { FoundLease, LeaseState, RevokeReason } from './lease-row.js';
import { wholeSeconds } from './ttl.js';

/**
 * A lease as the API may show it: no revoke handle, no claim bookkeeping. What the routes and
 * authorization work with, instead of the table's row.
 */
export interface LeaseView {
  id: string;
  mount: string;
  role: string;
  state: LeaseState;
  requester: string | null;
  /** Who holds it: the identity that asked for it. */
  owner: { name: string; authMount: string } | null;
  issuedAt: Date;
  expiresAt: Date;
  maxExpiresAt: Date;
  lastRenewal: Date | null;
  renewable: boolean;
  /** Whole seconds until expiresAt when it was read, by the store's clock. */
  secondsLeft: number;
  attempts: number;
  lastError: string | null;
  revokedAt: Date | null;
  revokeReason: RevokeReason | null;
  /** A revocation disabled the credential (no login, no session) but its cleanup is pending. */
  credentialDisabled: boolean;
  /** What the engine says about ending the credential (an STS session cannot be ended early). */
  facts: HandleFacts;
}

export function toLeaseView(row: FoundLease, facts: HandleFacts): LeaseView {
  return {
    id: row.id,
    mount: row.mount,
    role: row.role,
    state: row.state,
    requester: row.requester,
    owner: row.identity ? { name: row.identity.name, authMount: row.identity.auth_mount } : null,
    issuedAt: row.issued_at,
    expiresAt: row.expires_at,
    maxExpiresAt: row.max_expires_at,
    lastRenewal: row.last_renewal,
    renewable: row.renewable,
    secondsLeft: wholeSeconds(row.seconds_left),
    attempts: row.attempts,
    lastError: row.last_error,
    revokedAt: row.revoked_at,
    revokeReason: row.revoke_reason,
    credentialDisabled: row.state !== 'revoked' && row.credential_disabled_at !== null,
    facts,
  };
}
