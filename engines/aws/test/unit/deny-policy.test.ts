import { describe, expect, it } from 'vitest';
import {
  INLINE_POLICY_LIMIT,
  LEASE_TAG,
  emptyPolicy,
  isDenied,
  parsePolicy,
  withRevocations,
} from '../../deny-policy.js';
import { randomName } from '../../../../src/engine-kit.js';

const now = new Date('2026-11-23T12:00:00Z');
const inMinutes = (m: number) => new Date(now.getTime() + m * 60_000);
const tokens = (policy: ReturnType<typeof emptyPolicy>) =>
  policy.Statement.flatMap((s) => s.Condition.StringEquals[`aws:PrincipalTag/${LEASE_TAG}`] ?? []);

describe('the deny policy for revoked STS sessions', () => {
  it('denies exactly the revoked session, in one statement per expiry hour', () => {
    const policy = withRevocations(emptyPolicy(), [{ token: 'aaaaaaaaaaaa', expiresAt: inMinutes(30) }], now);
    expect(policy.Statement).toHaveLength(1);
    expect(policy.Statement[0]).toMatchObject({ Effect: 'Deny', Action: '*', Resource: '*' });
    expect(isDenied(policy, 'aaaaaaaaaaaa')).toBe(true);
    expect(isDenied(policy, 'bbbbbbbbbbbb')).toBe(false);
  });

  it('adds nothing when the same session is revoked twice', () => {
    const once = withRevocations(emptyPolicy(), [{ token: 'aaaaaaaaaaaa', expiresAt: inMinutes(30) }], now);
    const twice = withRevocations(once, [{ token: 'aaaaaaaaaaaa', expiresAt: inMinutes(30) }], now);
    expect(JSON.stringify(twice)).toBe(JSON.stringify(once));
  });

  it('needs no entry for a session that has already expired', () => {
    expect(
      withRevocations(emptyPolicy(), [{ token: 'aaaaaaaaaaaa', expiresAt: inMinutes(-1) }], now).Statement,
    ).toHaveLength(0);
  });

  it('prunes the statements whose sessions have all expired', () => {
    const policy = withRevocations(
      emptyPolicy(),
      [
        { token: 'aaaaaaaaaaaa', expiresAt: inMinutes(30) },
        { token: 'bbbbbbbbbbbb', expiresAt: inMinutes(150) },
      ],
      now,
    );
    expect(policy.Statement).toHaveLength(2);
    const later = withRevocations(policy, [], inMinutes(61));
    expect(tokens(later)).toEqual(['bbbbbbbbbbbb']);
  });

  it('keeps statements it did not write', () => {
    const foreign = {
      Version: '2012-10-17',
      Statement: [{ Sid: 'Operators', Effect: 'Deny', Action: 's3:*', Resource: '*', Condition: { StringEquals: {} } }],
    };
    const policy = withRevocations(
      parsePolicy(JSON.stringify(foreign)),
      [{ token: 'aaaaaaaaaaaa', expiresAt: inMinutes(30) }],
      inMinutes(24 * 60),
    );
    expect(policy.Statement.map((s) => s.Sid)).toContain('Operators');
  });

  it("holds 500 sessions revoked before their expiry within IAM's inline policy limit", () => {
    const revocations = Array.from({ length: 500 }, (_, i) => ({
      token: randomName(12),
      expiresAt: inMinutes(5 + (i % 60) * 12),
    }));
    const policy = withRevocations(emptyPolicy(), revocations, now);
    expect(tokens(policy)).toHaveLength(500);
    expect(JSON.stringify(policy).length).toBeLessThanOrEqual(INLINE_POLICY_LIMIT);
  });

  it('refuses, naming the limit and the way out, when the policy would not fit', () => {
    const revocations = Array.from({ length: 1000 }, () => ({ token: randomName(12), expiresAt: inMinutes(30) }));
    expect(() => withRevocations(emptyPolicy(), revocations, now)).toThrow(/10240.*aws:TokenIssueTime/);
  });
});
