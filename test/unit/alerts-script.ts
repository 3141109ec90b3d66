import { createLogger } from '../../src/log.js';
import type { AuditRecord } from '../../src/audit/record.js';
import type { Alert, Detector, EmitAlert } from '../../src/alerts/alert.js';
import { AlertEngine } from '../../src/alerts/alert-engine.js';
import { DEFAULT_ALERTS_CONFIG } from '../../src/alerts/alerts-config.js';
import type { BaselineMerge, StoredBaseline } from '../../src/alerts/baseline-store.js';
import { denialBurstDetector } from '../../src/alerts/denial-burst.js';
import { firstUseDetector } from '../../src/alerts/first-use.js';
import { irrevocableDetector } from '../../src/alerts/irrevocable.js';
import { IssueRateDetector } from '../../src/alerts/issue-rate.js';
import { loginFailuresDetector } from '../../src/alerts/login-failures.js';
import { reaperPausedDetector } from '../../src/alerts/reaper-paused.js';
import { rootTokenDetector } from '../../src/alerts/root-token.js';
import type { SeenKind } from '../../src/alerts/seen-store.js';

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const START = Date.parse('2026-12-01T00:00:00Z');

/** A seeded generator (mulberry32): a scripted day is the same day on every run. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The store's two alert tables held in memory with the same semantics as baseline-store.ts and
 * seen-store.ts (decay by the caller's clock; the first insert of a pair wins). The SQL itself
 * is exercised against PostgreSQL in test/integration/alerts.test.ts.
 */
export class MemoryAlertStore {
  readonly baselines = new Map<string, { rate: number; updatedAt: number; firstSeen: number }>();
  readonly seen = new Set<string>();

  async merge(m: BaselineMerge): Promise<Map<string, StoredBaseline>> {
    const merged = new Map<string, StoredBaseline>();
    for (const d of m.deltas) {
      const row = this.baselines.get(d.identity);
      const next = row
        ? {
            rate:
              row.rate * Math.exp((-Math.LN2 * Math.max(0, m.now - row.updatedAt)) / 1000 / m.halfLifeSeconds) +
              d.delta,
            updatedAt: Math.max(row.updatedAt, m.now),
            firstSeen: Math.min(row.firstSeen, d.firstSeen),
          }
        : { rate: d.delta, updatedAt: m.now, firstSeen: d.firstSeen };
      this.baselines.set(d.identity, next);
      merged.set(d.identity, { rate: next.rate, firstSeen: next.firstSeen });
    }
    return merged;
  }

  async markSeen(p: { kind: SeenKind; identity: string; value: string }) {
    const key = `${p.kind}|${p.identity}|${p.value}`;
    if (this.seen.has(key)) return { first: false, hadOthers: true };
    const hadOthers = [...this.seen].some((k) => k.startsWith(`${p.kind}|${p.identity}|`));
    this.seen.add(key);
    return { first: true, hadOthers };
  }
}

export interface ReaperState {
  paused: boolean;
  since: Date | null;
}

/** Every detector on its defaults behind one engine, driven by a fake clock; alerts collected in order. */
export function scriptedEngine(overrides: { dedupWindowSeconds?: number } = {}) {
  const clock = { t: START };
  const now = () => clock.t;
  const alerts: Alert[] = [];
  const store = new MemoryAlertStore();
  const reaper: ReaperState = { paused: false, since: null };
  const d = DEFAULT_ALERTS_CONFIG.detectors;
  const log = createLogger('silent');
  let issueRate!: IssueRateDetector;
  const engine = new AlertEngine({
    now,
    log,
    dedupWindowSeconds: overrides.dedupWindowSeconds ?? DEFAULT_ALERTS_CONFIG.dedup_window,
    outputs: { audit: (a) => alerts.push(a), count: () => undefined },
    detectors: (emit: EmitAlert): Detector[] => {
      const base = { now, emit };
      issueRate = new IssueRateDetector(d.issue_rate, { ...base, merge: (m) => store.merge(m) });
      return [
        denialBurstDetector(d.denial_burst, base),
        loginFailuresDetector(d.login_failures, base),
        issueRate,
        firstUseDetector(d.first_use, { ...base, log, markSeen: (p) => store.markSeen(p) }),
        rootTokenDetector(base),
        irrevocableDetector(base),
        reaperPausedDetector(d.reaper_paused, {
          ...base,
          status: async () => ({ ...reaper, pausedBy: 'token/root', dueQueued: 3 }),
        }),
      ];
    },
  });
  /** Advances the clock to `at`, running the periodic work (flushes, polls) every 10 s on the way, as the timers would. */
  const advanceTo = async (at: number) => {
    const step = 10_000;
    while (clock.t + step <= at) {
      clock.t += step;
      await engine.tick();
    }
    clock.t = at;
  };
  return { engine, alerts, store, reaper, clock, advanceTo, issueRate: () => issueRate };
}

const identity = (name: string, root = false) => ({
  name,
  auth_mount: root ? 'token' : 'kubernetes',
  metadata: {},
  root,
});

/** The response records the API writes, as the auditor hands them to listeners (already scrubbed). */
export const records = {
  issue: (name: string, role = 'reader', address = '10.1.2.3'): AuditRecord => ({
    type: 'response',
    time: '',
    request_id: 'r',
    identity: identity(name),
    remote_address: address,
    operation: 'read',
    path: `db/creds/${role}`,
    lease_id: `db/creds/${role}/abc${Math.random().toString(36).slice(2, 8)}`,
    outcome: 'ok',
    status: 200,
  }),
  denied: (name: string, path = 'db/creds/admin'): AuditRecord => ({
    type: 'response',
    time: '',
    request_id: 'r',
    identity: identity(name),
    remote_address: '10.1.2.3',
    operation: 'read',
    path,
    outcome: 'denied',
    status: 403,
    error: 'permission denied',
  }),
  loginFailed: (address: string, status = 403): AuditRecord => ({
    type: 'response',
    time: '',
    request_id: 'r',
    remote_address: address,
    operation: 'login',
    path: 'auth/kubernetes/login',
    outcome: status === 403 ? 'denied' : 'error',
    status,
    error: 'permission denied',
  }),
  root: (path = 'sys/leases/lookup'): AuditRecord => ({
    type: 'response',
    time: '',
    request_id: 'r',
    identity: identity('root', true),
    remote_address: '127.0.0.1',
    operation: 'update',
    path,
    outcome: 'ok',
    status: 200,
  }),
  irrevocable: (leaseId: string): AuditRecord => ({
    type: 'event',
    time: '',
    request_id: `reaper:${leaseId}`,
    operation: 'irrevocable',
    lease_id: leaseId,
    error: 'connection refused',
  }),
};
