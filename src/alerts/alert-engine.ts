import type { Logger } from 'pino';
import type { AuditRecord } from '../audit/record.js';
import type { Alert, Clock, Detector, EmitAlert } from './alert.js';
import { AlertDedup } from './alert-dedup.js';
import type { AlertsConfig } from './alerts-config.js';
import { mergeBaselines } from './baseline-store.js';
import { denialBurstDetector } from './denial-burst.js';
import { firstUseDetector } from './first-use.js';
import { irrevocableDetector } from './irrevocable.js';
import { IssueRateDetector } from './issue-rate.js';
import { loginFailuresDetector } from './login-failures.js';
import { reaperPausedDetector } from './reaper-paused.js';
import { rootTokenDetector } from './root-token.js';
import { markSeen } from './seen-store.js';
import type { StoreDb } from '../store/query.js';
import type { ReaperPauseStatus } from '../leases/reaper-pause.js';

/** Where an alert goes once deduplicated: the audit log, the metric, the webhook. */
export interface AlertOutputs {
  /** Auditor.event: never throws. */
  audit(alert: Alert): void;
  count(alert: Alert): void;
  notify?(alert: Alert): void;
}

/**
 * Runs the detectors on the audit stream and lets each alert out once per (subject, detector)
 * within the dedup window. observe() is the Auditor's listener: synchronous and cheap.
 */
export class AlertEngine {
  private readonly dedup: AlertDedup;
  readonly detectors: Detector[];

  constructor(
    private readonly deps: {
      now: Clock;
      log: Logger;
      outputs: AlertOutputs;
      dedupWindowSeconds: number;
      /** Made with the engine's emit, so what they find is deduplicated here. */
      detectors: (emit: EmitAlert) => Detector[];
    },
  ) {
    this.dedup = new AlertDedup(deps.dedupWindowSeconds * 1000);
    this.detectors = deps.detectors((alert) => this.emit(alert));
  }

  observe(record: AuditRecord): void {
    // An alert's own audit event must not feed the detectors back.
    if (record.operation === 'alert') return;
    for (const detector of this.detectors) {
      try {
        detector.observe(record);
      } catch (err) {
        this.deps.log.error({ detector: detector.name, err: (err as Error).name }, 'alert detector failed');
      }
    }
  }

  /** Every detector's periodic work; one failing does not stop the others, and none throws. */
  async tick(): Promise<void> {
    await Promise.all(this.detectors.map((detector) => this.tickOne(detector)));
  }

  /** One detector's periodic work; never throws (a failure is logged by code). */
  async tickOne(detector: Detector): Promise<void> {
    try {
      await detector.tick?.();
    } catch (err) {
      this.deps.log.warn(
        { detector: detector.name, code: (err as { code?: unknown }).code ?? (err as Error).name },
        'alert detector tick failed',
      );
    }
  }

  private emit(alert: Alert): void {
    if (!this.dedup.admit(alert.detector, alert.subject, alert.at)) return;
    this.deps.outputs.count(alert);
    this.deps.outputs.audit(alert);
    this.deps.outputs.notify?.(alert);
  }
}

/** The detectors `config` turns on, reading and writing their shared state in `store`. */
export function configuredDetectors(
  config: AlertsConfig['detectors'],
  deps: { now: Clock; log: Logger; store: StoreDb; reaperStatus: () => Promise<ReaperPauseStatus> },
): (emit: EmitAlert) => Detector[] {
  return (emit) => {
    const base = { now: deps.now, emit };
    const on: Detector[] = [];
    const d = config;
    if (d.denial_burst.enabled) on.push(denialBurstDetector(d.denial_burst, base));
    if (d.login_failures.enabled) on.push(loginFailuresDetector(d.login_failures, base));
    if (d.issue_rate.enabled)
      on.push(new IssueRateDetector(d.issue_rate, { ...base, merge: (m) => mergeBaselines(deps.store, m) }));
    if (d.first_use.enabled)
      on.push(firstUseDetector(d.first_use, { ...base, log: deps.log, markSeen: (p) => markSeen(deps.store, p) }));
    if (d.root_token.enabled) on.push(rootTokenDetector(base));
    if (d.irrevocable.enabled) on.push(irrevocableDetector(base));
    if (d.reaper_paused.enabled) on.push(reaperPausedDetector(d.reaper_paused, { ...base, status: deps.reaperStatus }));
    return on;
  };
}
