import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Alert } from '../../src/alerts/alert.js';
import { sourceNetwork } from '../../src/alerts/source-network.js';
import { webhookPayload } from '../../src/alerts/webhook-payload.js';
import { parseConfig } from '../../src/config/load.js';

const BASE = `
store: { url: "postgres://broker@127.0.0.1/credbroker" }
root_token: \${env:ROOT}
mounts: {}
`;
const env = {
  ROOT: 'r'.repeat(32),
  SLACK_WEBHOOK_URL: 'https://hooks.slack.com/services/T0/B0/x',
  PAGERDUTY_ROUTING_KEY: 'pd-key-1',
};

/** The ```yaml blocks of README's Alerts section. */
function readmeAlertExamples(): string[] {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('### Alerts'), readme.indexOf('### What the API speaks'));
  return [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

describe('alerts config', () => {
  it('each README example parses', () => {
    const examples = readmeAlertExamples();
    expect(examples).toHaveLength(2);
    const [slack, pagerduty] = examples.map((yaml) => parseConfig(BASE + yaml, env).alerts!);
    expect(slack!.webhook).toMatchObject({ format: 'slack', timeout: 5, url: env.SLACK_WEBHOOK_URL });
    expect(slack!.detectors.root_token.enabled).toBe(false);
    expect(slack!.detectors.issue_rate).toMatchObject({ half_life: 3600, min_history: 86400, flush_interval: 10 });
    expect(pagerduty!.webhook).toMatchObject({ format: 'pagerduty', routing_key: 'pd-key-1' });
  });

  it('refuses a pagerduty webhook without a routing key, an inline routing key, and a non-http url', () => {
    const hook = (body: string) => () => parseConfig(`${BASE}alerts:\n  webhook: ${body}\n`, env);
    expect(hook('{ url: "https://events.pagerduty.com/v2/enqueue", format: pagerduty }')).toThrow(/routing_key/);
    expect(hook('{ url: "https://e.example", format: pagerduty, routing_key: abc }')).toThrow(
      /routing_key: write it as \$\{env:NAME\}/,
    );
    expect(hook('{ url: "file:///etc/passwd" }')).toThrow(/url/);
  });

  it('without an alerts section the broker config has none (the detectors then run on their defaults)', () => {
    expect(parseConfig(BASE, env).alerts).toBeUndefined();
  });
});

describe('webhook bodies', () => {
  const alert: Alert = {
    detector: 'denial_burst',
    severity: 'warning',
    subject: 'kubernetes/etl',
    summary: 'kubernetes/etl was denied 10 times within 60 s',
    at: Date.parse('2026-12-01T00:00:00Z'),
    details: { threshold: 10 },
  };
  it('slack is {text, blocks}; pagerduty is an Events v2 trigger with a stable dedup key', () => {
    const slack = webhookPayload(alert, 'slack', 'credbroker@h') as { text: string; blocks: unknown[] };
    expect(slack.text).toContain('denied 10 times');
    expect(slack.blocks.length).toBeGreaterThan(0);
    expect(webhookPayload(alert, 'pagerduty', 'credbroker@h', 'key')).toMatchObject({
      routing_key: 'key',
      event_action: 'trigger',
      dedup_key: 'credbroker:denial_burst:kubernetes/etl',
      payload: { summary: alert.summary, source: 'credbroker@h', severity: 'warning' },
    });
    expect(webhookPayload(alert, 'generic', 'credbroker@h')).toMatchObject({
      detector: 'denial_burst',
      subject: 'kubernetes/etl',
      time: '2026-12-01T00:00:00.000Z',
    });
  });
});

describe('source networks', () => {
  it('masks IPv4, IPv4-mapped and IPv6 addresses to their prefix; anything else is no network', () => {
    expect(sourceNetwork('10.1.2.3', 24, 64)).toBe('10.1.2.0/24');
    expect(sourceNetwork('10.1.2.3', 16, 64)).toBe('10.1.0.0/16');
    expect(sourceNetwork('::ffff:192.168.7.9', 24, 64)).toBe('192.168.7.0/24');
    expect(sourceNetwork('2001:db8:1:2:aaaa::5', 24, 64)).toBe('2001:db8:1:2:0:0:0:0/64');
    expect(sourceNetwork('2001:db8:1:2:aaaa::5', 24, 48)).toBe('2001:db8:1:0:0:0:0:0/48');
    expect(sourceNetwork('::1', 24, 128)).toBe('0:0:0:0:0:0:0:1/128');
    expect(sourceNetwork('not-an-ip', 24, 64)).toBeUndefined();
  });
});
