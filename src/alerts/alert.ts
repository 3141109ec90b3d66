import type { AuditRecord } from '../audit/record.js';

export type DetectorName =
  'denial_burst' | 'login_failures' | 'issue_rate' | 'first_use' | 'root_token' | 'irrevocable' | 'reaper_paused';

/** PagerDuty Events v2's severities, which Slack and the generic body reuse. */
export type Severity = 'info' | 'warning' | 'error' | 'critical';

/** One alert, before deduplication. Every field is safe to log and send: names, counts, addresses, ids. */
export interface Alert {
  detector: DetectorName;
  severity: Severity;
  /** What the alert is about (an identity, a source address, a mount): deduplication is per subject and detector. */
  subject: string;
  summary: string;
  /** When the detector fired, ms since the epoch (the detector's clock). */
  at: number;
  identity?: AuditRecord['identity'];
  details?: Record<string, string | number | boolean>;
}

export type Clock = () => number;
export type EmitAlert = (alert: Alert) => void;

/**
 * A detector reads the audit stream. observe() runs synchronously inside the request's audit
 * write: in-memory work only, anything slower started in the background, never a throw.
 * tick(), when present, is the detector's periodic work (a store flush, a poll): the engine's timer calls it.
 */
export interface Detector {
  readonly name: DetectorName;
  observe(record: AuditRecord): void;
  tick?(): Promise<void>;
  /** Seconds between tick() calls. */
  readonly tickInterval?: number;
}

/** "token/root", "kubernetes/etl": how an identity is named in subjects and summaries. */
export function identityKey(identity: NonNullable<AuditRecord['identity']>): string {
  return identity.root ? 'token/root' : `${identity.auth_mount}/${identity.name}`;
}
