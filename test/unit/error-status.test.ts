import { describe, expect, it } from 'vitest';
import { errorReply, statusFor } from '../../src/api/error-response.js';
import { AuditUnavailable } from '../../src/audit/auditor.js';
import {
  ConfigError,
  InvalidRequest,
  InvalidToken,
  IssueRevoked,
  LeaseExpired,
  LeaseNotFound,
  PermissionDenied,
  QuotaExceeded,
  RevokeIncomplete,
  StoreUnavailable,
  TargetError,
  TargetTimeout,
  UnknownPath,
  UnknownRole,
  UnsupportedOperation,
} from '../../src/errors.js';

describe('the status an error answers with (and is audited with)', () => {
  it.each([
    [new InvalidRequest('x'), 400],
    [new LeaseExpired('l'), 400],
    [new PermissionDenied(), 403],
    [new UnknownPath('p'), 404],
    [new UnsupportedOperation(), 405],
    [new IssueRevoked('db/creds/r/x'), 409],
    [new QuotaExceeded('q'), 429],
    [new TargetError('m', 'down'), 502],
    [new StoreUnavailable('down'), 503],
    [new AuditUnavailable(), 503],
    [Object.assign(new Error('too big'), { type: 'entity.too.large', status: 413 }), 413],
    [new Error('a bug'), 500],
  ])('%s → %i', (err, status) => {
    expect(statusFor(err)).toBe(status);
  });
});

describe('error codes', () => {
  it('an instance carries its class’s static code, so callers compare err.code === Class.code', () => {
    expect(new LeaseExpired('l').code).toBe(LeaseExpired.code);
    expect(new UnknownRole('r').code).toBe('ERR_UNKNOWN_ROLE');
    expect(new InvalidToken().code).toBe(InvalidToken.code);
    expect(InvalidToken.code).not.toBe(PermissionDenied.code);
    // A subclass without a code of its own answers as its parent does.
    expect(new TargetTimeout('m', 'slow', Promise.resolve()).code).toBe(TargetError.code);
    expect(new AuditUnavailable().code).toBe('ERR_AUDIT_UNAVAILABLE');
  });
});

describe('the body an error answers with', () => {
  it('is Vault’s verbatim message first, then the details', () => {
    expect(errorReply(new InvalidToken(), 'r1')).toEqual({
      status: 403,
      body: { errors: ['permission denied', 'invalid token'] },
      known: true,
    });
    expect(errorReply(new LeaseNotFound('x', 'invalid lease'), 'r1').body).toEqual({ errors: ['invalid lease'] });
  });

  it('of a partial revoke-prefix names each failure, in the errors and in data', () => {
    const reply = errorReply(new RevokeIncomplete(2, [{ leaseId: 'db/creds/r/a', error: 'boom' }]), 'r1');
    expect(reply.status).toBe(502);
    expect(reply.body).toEqual({
      errors: ['failed to revoke 1 of 3 leases; they stay queued for retry', 'db/creds/r/a: boom'],
      data: { revoked: 2, failed: [{ lease_id: 'db/creds/r/a', error: 'boom' }] },
    });
  });

  it('of an internal error (a bug, or a broker error whose status is 500) names only the request id', () => {
    for (const err of [new Error('secret-ish detail'), new ConfigError('audit is not configured')]) {
      expect(errorReply(err, 'req-7')).toEqual({
        status: 500,
        body: { errors: ['internal error; request id req-7'] },
        known: false,
      });
    }
  });

  it('of a NUL the store refused is a 400, whatever wrapped it', () => {
    const pgError = Object.assign(new Error('unsupported Unicode escape sequence'), { code: '22P05' });
    expect(errorReply(new Error('wrapped', { cause: pgError }), 'r').status).toBe(400);
  });
});
