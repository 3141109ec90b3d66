import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import type { JsonValue } from '../../src/engines.js';
import { newLeaseId } from '../../src/leases/lease-id.js';
import { api } from '../support/broker.js';
import { waitUntil } from '../support/wait.js';

type Credential = Record<string, JsonValue>;

/** A session held open with a leased credential, on a target that has sessions. */
export interface HeldSession {
  /** Whether the target still lists the session (PostgreSQL: its backend in pg_stat_activity). */
  listed(): Promise<boolean>;
  /** Runs a trivial query on the session; rejects once the session is gone. */
  query(): Promise<void>;
  close(): Promise<void>;
}

/**
 * How the suite looks at the target itself, past the broker's answers, so that each step proves
 * its effect there (an engine whose renew or revoke did nothing fails) while the suite stays
 * engine-neutral. Reads the target as its administrator would, never through the broker.
 */
export interface TargetProbe {
  /**
   * Whether the target still holds the credential the handle names: the role or user exists, the
   * session is on record and not denied. `credential` is the issued secret where one was issued.
   */
  exists(handle: JsonValue, credential?: Credential): Promise<boolean>;
  /**
   * The expiry the target itself enforces on the credential (PostgreSQL: VALID UNTIL, STS: the
   * session's Expiration); null when it should have one and has none; undefined where this kind
   * of credential has no expiry on the target (an IAM user), so there is nothing to compare.
   */
  validUntil(handle: JsonValue, credential?: Credential): Promise<Date | null | undefined>;
  /** Opens a session with the credential and holds it. Omitted where the target has no sessions. */
  openSession?(credential: Credential): Promise<HeldSession>;
}

/** What one engine's test file provides for the shared contract checks. */
export interface ConformanceFixture {
  broker: Broker;
  mount: string;
  role: string;
  /** Proves the credential works against the target; throws when it does not. */
  use(data: Credential): Promise<void>;
  probe: TargetProbe;
  renewable: boolean;
  /** False where the target cannot end a credential before it expires (AWS federation tokens). */
  revocableBeforeExpiry: boolean;
  ttl?: string;
  close(): Promise<void>;
}

/** Clock reads on two sides (the broker, the target) and VALID UNTIL's precision. */
const EXPIRY_SLACK_MS = 1500;

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
      const lease = res.body as { lease_id: string; lease_duration: number; renewable: boolean; data: Credential };
      const { rows } = await f.broker.store.pool.query<{ revoke_handle: JsonValue }>(
        'SELECT revoke_handle FROM credbroker_leases WHERE id = $1',
        [lease.lease_id],
      );
      return { ...lease, handle: rows[0]!.revoke_handle };
    };
    const expireTime = async (leaseId: string) => {
      const lookup = await api(f.broker, 'PUT', 'sys/leases/lookup', { lease_id: leaseId });
      expect(lookup.status, JSON.stringify(lookup.body)).toBe(200);
      return new Date(lookup.body.data.expire_time as string);
    };
    const expectClose = (actual: Date | null | undefined, expected: Date, what: string) => {
      expect(actual, what).toBeInstanceOf(Date);
      expect(
        Math.abs(actual!.getTime() - expected.getTime()),
        `${what}: ${actual?.toISOString()} vs ${expected.toISOString()}`,
      ).toBeLessThanOrEqual(EXPIRY_SLACK_MS);
    };

    it('issues a credential that exists on the target, works there, and expires there with its lease', async () => {
      const lease = await issue();
      expect(lease.renewable).toBe(f.renewable);
      expect(await f.probe.exists(lease.handle, lease.data), 'the target holds no such credential').toBe(true);
      await f.use(lease.data);
      const validUntil = await f.probe.validUntil(lease.handle, lease.data);
      if (validUntil !== undefined)
        expectClose(validUntil, await expireTime(lease.lease_id), "the target's expiry of the credential");
    });

    it(`renews where the engine supports it (the target's expiry moves with the lease), and says so where it does not`, async () => {
      const lease = await issue();
      const before = await expireTime(lease.lease_id);
      const targetBefore = await f.probe.validUntil(lease.handle, lease.data);
      // Half the issued TTL: the new expiry is far from the old one, so a renew that changed nothing shows.
      const increment = Math.max(60, Math.floor(lease.lease_duration / 2));
      const res = await api(f.broker, 'PUT', 'sys/leases/renew', { lease_id: lease.lease_id, increment });
      if (!f.renewable) {
        expect(res.body.errors).toEqual(['lease is not renewable']);
        expect(await expireTime(lease.lease_id)).toEqual(before);
        return;
      }
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const after = await expireTime(lease.lease_id);
      expect(Math.abs(after.getTime() - before.getTime())).toBeGreaterThan(30_000);
      if (targetBefore !== undefined) {
        expectClose(targetBefore, before, "the target's expiry before the renew");
        expectClose(await f.probe.validUntil(lease.handle, lease.data), after, "the target's expiry after the renew");
      }
      await f.use(lease.data);
    });

    it('revokes: the credential is gone from the target and its open sessions ended (or the answer says it cannot), and revoking again succeeds', async () => {
      const lease = await issue();
      const session = await f.probe.openSession?.(lease.data);
      try {
        await session?.query();
        const first = await api(f.broker, 'PUT', 'sys/leases/revoke', { lease_id: lease.lease_id });
        expect(first.status).toBeLessThan(300);
        if (f.revocableBeforeExpiry) {
          expect(await f.probe.exists(lease.handle, lease.data), 'the target still holds the revoked credential').toBe(
            false,
          );
          expect(await attempt(f.use(lease.data))).toBe('refused');
          if (session) {
            await waitUntil(async () => !(await session.listed()), {
              timeoutMs: 2000,
              intervalMs: 20,
              what: "the revoked credential's open session to end",
            });
            expect(await attempt(session.query())).toBe('refused');
          }
        } else {
          expect(first.body.warnings.join(' ')).toMatch(/cannot be revoked before it expires/);
        }
      } finally {
        await session?.close();
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
        const handle = mount.target.plan({
          mount: f.mount,
          roleName: f.role,
          role: role.config,
          leaseId,
          ttlSeconds,
          params: {},
          path: 'creds',
        });
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
        const issued =
          crashPoint === 'after the issue'
            ? await mount.target.issue({ roleName: f.role, role: role.config, handle, expiresAt: pending.expires_at })
            : null;
        if (issued)
          expect(await f.probe.exists(handle, issued.data), 'the issue created nothing on the target').toBe(true);
        // The process is gone; its grace has run out.
        await f.broker.store.pool.query(
          `UPDATE credbroker_leases SET next_attempt_at = now() - interval '1 second' WHERE id = $1`,
          [leaseId],
        );
        const reaped = await f.broker.reaper.reapOnce();
        expect(reaped.revoked).toContain(leaseId);
        const { rows } = await f.broker.store.pool.query(
          'SELECT state, revoke_reason FROM credbroker_leases WHERE id = $1',
          [leaseId],
        );
        expect(rows[0]).toEqual({ state: 'revoked', revoke_reason: 'cleanup' });
        if (issued && !f.revocableBeforeExpiry) return; // alive on the target until it expires, by design
        expect(
          await f.probe.exists(handle, issued?.data),
          'the target still holds a credential of the dead issuer',
        ).toBe(false);
        if (issued) expect(await attempt(f.use(issued.data))).toBe('refused');
      });
    }
  });
}
