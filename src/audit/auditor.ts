import type pg from 'pg';
import type { Logger } from 'pino';
import { z } from 'zod';
import { BrokerError, ConfigError, type ErrorCode } from '../errors.js';
import { hmacField } from './hmac.js';
import { DEFAULT_AUDIT_FIELDS, capRecord, scrubRecord, type AuditFields, type AuditRecord } from './record.js';
import { FileSink, PostgresSink, StdoutSink, type AuditSink } from './sinks.js';
import { oneOrMany, syslogSinkSchema, webhookSinkSchema } from './sinks/sink-config.js';
import { SyslogTcpSink } from './sinks/syslog-tcp-sink.js';
import { SyslogUdpSink } from './sinks/syslog-udp-sink.js';
import { WebhookSink } from './sinks/webhook-sink.js';
import { auditRetentionSchema } from '../store/retention.js';

/** No audit sink accepted the record, so the request it describes must not go ahead. */
export class AuditUnavailable extends BrokerError {
  static override readonly code: ErrorCode = 'ERR_AUDIT_UNAVAILABLE';
  constructor(options?: { cause?: unknown }) {
    super('audit log unavailable: request refused', options);
  }
}

/**
 * Where each sink write's time and outcome go: the broker's metrics, named by this narrow shape
 * because config/schema.ts imports this module (importing metrics here would make a cycle).
 */
export interface SinkWriteObserver {
  auditSinkWrite(sink: string, seconds: number, ok: boolean): void;
  /** Reads the streaming sinks' buffer depths at each scrape. */
  watchAuditBuffers?(read: () => { sink: string; records: number }[]): void;
}

export const auditConfigSchema = z
  .object({
    /** A secret: in a config file it is a ${env:} or ${file:} ref. */
    hmac_key: z.string().min(32, 'must be at least 32 characters'),
    file: z
      .object({ path: z.string().min(1) })
      .strict()
      .optional(),
    stdout: z.boolean().optional(),
    postgres: z.boolean().optional(),
    /** RFC 5424 over TCP or UDP: one receiver or a list. */
    syslog: oneOrMany(syslogSinkSchema).optional(),
    /** Batches of records POSTed as a JSON array: one endpoint or a list. */
    webhook: oneOrMany(webhookSinkSchema).optional(),
    retention: auditRetentionSchema,
  })
  .strict()
  .refine(
    (audit) =>
      audit.file !== undefined ||
      audit.stdout === true ||
      audit.postgres === true ||
      audit.syslog !== undefined ||
      audit.webhook !== undefined,
    { message: 'configure at least one sink: file, stdout, postgres, syslog or webhook' },
  );

export type AuditConfig = z.infer<typeof auditConfigSchema>;

/** The code of a sink failure, for the log: never its message, which may quote part of the record. */
const errorCode = (err: unknown): string => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code ? code : err instanceof Error ? err.name : typeof err;
};

/** A sink that neither accepts nor refuses within this counts as failed: a hung sink must not hang requests. */
const SINK_DEADLINE_MS = 5000;

function withinDeadline<T>(work: Promise<T>, ms: number, name: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error(`${name} did not answer within ${ms} ms`), { code: 'ETIMEDOUT' })),
      ms,
    );
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** Scrubs records and hands them to every sink; fails closed when none accepts. */
export class Auditor {
  private readonly listeners: ((record: AuditRecord) => void)[] = [];

  constructor(
    private readonly sinks: AuditSink[],
    private readonly hmacKey: string,
    private readonly log: Logger,
    private readonly sinkDeadlineMs = SINK_DEADLINE_MS,
    /** Which data keys stay plain: derived from the engines the broker runs. */
    private readonly fields: AuditFields = DEFAULT_AUDIT_FIELDS,
    private readonly metrics?: SinkWriteObserver,
  ) {
    if (sinks.length > 0 && !hmacKey) throw new ConfigError('audit: an hmac_key is required');
  }

  /**
   * Scrubs, caps at MAX_RECORD_BYTES, then writes to every sink in parallel and waits for all of them; resolves if at least
   * one accepted, else throws AuditUnavailable. Each failing sink is logged by name and error code.
   * With no sinks at all, auditing is off and this resolves.
   */
  async record(record: AuditRecord): Promise<void> {
    if (this.sinks.length === 0) return;
    const line = capRecord(scrubRecord(record, this.hmacKey, this.fields));
    const results = await Promise.allSettled(this.sinks.map((sink) => this.timedWrite(sink, line)));
    const failures: unknown[] = [];
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') return;
      failures.push(result.reason);
      this.log.error({ sink: this.sinks[i]!.name, code: errorCode(result.reason) }, 'audit sink failed to write');
    });
    if (failures.length === this.sinks.length) throw new AuditUnavailable({ cause: failures[0] });
    this.notify(line);
  }

  /**
   * Calls `listener` with every record a sink accepted, scrubbed as the sinks got it, synchronously
   * inside record(): a listener must only do in-memory work and never throw (a throw is logged).
   */
  subscribe(listener: (record: AuditRecord) => void): void {
    this.listeners.push(listener);
  }

  private notify(line: AuditRecord): void {
    for (const listener of this.listeners) {
      try {
        listener(line);
      } catch (err) {
        this.log.error({ code: errorCode(err) }, 'audit listener failed');
      }
    }
  }

  private async timedWrite(sink: AuditSink, line: Parameters<AuditSink['write']>[0]): Promise<void> {
    const started = performance.now();
    let ok = false;
    try {
      await withinDeadline(sink.write(line), sink.timeoutMs ?? this.sinkDeadlineMs, sink.name);
      ok = true;
    } finally {
      this.metrics?.auditSinkWrite(sink.name, (performance.now() - started) / 1000, ok);
    }
  }

  /** How many records each streaming sink holds that its receiver has not accepted yet. */
  bufferDepths(): { sink: string; records: number }[] {
    return this.sinks.flatMap((sink) =>
      sink.buffered === undefined ? [] : [{ sink: sink.name, records: sink.buffered }],
    );
  }

  /** Like record(), for engine events (the reaper's revocations) no request waits on: never throws. */
  async event(event: Omit<AuditRecord, 'type' | 'time'> & { operation: string }): Promise<void> {
    try {
      await this.record({ ...event, type: 'event', time: new Date().toISOString() });
    } catch (err) {
      this.log.error({ operation: event.operation, code: errorCode(err) }, 'audit event not recorded');
    }
  }

  /** hmacField with the configured key: what a secret looks like in the audit log. */
  hash(value: string): string {
    if (!this.hmacKey) throw new ConfigError('audit is not configured: no audit.hmac_key');
    return hmacField(this.hmacKey, value);
  }

  /** Reopens every file sink, after log rotation. A sink that cannot reopen is logged; its next writes retry. */
  async reopen(): Promise<void> {
    const files = this.sinks.filter((sink): sink is FileSink => sink instanceof FileSink);
    await this.settleLogging(files, (sink) => sink.reopen(), 'audit sink failed to reopen');
  }

  async close(): Promise<void> {
    await this.settleLogging(this.sinks, (sink) => sink.close(), 'audit sink failed to close');
  }

  private async settleLogging<S extends AuditSink>(
    sinks: S[],
    work: (sink: S) => Promise<void>,
    message: string,
  ): Promise<void> {
    const results = await Promise.allSettled(sinks.map(work));
    results.forEach((result, i) => {
      if (result.status === 'rejected')
        this.log.error({ sink: sinks[i]!.name, code: errorCode(result.reason) }, message);
    });
  }
}

/** The auditor a config asks for; without an `audit` section, one that records nothing. */
export function createAuditor(
  config: AuditConfig | undefined,
  deps: { storePool: pg.Pool; log: Logger; fields?: AuditFields; metrics?: SinkWriteObserver },
): Auditor {
  if (!config) return new Auditor([], '', deps.log);
  const sinks: AuditSink[] = [];
  if (config.file) sinks.push(new FileSink(config.file.path));
  if (config.stdout) sinks.push(new StdoutSink());
  if (config.postgres) sinks.push(new PostgresSink(deps.storePool));
  for (const syslog of config.syslog ?? [])
    sinks.push(syslog.protocol === 'udp' ? new SyslogUdpSink(syslog) : new SyslogTcpSink(syslog));
  for (const webhook of config.webhook ?? []) sinks.push(new WebhookSink(webhook));
  const auditor = new Auditor(sinks, config.hmac_key, deps.log, SINK_DEADLINE_MS, deps.fields, deps.metrics);
  deps.metrics?.watchAuditBuffers?.(() => auditor.bufferDepths());
  return auditor;
}
