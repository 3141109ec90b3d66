import type { AuditRecord } from '../audit/record.js';
import type { Clock, Detector, EmitAlert } from './alert.js';
import { SlidingCount } from './sliding-count.js';

/**
 * Fires when logins from one remote address fail `threshold` times within `window` seconds.
 * Only the client's failures count (status below 500): a store outage failing every login is
 * not an attack, and the other alerts (metrics, health) cover it.
 */
export function loginFailuresDetector(
  config: { threshold: number; window: number },
  deps: { now: Clock; emit: EmitAlert },
): Detector {
  const counts = new SlidingCount(config.window * 1000, config.threshold);
  return {
    name: 'login_failures',
    observe(record: AuditRecord) {
      if (record.type !== 'response' || record.operation !== 'login') return;
      if (record.outcome !== 'denied' && record.outcome !== 'error') return;
      if ((record.status ?? 0) >= 500 || !record.remote_address) return;
      const subject = record.remote_address;
      const now = deps.now();
      if (counts.add(subject, now) < config.threshold) return;
      counts.reset(subject);
      deps.emit({
        detector: 'login_failures',
        severity: 'warning',
        subject,
        summary: `${config.threshold} failed logins from ${subject} within ${config.window} s (last: ${record.path ?? '?'})`,
        at: now,
        details: { threshold: config.threshold, window_seconds: config.window, remote_address: subject },
      });
    },
  };
}
