import type { JsonValue } from '../../engines.js';
import type { LeaseView } from '../../leases/lease-view.js';
import { iso } from './route.js';

/** Vault's lookup data, and the extensions an operator needs during an incident. */
export function lookupData(lease: LeaseView): Record<string, JsonValue> {
  const live = lease.state === 'active';
  return {
    id: lease.id,
    issue_time: iso(lease.issuedAt),
    expire_time: iso(lease.expiresAt),
    last_renewal: iso(lease.lastRenewal),
    renewable: live && lease.renewable,
    ttl: live ? lease.secondsLeft : 0,
    // Extensions: what an operator needs during an incident.
    state: lease.state,
    mount: lease.mount,
    role: lease.role,
    requester: lease.requester,
    max_expire_time: iso(lease.maxExpiresAt),
    revoked_at: iso(lease.revokedAt),
    revoke_reason: lease.revokeReason,
    attempts: lease.attempts,
    last_error: lease.lastError,
    credential_disabled: lease.credentialDisabled,
    revocable_before_expiry: lease.facts.revocableBeforeExpiry,
    ...(lease.facts.note ? { revocation_note: lease.facts.note } : {}),
  };
}

/** One lease of the irrevocable list. */
export function irrevocableData(lease: LeaseView): Record<string, JsonValue> {
  return {
    lease_id: lease.id,
    mount: lease.mount,
    role: lease.role,
    attempts: lease.attempts,
    last_error: lease.lastError,
    expire_time: iso(lease.expiresAt),
    revoke_reason: lease.revokeReason,
  };
}
