import { describe, expect, it } from 'vitest';
import { statusFor } from '../../src/api/error-response.js';
import { IdempotentLeaseExists } from '../../src/errors.js';
import { idempotencyScope } from '../../src/leases/idempotent-insert.js';

const alice = { name: 'system:serviceaccount:etl:alice', authMount: 'kubernetes' };

describe('the scope of an idempotency key', () => {
  it('is one fixed-width hash, the same for the same identity, path and key', () => {
    const scope = idempotencyScope(alice, 'db/creds/reader', 'pod-1:etl');
    expect(scope).toMatch(/^[0-9a-f]{64}$/);
    expect(idempotencyScope({ ...alice }, 'db/creds/reader', 'pod-1:etl')).toBe(scope);
  });

  it('differs when any part differs, with no way to shift characters from one part into the next', () => {
    const scopes = [
      idempotencyScope(alice, 'db/creds/reader', 'pod-1:etl'),
      idempotencyScope(alice, 'db/creds/reader', 'pod-2:etl'),
      idempotencyScope({ ...alice, name: 'system:serviceaccount:etl:bob' }, 'db/creds/reader', 'pod-1:etl'),
      idempotencyScope({ ...alice, authMount: 'jwt' }, 'db/creds/reader', 'pod-1:etl'),
      idempotencyScope(alice, 'db/creds/reader2', 'pod-1:etl'),
      idempotencyScope(alice, 'aws/sts/reader', 'pod-1:etl'),
      // Boundaries moved between the parts: a concatenation would make these collide.
      idempotencyScope(alice, 'db/creds/reader/', 'pod-1:etl'),
      idempotencyScope(alice, 'db/creds/reade', 'rpod-1:etl'),
      idempotencyScope({ name: 'kubernetes', authMount: alice.name }, 'db/creds/reader', 'pod-1:etl'),
      idempotencyScope({ name: 'a","b', authMount: 'c' }, 'p', 'k'),
      idempotencyScope({ name: 'a', authMount: 'b","c' }, 'p', 'k'),
    ];
    expect(new Set(scopes).size).toBe(scopes.length);
  });
});

describe('a key in use', () => {
  it('answers 409 naming the lease, and says whether it is still being issued', () => {
    const active = new IdempotentLeaseExists('db/creds/reader/abc', 'active');
    expect(statusFor(active)).toBe(409);
    expect(active.code).toBe(IdempotentLeaseExists.code);
    expect(active.message).toContain('db/creds/reader/abc');
    expect(new IdempotentLeaseExists('db/creds/reader/abc', 'pending').message).toContain('still being issued');
  });
});
