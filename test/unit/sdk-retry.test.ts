import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BrokerApiError,
  BrokerUnreachableError,
  backoffDelay,
  renewDelay,
  sslFor,
  withRetry,
} from '../../src/sdk/index.js';

const fast = { attempts: 4, baseMs: 1, maxMs: 5 };

/** A function failing with `errors` in turn, then answering 'ok'; counts its calls. */
function failing(...errors: Error[]) {
  let calls = 0;
  const fn = async () => {
    const err = errors[calls++];
    if (err) throw err;
    return 'ok';
  };
  return { fn, calls: () => calls };
}

describe('withRetry', () => {
  it('never retries a 4xx: one call, the error as it came', async () => {
    for (const status of [400, 403, 404, 405, 429]) {
      const denied = new BrokerApiError(status, ['permission denied'], 'PUT', 'db/creds/r');
      const f = failing(denied, denied);
      await expect(withRetry(f.fn, fast)).rejects.toBe(denied);
      expect(f.calls()).toBe(1);
    }
  });

  it('retries a 5xx and an unreachable broker until it answers, or `attempts` times', async () => {
    const down = new BrokerUnreachableError('http://127.0.0.1:1', 'ECONNREFUSED');
    const storeDown = new BrokerApiError(503, ['store unavailable'], 'PUT', 'sys/leases/renew');
    const recovers = failing(down, storeDown, down);
    await expect(withRetry(recovers.fn, fast)).resolves.toBe('ok');
    expect(recovers.calls()).toBe(4);
    const never = failing(down, down, down, down, down, down);
    await expect(withRetry(never.fn, fast)).rejects.toBe(down);
    expect(never.calls()).toBe(4);
  });

  it('with a deadline, keeps trying past `attempts` until the deadline, then throws', async () => {
    const down = new BrokerUnreachableError('http://127.0.0.1:1', 'ECONNREFUSED');
    const f = failing(...Array.from({ length: 1000 }, () => down));
    const started = Date.now();
    await expect(withRetry(f.fn, { attempts: 1, baseMs: 2, maxMs: 4 }, started + 150)).rejects.toBe(down);
    expect(f.calls()).toBeGreaterThan(4);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('a non-SDK error (a bug) is not retried', async () => {
    const f = failing(new TypeError('x is undefined'));
    await expect(withRetry(f.fn, fast)).rejects.toBeInstanceOf(TypeError);
    expect(f.calls()).toBe(1);
  });
});

describe('timing', () => {
  it('backoff stays within the exponential bound and the cap, for any attempt and any draw', () => {
    fc.assert(
      fc.property(fc.nat(60), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, r) => {
        const opts = { attempts: 5, baseMs: 100, maxMs: 5000 };
        const delay = backoffDelay(attempt, opts, () => r);
        return delay >= 0 && delay <= Math.min(5000, 100 * 2 ** attempt);
      }),
    );
  });

  it('the next renewal comes at 2/3 of the time left, ±10 %, for any time left', () => {
    fc.assert(
      fc.property(fc.nat(86_400_000), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (msLeft, r) => {
        const delay = renewDelay(msLeft, () => r);
        return delay >= Math.floor(msLeft * 0.6) && delay <= Math.ceil(msLeft * (2 / 3) * 1.1) && delay < msLeft + 1;
      }),
    );
    expect(renewDelay(-5000)).toBe(0);
  });
});

describe('sslFor', () => {
  it('maps libpq sslmodes onto node-postgres: no TLS, TLS unverified, chain only, chain and name', () => {
    for (const mode of [undefined, 'disable', 'allow', 'prefer']) expect(sslFor(mode, undefined)).toBe(false);
    expect(sslFor('require', undefined)).toEqual({ rejectUnauthorized: false });
    const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    expect(sslFor('verify-full', pem)).toEqual({ ca: pem, rejectUnauthorized: true });
    const verifyCa = sslFor('verify-ca', pem) as { checkServerIdentity: () => unknown; rejectUnauthorized: boolean };
    expect(verifyCa.rejectUnauthorized).toBe(true);
    expect(verifyCa.checkServerIdentity()).toBeUndefined();
    expect(() => sslFor('verify-everything', undefined)).toThrow(/unknown sslmode/);
  });
});
