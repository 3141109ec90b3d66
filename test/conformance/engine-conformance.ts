import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import type { JsonValue } from '../../src/engines.js';
import { newLeaseId } from '../../src/leases/lease-id.js';
import { api } from '../support/broker.js';

/** What one engine's test file provides for the shared contract checks. */
export interface ConformanceFixture {
  broker: Broker;
  mount: string;
  role: string;
  /** Proves the credential works against the target; throws when it does not. */
  use(data: Record<string, JsonValue>): Promise<void>;
  renewable: boolean;
  /** False where the target cannot end a credential before it expires (AWS federation tokens). */
  revocableBeforeExpiry: boolean;
  ttl?: string;
  close(): Promise<void>;
}

const attempt = (work: Promise<unknown>) =>
  work.then(
    () => 'worked',
    () => 'refused',
  );

/**
 * The engine contract, checked the same way for every engine: issue → use → renew (where
 * supported) → revoke → revoke again, and a crash after the plan or after the issue leaves
 * nothing behind once a reaper runs.
 */
export function describeEngineConformance(name: string, setup: () => Promise<ConformanceFixture>): void {
  describe(`engine conformance: ${name}`, () => {
    let f: ConformanceFixture;
    beforeAll(async () => {
      f = await setup();
    });
    afterAll(async () => {
      await f?.close();
    });

    const issue = async () => {
      const res = await api(f.broker, 'PUT', `${f.mount}/creds/${f.role}`, f.ttl ? { ttl: f.ttl } : {});
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return res.body as { lease_id: string; renewable: boolean; data: Record<string, JsonValue> };
    };

    it('issues a credential that works on the target', async () => {
      const lease = await issue();
      expect(lease.renewable).toBe(f.renewable);
      await f.use(lease.data);
    });

    it(`renews where the engine supports it, and says so where it does not`, async () => {
      const lease = await issue();
      const res = await api(f.broker, 'PUT', 'sys/leases/renew', { lease_id: lease.lease_id, increment: 1000 });
      if (f.renewable) expect(res.status, JSON.stringify(res.body)).toBe(200);
      else expect(res.body.errors).toEqual(['lease is not renewable']);
    });

    it('revokes: the credential stops working (or the answer says it cannot), and revoking again succeeds', async () => {
      const lease = await issue();
      const first = await api(f.broker, 'PUT', 'sys/leases/revoke', { lease_id: lease.lease_id });
      expect(first.status).toBeLessThan(300);
      if (f.revocableBeforeExpiry) {
        expect(await attempt(f.use(lease.data))).toBe('refused');
      } else {
        expect(first.body.warnings.join(' ')).toMatch(/cannot be revoked before it expires/);
      }
      const again = await api(f.broker, 'PUT', 'sys/leases/revoke', { lease_id: lease.lease_id });
      expect(again.status).toBeLessThan(300);
      const lookup = await api(f.broker, 'PUT', 'sys/leases/lookup', { lease_id: lease.lease_id });
      expect(lookup.body.data).toMatchObject({ state: 'revoked', revocable_before_expiry: f.revocableBeforeExpiry });
    });

    for (const crashPoint of ['after the plan', 'after the issue'] as const) {
      it(`leaves nothing behind once a reaper runs, when the issuer dies ${crashPoint}`, async () => {
        const mount = f.broker.mounts.get(f.mount)!;
        const role = mount.roles.get(f.role)!;
        const leaseId = newLeaseId(f.mount, 'creds', f.role);
        const ttlSeconds = role.common.default_ttl;
        const handle = mount.target.plan({ mount: f.mount, roleName: f.role, role: role.config, leaseId, ttlSeconds, params: {}, path: 'creds' });
        const pending = await f.broker.store.insertPending({
          id: leaseId,
          mount: f.mount,
          role: f.role,
          engine: mount.type,
          handle,
          requester: 'conformance',
          ttlSeconds,
          maxTtlSeconds: role.common.max_ttl,
          pendingGraceSeconds: 3600,
          renewable: f.renewable,
        });
        const issued = crashPoint === 'after the issue' ? await mount.target.issue({ roleName: f.role, role: role.config, handle, expiresAt: pending.expires_at }) : null;
        // The process is gone; its grace has run out.
        await f.broker.store.pool.query(`UPDATE credbroker_leases SET next_attempt_at = now() - interval '1 second' WHERE id = $1`, [leaseId]);
        const reaped = await f.broker.reaper.reapOnce();
        expect(reaped.revoked).toContain(leaseId);
        const { rows } = await f.broker.store.pool.query('SELECT state, revoke_reason FROM credbroker_leases WHERE id = $1', [leaseId]);
        expect(rows[0]).toEqual({ state: 'revoked', revoke_reason: 'cleanup' });
        if (issued && f.revocableBeforeExpiry) expect(await attempt(f.use(issued.data))).toBe('refused');
      });
    }
  });
}
