import { describe, expect, it } from 'vitest';
import { statusFor } from '../../src/api/error-response.js';
import { AuditUnavailable } from '../../src/audit/auditor.js';
import { InvalidRequest, IssueRevoked, LeaseExpired, PermissionDenied, QuotaExceeded, StoreUnavailable, TargetError, UnknownPath, UnsupportedOperation } from '../../src/errors.js';

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
