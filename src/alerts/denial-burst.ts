import type { AuditRecord } from '../audit/record.js';
import { identityKey, type Clock, type Detector, type EmitAlert } from './alert.js';
import { SlidingCount } from './sliding-count.js';

/** Fires when one identity is refused by policy `threshold` times within `window` seconds. */
export function denialBurstDetector(
  config: { threshold: number; window: number },
  deps: { now: Clock; emit: EmitAlert },
): Detector {
  const counts = new SlidingCount(config.window * 1000, config.threshold);
  return {
    name: 'denial_burst',
    observe(record: AuditRecord) {
      if (record.type !== 'response' || record.outcome !== 'denied' || !record.identity) return;
      const subject = identityKey(record.identity);
      const now = deps.now();
      if (counts.add(subject, now) < config.threshold) return;
      counts.reset(subject);
      deps.emit({
        detector: 'denial_burst',
        severity: 'warning',
        subject,
        summary: `${subject} was denied ${config.threshold} times within ${config.window} s (last: ${record.operation ?? '?'} ${record.path ?? '?'})`,
        at: now,
        identity: record.identity,
        details: { threshold: config.threshold, window_seconds: config.window },
      });
    },
  };
}
