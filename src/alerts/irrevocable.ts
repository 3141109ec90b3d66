import type { AuditRecord } from '../audit/record.js';
import type { Clock, Detector, EmitAlert } from './alert.js';

/** The mount of a lease id `<mount>/creds/<role>/<id>`: many leases of one failing target make one alert. */
const mountOf = (leaseId: string) => leaseId.split('/')[0] || leaseId;

/** Fires when the revoker gives a lease up (its audit event 'irrevocable'): operator action needed. */
export function irrevocableDetector(deps: { now: Clock; emit: EmitAlert }): Detector {
  return {
    name: 'irrevocable',
    observe(record: AuditRecord) {
      if (record.type !== 'event' || record.operation !== 'irrevocable' || !record.lease_id) return;
      const mount = mountOf(record.lease_id);
      deps.emit({
        detector: 'irrevocable',
        severity: 'error',
        subject: mount,
        summary: `lease ${record.lease_id} is irrevocable: its credential may still work; see credbroker leases list --irrevocable`,
        at: deps.now(),
        details: { lease_id: record.lease_id, mount },
      });
    },
  };
}
