import { describe, expect, it } from 'vitest';
import { HOUR, MINUTE, START, records, scriptedEngine, seeded } from './alerts-script.js';

const summary = (s: ReturnType<typeof scriptedEngine>) => s.alerts.map((a) => `${a.detector} ${a.subject}`);

/** Feeds `count` records `gapMs` apart from the clock's current time. */
async function burst(s: ReturnType<typeof scriptedEngine>, count: number, gapMs: number, feed: () => void) {
  for (let i = 0; i < count; i++) {
    await s.advanceTo(s.clock.t + gapMs);
    feed();
  }
}

describe('denial burst', () => {
  it('fires once for 30 denials of one identity in 30 s, and once more for a burst after the dedup window', async () => {
    const s = scriptedEngine();
    await burst(s, 30, 1000, () => s.engine.observe(records.denied('etl')));
    expect(summary(s)).toEqual(['denial_burst kubernetes/etl']);
    expect(s.alerts[0]!.severity).toBe('warning');
    // Within the dedup window: still one.
    await s.advanceTo(s.clock.t + 5 * MINUTE);
    await burst(s, 30, 1000, () => s.engine.observe(records.denied('etl')));
    expect(s.alerts).toHaveLength(1);
    await s.advanceTo(s.clock.t + 10 * MINUTE);
    await burst(s, 30, 1000, () => s.engine.observe(records.denied('etl')));
    expect(summary(s)).toEqual(['denial_burst kubernetes/etl', 'denial_burst kubernetes/etl']);
  });

  it('stays quiet for 9 denials a minute, and for denials spread across identities', async () => {
    const s = scriptedEngine();
    for (let m = 0; m < 30; m++) await burst(s, 9, 6700, () => s.engine.observe(records.denied('etl')));
    for (let i = 0; i < 100; i++) s.engine.observe(records.denied(`pipeline-${i % 20}`));
    expect(s.alerts).toEqual([]);
  });
});

describe('login failures', () => {
  it('fires once for 20 failed logins from one address within a minute', async () => {
    const s = scriptedEngine();
    await burst(s, 20, 3000, () => s.engine.observe(records.loginFailed('203.0.113.7')));
    await burst(s, 20, 3000, () => s.engine.observe(records.loginFailed('203.0.113.7', 400)));
    expect(summary(s)).toEqual(['login_failures 203.0.113.7']);
  });

  it('stays quiet for 4 failures per address, and for a store outage failing every login (503)', async () => {
    const s = scriptedEngine();
    for (let i = 0; i < 40; i++) s.engine.observe(records.loginFailed(`203.0.113.${i % 10}`));
    await burst(s, 50, 1000, () => s.engine.observe(records.loginFailed('10.0.0.1', 503)));
    expect(s.alerts).toEqual([]);
  });
});

describe('issue rate', () => {
  /** Two days of etl issuing about every 3 minutes, then the clock is at START + 48 h. */
  async function history(s: ReturnType<typeof scriptedEngine>, random: () => number) {
    while (s.clock.t < START + 48 * HOUR) {
      await s.advanceTo(s.clock.t - Math.log(1 - random()) * 3 * MINUTE);
      s.engine.observe(records.issue('etl'));
    }
    s.alerts.length = 0;
  }

  it('fires once when an identity issues 200 credentials in 5 minutes against a baseline of 20/h', async () => {
    const s = scriptedEngine();
    await history(s, seeded(1));
    await burst(s, 200, 1500, () => s.engine.observe(records.issue('etl')));
    expect(summary(s)).toEqual(['issue_rate kubernetes/etl']);
    expect(s.alerts[0]!.summary).toMatch(/against a baseline of (1\d|2\d)(\.\d)?\/h/);
  });

  it('stays quiet for a young identity bursting before min_history, and for a doubled rate', async () => {
    const s = scriptedEngine();
    await history(s, seeded(2));
    // A new pipeline: an hour old, already bursting. No baseline to compare with yet.
    await burst(s, 200, 1500, () => s.engine.observe(records.issue('new-pipeline')));
    // etl at twice its usual rate for an hour: busy, not anomalous at factor 5.
    await burst(s, 40, 90_000, () => s.engine.observe(records.issue('etl')));
    expect(summary(s).filter((a) => a.startsWith('issue_rate'))).toEqual([]);
  });

  it('remembers the baseline through the store: a restarted replica (fresh memory) still fires', async () => {
    const s = scriptedEngine();
    await history(s, seeded(3));
    const restarted = scriptedEngine();
    restarted.clock.t = s.clock.t;
    for (const [k, v] of s.store.baselines) restarted.store.baselines.set(k, v);
    // The first issue after the restart is merged at the next tick, which brings back first_seen and the rate.
    restarted.engine.observe(records.issue('etl'));
    await restarted.advanceTo(restarted.clock.t + 20_000);
    await burst(restarted, 200, 1500, () => restarted.engine.observe(records.issue('etl')));
    expect(summary(restarted).filter((a) => a.startsWith('issue_rate'))).toEqual(['issue_rate kubernetes/etl']);
  });
});

describe('first use', () => {
  it('reports each new role of an identity once, and a new network only after the identity has used another', async () => {
    const s = scriptedEngine();
    for (let i = 0; i < 5; i++) s.engine.observe(records.issue('etl', 'reader', `10.1.2.${i + 1}`));
    for (let i = 0; i < 5; i++) s.engine.observe(records.issue('etl', 'writer', `10.1.2.${i + 1}`));
    await s.advanceTo(s.clock.t + 1000);
    expect(summary(s)).toEqual([
      'first_use kubernetes/etl role db/creds/reader',
      'first_use kubernetes/etl role db/creds/writer',
    ]);
    s.engine.observe(records.issue('etl', 'reader', '198.51.100.9'));
    s.engine.observe(records.issue('etl', 'reader', '198.51.100.10'));
    s.engine.observe(records.issue('etl', 'reader', '2001:db8:1:2::5'));
    await s.advanceTo(s.clock.t + 1000);
    expect(summary(s).slice(2)).toEqual([
      'first_use kubernetes/etl network 198.51.100.0/24',
      'first_use kubernetes/etl network 2001:db8:1:2:0:0:0:0/64',
    ]);
    expect(s.alerts.every((a) => a.severity === 'info')).toBe(true);
  });

  it('asks the store only on a cache miss', async () => {
    const s = scriptedEngine();
    let asked = 0;
    const markSeen = s.store.markSeen.bind(s.store);
    s.store.markSeen = async (p) => (asked++, markSeen(p));
    for (let i = 0; i < 1000; i++) s.engine.observe(records.issue('etl', 'reader', '10.1.2.3'));
    await s.advanceTo(s.clock.t + 1000);
    expect(asked).toBe(2); // the role and the network, once each
  });
});

describe('root token, irrevocable leases, reaper pause', () => {
  it('root-token use fires once per dedup window', async () => {
    const s = scriptedEngine();
    await burst(s, 50, 6000, () => s.engine.observe(records.root()));
    expect(summary(s)).toEqual(['root_token token/root']);
    await s.advanceTo(s.clock.t + 10 * MINUTE);
    s.engine.observe(records.root());
    expect(summary(s)).toEqual(['root_token token/root', 'root_token token/root']);
  });

  it('leases turning irrevocable fire once per mount', async () => {
    const s = scriptedEngine();
    for (let i = 0; i < 20; i++) s.engine.observe(records.irrevocable(`db/creds/reader/l${i}`));
    s.engine.observe(records.irrevocable('aws/creds/deploy/x1'));
    expect(summary(s)).toEqual(['irrevocable db', 'irrevocable aws']);
    expect(s.alerts[0]!.severity).toBe('error');
  });

  it('a reaper paused for 15 minutes fires on the poll after, repeats once per dedup window, and stops after resume', async () => {
    const s = scriptedEngine();
    s.reaper.paused = true;
    s.reaper.since = new Date(s.clock.t);
    await s.advanceTo(s.clock.t + 14 * MINUTE + 50_000);
    expect(s.alerts).toEqual([]);
    await s.advanceTo(s.clock.t + 20_000);
    expect(summary(s)).toEqual(['reaper_paused reaper']);
    await s.advanceTo(s.clock.t + 15 * MINUTE);
    expect(s.alerts).toHaveLength(2);
    s.reaper.paused = false;
    s.reaper.since = null;
    await s.advanceTo(s.clock.t + HOUR);
    expect(s.alerts).toHaveLength(2);
  });

  it("an alert's own audit event does not feed the detectors", () => {
    const s = scriptedEngine();
    for (let i = 0; i < 50; i++) s.engine.observe({ ...records.denied('etl'), operation: 'alert' });
    expect(s.alerts).toEqual([]);
  });
});
