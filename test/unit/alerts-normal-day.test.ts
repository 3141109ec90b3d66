import { describe, expect, it } from 'vitest';
import { HOUR, MINUTE, records, scriptedEngine, seeded } from './alerts-script.js';

/**
 * A day of a small deployment: three pipelines issuing at their own rates with noise, a person
 * mistyping a path now and then, a few failed logins spread over the day. `day` is fed from `from`.
 */
async function scriptedDay(s: ReturnType<typeof scriptedEngine>, from: number, random: () => number) {
  const events: { at: number; feed: () => void }[] = [];
  const pipelines = [
    { name: 'etl', meanGap: 3 * MINUTE },
    { name: 'billing', meanGap: 20 * MINUTE },
    { name: 'web', meanGap: 30_000 },
  ];
  for (const p of pipelines) {
    // Exponential gaps: a Poisson stream, bursts of a few close together included.
    for (let t = from; t < from + 24 * HOUR; t += -Math.log(1 - random()) * p.meanGap) {
      const address = `10.1.${pipelines.indexOf(p)}.${1 + Math.floor(random() * 200)}`;
      events.push({ at: t, feed: () => s.engine.observe(records.issue(p.name, 'reader', address)) });
    }
  }
  // A few denials, never many within a minute: someone trying the admin role, a wrong path.
  for (let i = 0; i < 8; i++) {
    const at = from + random() * 24 * HOUR;
    for (let j = 0; j < 3; j++) events.push({ at: at + j * 5000, feed: () => s.engine.observe(records.denied('etl')) });
  }
  // Failed logins: a typo'd token twice, now and then, from various hosts.
  for (let i = 0; i < 10; i++) {
    const at = from + random() * 24 * HOUR;
    const address = `10.2.0.${1 + Math.floor(random() * 50)}`;
    for (let j = 0; j < 2; j++)
      events.push({ at: at + j * 20_000, feed: () => s.engine.observe(records.loginFailed(address)) });
  }
  events.sort((a, b) => a.at - b.at);
  for (const event of events) {
    await s.advanceTo(event.at);
    event.feed();
  }
  await s.advanceTo(from + 24 * HOUR);
  return events.length;
}

describe('alerts on a normal day', () => {
  it('two days of usual traffic with noise fire nothing once the first uses are known', async () => {
    const s = scriptedEngine();
    const random = seeded(14);
    const day1 = s.clock.t;
    await scriptedDay(s, day1, random);
    // Day one: each pipeline's first use of its role is reported, nothing else.
    expect(s.alerts.map((a) => `${a.detector} ${a.subject}`).sort()).toEqual([
      'first_use kubernetes/billing role db/creds/reader',
      'first_use kubernetes/etl role db/creds/reader',
      'first_use kubernetes/web role db/creds/reader',
    ]);
    s.alerts.length = 0;
    const fed = await scriptedDay(s, day1 + 24 * HOUR, random);
    expect(fed).toBeGreaterThan(3000);
    // Past min_history the issue-rate detector is armed, and still quiet.
    expect(s.issueRate().baseline('kubernetes/web')).toBeGreaterThan(0);
    expect(s.alerts).toEqual([]);
  });
});
