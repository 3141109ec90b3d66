/**
 * Every code a BrokerError may carry: a closed union, so the status table in
 * src/api/error-response.ts (a `Record<ErrorCode, number>`) fails to compile when a code has no status.
 */
export type ErrorCode =
  | 'ERR_BROKER'
  | 'ERR_INVALID_REQUEST'
  | 'ERR_UNKNOWN_ROLE'
  | 'ERR_UNKNOWN_MOUNT'
  | 'ERR_LEASE_NOT_FOUND'
  | 'ERR_LEASE_EXPIRED'
  | 'ERR_INVALID_WRAPPING_TOKEN'
  | 'ERR_UNKNOWN_PATH'
  | 'ERR_PERMISSION_DENIED'
  | 'ERR_INVALID_TOKEN'
  | 'ERR_CERTIFICATE_REFUSED'
  | 'ERR_UNSUPPORTED_OPERATION'
  | 'ERR_TARGET'
  | 'ERR_CREDENTIAL_DISABLED'
  | 'ERR_STORE_UNAVAILABLE'
  | 'ERR_AUDIT_UNAVAILABLE'
  | 'ERR_REVOKE_INCOMPLETE'
  | 'ERR_ISSUE_REVOKED'
  | 'ERR_IDEMPOTENT_LEASE_EXISTS'
  | 'ERR_QUOTA'
  | 'ERR_CONFIG'
  | 'ERR_LISTEN';

/**
 * One error base with a stable `code`, as panva/jose's: each subclass declares `static code`, so
 * callers compare `err.code === LeaseExpired.code`; the instance's `code` is its class's. The API
 * maps codes to HTTP statuses in one table (src/api/error-response.ts). Messages are shown to
 * clients, so they never carry a secret.
 */
export class BrokerError extends Error {
  static readonly code: ErrorCode = 'ERR_BROKER';
  readonly code: ErrorCode;
  /**
   * Answered after the message in `errors`, so the first error stays Vault's verbatim text (which
   * clients match on) and the rest say more, as Vault's own ["permission denied", "invalid token"].
   */
  readonly details: string[] = [];
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = new.target.code;
  }
}

/** The client sent something we cannot act on (Vault answers 400). */
export class InvalidRequest extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_INVALID_REQUEST';
}

export class UnknownRole extends InvalidRequest {
  static override readonly code: ErrorCode = 'ERR_UNKNOWN_ROLE';
  constructor(readonly role: string) {
    super(`unknown role: ${role.length > 100 ? `${role.slice(0, 100)}…` : role}`);
  }
}

/**
 * A prefix names a mount that is not configured (and holds no live lease): a typo must not look
 * like an empty result. `configured` is named only to callers who may see every lease.
 */
export class UnknownMount extends InvalidRequest {
  static override readonly code: ErrorCode = 'ERR_UNKNOWN_MOUNT';
  constructor(
    readonly mount: string,
    readonly configured: string[] | null,
  ) {
    const name = `no mount named "${mount.length > 100 ? `${mount.slice(0, 100)}…` : mount}"`;
    super(configured ? `${name}; configured mounts: ${configured.length ? configured.join(', ') : '(none)'}` : name);
  }
}

/** Vault's texts, kept verbatim because clients match on them. */
export class LeaseNotFound extends InvalidRequest {
  static override readonly code: ErrorCode = 'ERR_LEASE_NOT_FOUND';
  constructor(
    readonly leaseId: string,
    message = 'lease not found',
  ) {
    super(message);
  }
}

export class LeaseExpired extends InvalidRequest {
  static override readonly code: ErrorCode = 'ERR_LEASE_EXPIRED';
  constructor(readonly leaseId: string) {
    super('lease expired');
  }
}

/** A wrapping token unknown, already unwrapped or expired: Vault's text, which clients match on. */
export class InvalidWrappingToken extends InvalidRequest {
  static override readonly code: ErrorCode = 'ERR_INVALID_WRAPPING_TOKEN';
  constructor() {
    super('wrapping token is not valid or does not exist');
  }
}

export class UnknownPath extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_UNKNOWN_PATH';
  override readonly details: string[];
  constructor(
    readonly path: string,
    details: string[] = [],
  ) {
    super(`no handler for route "${path.length > 200 ? `${path.slice(0, 200)}…` : path}". route entry not found.`);
    this.details = details;
  }
}

export class PermissionDenied extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_PERMISSION_DENIED';
  constructor() {
    super('permission denied');
  }
}

/**
 * A token was presented but is unknown, expired or revoked. Vault answers this 403 with two
 * errors, "permission denied" and "invalid token", so a client can tell it from a policy refusal.
 */
export class InvalidToken extends PermissionDenied {
  static override readonly code: ErrorCode = 'ERR_INVALID_TOKEN';
  override readonly details = ['invalid token'];
}

/**
 * A cert login's client certificate is not trusted by the role, is out of its validity, or does
 * not meet the role's constraints. The message (Vault's text, then why) names no secret: a
 * certificate is public. `certificate` says which one, for the broker log.
 */
export class CertificateRefused extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_CERTIFICATE_REFUSED';
  constructor(
    message: string,
    readonly certificate: { serial_number: string; subject: string; issuer: string },
  ) {
    super(message);
  }
}

export class UnsupportedOperation extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_UNSUPPORTED_OPERATION';
  constructor() {
    super('unsupported operation');
  }
}

/** A target (the database we mint roles on, AWS…) failed or timed out. */
export class TargetError extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_TARGET';
  constructor(
    readonly mount: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${mount}: ${message}`, options);
  }
}

/**
 * An engine call gave up waiting. The work itself may still be running on the target: `settled`
 * resolves once it has finished either way, and only then is it safe to clean up after it.
 */
export class TargetTimeout extends TargetError {
  constructor(
    mount: string,
    message: string,
    readonly settled: Promise<void>,
  ) {
    super(mount, message);
  }
}

/**
 * Thrown by an engine's revoke when the credential's power is gone (it cannot authenticate, no
 * session of it remains) but cleaning up after it failed. The lease stays queued for the cleanup;
 * lookup tells the operator the credential is disabled meanwhile.
 */
export class CredentialDisabled extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_CREDENTIAL_DISABLED';
}

/** The lease store is unreachable or failed. */
export class StoreUnavailable extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_STORE_UNAVAILABLE';
}

/** Some leases of a prefix could not be revoked; the rest were. */
export class RevokeIncomplete extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_REVOKE_INCOMPLETE';
  constructor(
    readonly revoked: number,
    readonly failures: { leaseId: string; error: string }[],
  ) {
    super(`failed to revoke ${failures.length} of ${revoked + failures.length} leases; they stay queued for retry`);
  }
}

/**
 * A revoke (of the lease, its prefix or its token) reached the lease while it was being issued:
 * the credential was taken back and is not handed out. Nothing failed; asking again issues a new
 * one. 409, as Vault answers a request a concurrent change overtook (KV's check-and-set).
 */
export class IssueRevoked extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_ISSUE_REVOKED';
  constructor(readonly leaseId: string) {
    super(`lease ${leaseId} was revoked while it was being issued; the credential was taken back`);
  }
}

/**
 * A creds request's idempotency key already names a live lease of the same identity and path:
 * that lease is the answer, not a new credential. Its secret was returned once, to the request
 * that created it, and is not stored; the caller adopts the lease (lookup, renew) or revokes it
 * and asks again. `state` is `pending` when the first request was still issuing after the wait.
 * 409, as IssueRevoked: a concurrent request overtook this one.
 */
export class IdempotentLeaseExists extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_IDEMPOTENT_LEASE_EXISTS';
  constructor(
    readonly leaseId: string,
    readonly state: 'pending' | 'active',
  ) {
    super(
      state === 'active'
        ? `lease ${leaseId} was already issued for this idempotency key; its credential was returned only to the request that created it: look the lease up or renew it, or revoke it and ask again`
        : `lease ${leaseId} is still being issued for this idempotency key; ask again shortly`,
    );
  }
}

/** A quota counted in the store is reached (Vault answers 429). */
export class QuotaExceeded extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_QUOTA';
}

export class ConfigError extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_CONFIG';
}

/** The HTTP listener could not be opened; `reason` is the socket error code (EADDRINUSE…). */
export class ListenFailed extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_LISTEN';
  constructor(
    readonly address: string,
    readonly port: number,
    readonly reason: string,
  ) {
    super(
      reason === 'EADDRINUSE'
        ? `port ${port} on ${address} is already in use`
        : reason === 'EACCES'
          ? `not allowed to listen on port ${port} on ${address} (ports below 1024 need privileges)`
          : reason === 'EADDRNOTAVAIL'
            ? `cannot listen on ${address}: it is not an address of this machine`
            : `cannot listen on port ${port} on ${address}: ${reason}`,
    );
  }
}

/** The message of anything thrown, without assuming it is an Error. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
