import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Auditor } from '../audit/auditor.js';
import type { ReaperPauseControl } from '../leases/reaper-pause.js';
import type { BrokerMetrics } from '../metrics/broker-metrics.js';
import type { StoreDb } from '../store/query.js';
import type { Alert } from './alert.js';
import { AlertEngine, configuredDetectors } from './alert-engine.js';
import { DEFAULT_ALERTS_CONFIG, type AlertsConfig } from './alerts-config.js';
import { WebhookNotifier } from './webhook-notifier.js';

export interface BrokerAlerts {
  engine: AlertEngine;
  /** Runs every detector's periodic work now (tests; the timers call it on their own). */
  tick(): Promise<void>;
  close(): Promise<void>;
}

/** The audit event of an alert: its fields are names, counts and ids (record.ts keeps them plain). */
function alertEvent(alert: Alert) {
  return {
    request_id: `alert:${randomUUID()}`,
    operation: 'alert',
    ...(alert.identity ? { identity: alert.identity } : {}),
    data: {
      detector: alert.detector,
      severity: alert.severity,
      subject: alert.subject,
      summary: alert.summary,
      ...(alert.details ? { details: alert.details } : {}),
    },
  };
}

/**
 * The broker's alerts: the engine on the auditor's stream, each detector's periodic work on an
 * unref'd timer, the webhook when configured. Without an `alerts` section the detectors run on
 * their defaults and alerts reach the audit log and the metrics only: they cost little, and an
 * operator who never configured a webhook still finds them there.
 */
export function startAlerts(
  config: AlertsConfig | undefined,
  deps: {
    auditor: Auditor;
    metrics: BrokerMetrics;
    log: Logger;
    store: StoreDb;
    reaperPause: ReaperPauseControl;
    /** Names this broker in webhook bodies. */
    source: string;
    now?: () => number;
  },
): BrokerAlerts {
  const settings = config ?? DEFAULT_ALERTS_CONFIG;
  const now = deps.now ?? Date.now;
  const notifier = settings.webhook ? new WebhookNotifier(settings.webhook, deps.log, deps.source) : undefined;
  const engine = new AlertEngine({
    now,
    log: deps.log,
    dedupWindowSeconds: settings.dedup_window,
    outputs: {
      audit: (alert) => void deps.auditor.event(alertEvent(alert)),
      count: (alert) => deps.metrics.alertRaised(alert.detector, alert.severity),
      ...(notifier ? { notify: (alert: Alert) => notifier.send(alert) } : {}),
    },
    detectors: configuredDetectors(settings.detectors, {
      now,
      log: deps.log,
      store: deps.store,
      // The full status counts the queued expiries: asked for only while paused.
      reaperStatus: async () =>
        (await deps.reaperPause.isPaused())
          ? deps.reaperPause.status()
          : { paused: false, since: null, pausedBy: null, reason: null, dueQueued: 0 },
    }),
  });
  deps.auditor.subscribe((record) => engine.observe(record));

  const running = new Set<Promise<void>>();
  const timers = engine.detectors.flatMap((detector) => {
    if (!detector.tick || !detector.tickInterval) return [];
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      const work = engine.tickOne(detector).finally(() => {
        busy = false;
        running.delete(work);
      });
      running.add(work);
    }, detector.tickInterval * 1000);
    timer.unref();
    return [timer];
  });

  return {
    engine,
    tick: () => engine.tick(),
    async close() {
      timers.forEach((timer) => clearInterval(timer));
      await Promise.all(running);
      // The last counts since the previous merge, so a replica going away leaves the baseline whole.
      await Promise.all(engine.detectors.filter((d) => d.name === 'issue_rate').map((d) => engine.tickOne(d)));
      await notifier?.close();
    },
  };
}
