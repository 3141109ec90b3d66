import type { RevokeHandle } from '../engines.js';

export type LeaseState = 'pending' | 'active' | 'revoking' | 'revoked' | 'irrevocable';
export type RevokeReason = 'expired' | 'revoked' | 'prefix' | 'forced' | 'cleanup';

/** A row of credbroker_leases, as the lease modules read it. The API sees a LeaseView instead. */
export interface LeaseRow {
  id: string;
  mount: string;
  role: string;
  engine: string;
  state: LeaseState;
  revoke_handle: RevokeHandle;
  requester: string | null;
  issued_at: Date;
  expires_at: Date;
  max_expires_at: Date;
  last_renewal: Date | null;
  renewable: boolean;
  attempts: number;
  next_attempt_at: Date | null;
  last_error: string | null;
  revoked_at: Date | null;
  revoke_reason: RevokeReason | null;
  identity: {
    name: string;
    auth_mount: string;
    metadata?: Record<string, string>;
    accessor?: string;
    root?: boolean;
  } | null;
  token_accessor: string | null;
  /** Set when a revocation disabled the credential but could not finish cleaning up after it. */
  credential_disabled_at: Date | null;
  /** A live claim: until when, and the process lock key of the process holding it (sql/claims.ts). */
  claimed_until: Date | null;
  claimed_by: number | null;
}

/** A row read for a caller, with its time left by the store's clock (the one that set expires_at). */
export interface FoundLease extends LeaseRow {
  /** Seconds until expires_at, by the store's now(); negative once expired. */
  seconds_left: number;
}

/** Step 2 of an issue: the intent, with its TTLs in seconds from the store's now(). */
export interface PendingLease {
  id: string;
  mount: string;
  role: string;
  engine: string;
  handle: RevokeHandle;
  requester: string | null;
  ttlSeconds: number;
  maxTtlSeconds: number;
  pendingGraceSeconds: number;
  renewable: boolean;
  /** Who holds it (see identityRecord) and the token that asked, for ownership, quotas and audit. */
  identity?: Record<string, unknown> | null;
  tokenAccessor?: string | null;
}

export interface Quota {
  perRole?: number;
  perIdentity?: number;
}
