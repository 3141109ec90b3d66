import type { Alert } from './alert.js';

export type WebhookFormat = 'generic' | 'slack' | 'pagerduty';

/** The generic body: the alert as it is audited. */
export function genericPayload(alert: Alert, source: string) {
  return {
    source,
    detector: alert.detector,
    severity: alert.severity,
    subject: alert.subject,
    summary: alert.summary,
    time: new Date(alert.at).toISOString(),
    ...(alert.identity ? { identity: { name: alert.identity.name, auth_mount: alert.identity.auth_mount } } : {}),
    ...(alert.details ? { details: alert.details } : {}),
  };
}

/** A Slack incoming webhook's (and Mattermost's, Rocket.Chat's) `{text, blocks}`. */
export function slackPayload(alert: Alert, source: string) {
  const text = `[${alert.severity}] credbroker ${alert.detector}: ${alert.summary}`;
  return {
    text,
    blocks: [
      {
        type: 'section',
        text: { type: 'mrkdwn', text: `*${alert.severity}* \`${alert.detector}\` — ${alert.summary}` },
      },
      {
        type: 'context',
        elements: [{ type: 'mrkdwn', text: `${source} · ${alert.subject} · ${new Date(alert.at).toISOString()}` }],
      },
    ],
  };
}

/** PagerDuty Events API v2 `trigger`; the dedup key makes PagerDuty fold repeats into one incident too. */
export function pagerDutyPayload(alert: Alert, source: string, routingKey: string) {
  return {
    routing_key: routingKey,
    event_action: 'trigger',
    dedup_key: `credbroker:${alert.detector}:${alert.subject}`,
    payload: {
      summary: alert.summary.slice(0, 1024),
      source,
      severity: alert.severity,
      component: 'credbroker',
      class: alert.detector,
      timestamp: new Date(alert.at).toISOString(),
      ...(alert.details ? { custom_details: { subject: alert.subject, ...alert.details } } : {}),
    },
  };
}

export function webhookPayload(alert: Alert, format: WebhookFormat, source: string, routingKey?: string): unknown {
  if (format === 'slack') return slackPayload(alert, source);
  if (format === 'pagerduty') return pagerDutyPayload(alert, source, routingKey ?? '');
  return genericPayload(alert, source);
}
