import type { AuditRecord } from '../audit/record.js';
import { identityKey, type Clock, type Detector, type EmitAlert } from './alert.js';
import type { BaselineMerge, StoredBaseline } from './baseline-store.js';

export interface IssueRateConfig {
  factor: number;
  half_life: number;
  min_history: number;
  min_count: number;
  window: number;
  flush_interval: number;
}

/** The recent window is counted in this many buckets: constant memory whatever the rate. */
const BUCKETS = 10;
/** Identities tracked at once; past this the least recently active is forgotten (its baseline stays in the store). */
const MAX_IDENTITIES = 10_000;

interface IdentityRate {
  identity: NonNullable<AuditRecord['identity']>;
  /** Best estimate of the exponentially weighted rate (issues/s) as of `at`: the store's at the last merge plus ours since. */
  rate: number;
  at: number;
  /** Our issues not yet merged into the store, weighted and decayed to `pendingAt`. */
  pending: number;
  pendingAt: number;
  /** The earliest issue known (the store's once merged). */
  firstSeen: number;
  buckets: number[];
  /** Start of the newest bucket. */
  bucketAt: number;
}

/** An issue: an ok answer that created the lease its path names (`<mount>/creds/<role>` → `<mount>/creds/<role>/<id>`). */
export const isIssue = (record: AuditRecord): boolean =>
  record.type === 'response' &&
  record.outcome === 'ok' &&
  record.identity !== undefined &&
  record.path !== undefined &&
  record.lease_id?.startsWith(`${record.path}/`) === true;

/**
 * Fires when an identity issues `factor` times its own baseline over the last `window` seconds
 * (and at least `min_count` issues in it), once the identity has `min_history` seconds of history.
 * The baseline is an exponentially weighted rate with `half_life`, shared by the replicas through
 * the store: observe() only updates memory; tick() merges each identity's new issues into the store
 * and takes back the merged rate, so every replica compares against everyone's issues.
 */
export class IssueRateDetector implements Detector {
  readonly name = 'issue_rate' as const;
  private readonly rates = new Map<string, IdentityRate>();
  /** Per second: an issue adds `k`, so a steady r issues/s settles at rate r. */
  private readonly k: number;
  private readonly bucketMs: number;
  readonly tickInterval: number;

  constructor(
    private readonly config: IssueRateConfig,
    private readonly deps: {
      now: Clock;
      emit: EmitAlert;
      /** mergeBaselines, bound to the store. */
      merge: (m: BaselineMerge) => Promise<Map<string, StoredBaseline>>;
    },
  ) {
    this.k = Math.LN2 / config.half_life;
    this.bucketMs = (config.window * 1000) / BUCKETS;
    this.tickInterval = config.flush_interval;
  }

  private decay(value: number, fromMs: number, toMs: number): number {
    return value * Math.exp((-this.k * Math.max(0, toMs - fromMs)) / 1000);
  }

  observe(record: AuditRecord): void {
    if (!isIssue(record)) return;
    const now = this.deps.now();
    const key = identityKey(record.identity!);
    let state = this.rates.get(key);
    if (state) this.rates.delete(key);
    else
      state = {
        identity: record.identity!,
        rate: 0,
        at: now,
        pending: 0,
        pendingAt: now,
        firstSeen: now,
        buckets: new Array<number>(BUCKETS).fill(0),
        bucketAt: now,
      };
    this.rates.set(key, state);
    if (this.rates.size > MAX_IDENTITIES) this.rates.delete(this.rates.keys().next().value!);

    state.rate = this.decay(state.rate, state.at, now) + this.k;
    state.at = now;
    state.pending = this.decay(state.pending, state.pendingAt, now) + this.k;
    state.pendingAt = now;
    const recent = this.countRecent(state, now);
    this.check(key, state, recent, now);
  }

  /** Adds this issue to the bucket ring and answers the issues within the window. */
  private countRecent(state: IdentityRate, now: number): number {
    const shift = Math.floor((now - state.bucketAt) / this.bucketMs);
    if (shift > 0) {
      const keep = Math.max(0, BUCKETS - shift);
      state.buckets = [...state.buckets.slice(BUCKETS - keep), ...new Array<number>(BUCKETS - keep).fill(0)];
      state.bucketAt += shift * this.bucketMs;
    }
    state.buckets[BUCKETS - 1]! += 1;
    return state.buckets.reduce((a, b) => a + b, 0);
  }

  private check(key: string, state: IdentityRate, recent: number, now: number): void {
    if (recent < this.config.min_count) return;
    if (now - state.firstSeen < this.config.min_history * 1000) return;
    const recentRate = recent / this.config.window;
    // The baseline without this window's issues, which it already holds in part.
    const baseline = Math.max(0, state.rate - this.k * recent);
    if (recentRate < this.config.factor * baseline) return;
    const perHour = (r: number) => Math.round(r * 3600 * 10) / 10;
    this.deps.emit({
      detector: 'issue_rate',
      severity: 'warning',
      subject: key,
      summary: `${key} issued ${recent} credentials in ${this.config.window} s (${perHour(recentRate)}/h) against a baseline of ${perHour(baseline)}/h`,
      at: now,
      identity: state.identity,
      details: { recent, window_seconds: this.config.window, baseline_per_hour: perHour(baseline) },
    });
  }

  /** Merges every active identity's new issues into the store, in one statement, and adopts the shared rates. */
  async tick(): Promise<void> {
    const now = this.deps.now();
    const active = [...this.rates].filter(
      ([, state]) => state.pending > 0 || state.bucketAt + this.config.window * 1000 >= now,
    );
    if (active.length === 0) return;
    const deltas = active.map(([identity, state]) => {
      const delta = this.decay(state.pending, state.pendingAt, now);
      state.pending = 0;
      state.pendingAt = now;
      return { identity, delta, firstSeen: state.firstSeen };
    });
    let merged: Map<string, StoredBaseline>;
    try {
      merged = await this.deps.merge({ now, halfLifeSeconds: this.config.half_life, deltas });
    } catch (err) {
      // Kept for the next merge: a store outage loses no counts.
      active.forEach(([, state], i) => {
        state.pending = this.decay(state.pending, state.pendingAt, now) + deltas[i]!.delta;
      });
      throw err;
    }
    const after = this.deps.now();
    for (const [identity, state] of active) {
      const stored = merged.get(identity);
      if (!stored) continue;
      // Issues observed while the merge was in flight are ours and not yet in the store.
      state.rate = this.decay(stored.rate, now, after) + this.decay(state.pending, state.pendingAt, after);
      state.at = after;
      state.firstSeen = Math.min(state.firstSeen, stored.firstSeen);
    }
  }

  /** The current baseline of `key` (issues/s), as this replica sees it: for tests and diagnostics. */
  baseline(key: string): number | undefined {
    const state = this.rates.get(key);
    return state && this.decay(state.rate, state.at, this.deps.now());
  }
}
