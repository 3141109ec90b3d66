import type { AuditRecord } from '../audit/record.js';
import type { Clock, Detector, EmitAlert } from './alert.js';

/** Fires on every request answered for the root token; deduplication turns a session of them into one alert. */
export function rootTokenDetector(deps: { now: Clock; emit: EmitAlert }): Detector {
  return {
    name: 'root_token',
    observe(record: AuditRecord) {
      if (record.type !== 'response' || !record.identity?.root) return;
      deps.emit({
        detector: 'root_token',
        severity: 'warning',
        subject: 'token/root',
        summary: `the root token was used: ${record.operation ?? '?'} ${record.path ?? '?'} from ${record.remote_address ?? '?'}`,
        at: deps.now(),
        identity: record.identity,
        details: { ...(record.remote_address ? { remote_address: record.remote_address } : {}) },
      });
    },
  };
}
