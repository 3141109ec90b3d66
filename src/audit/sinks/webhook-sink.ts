import type { AuditRecord } from '../record.js';
import type { AuditSink } from '../sinks.js';
import { SinkBuffer, type BufferedEntry } from './sink-buffer.js';
import type { WebhookSinkConfig } from './sink-config.js';
import { SinkWriteError, closed } from './sink-errors.js';

interface Entry extends BufferedEntry {
  readonly json: string;
}

/** What went wrong with a batch, as a code: never the URL (it may carry a token) nor the answer's body. */
function batchFailure(name: string, err: unknown): SinkWriteError {
  if (err instanceof SinkWriteError) return err;
  const errName = (err as { name?: unknown } | null)?.name;
  if (errName === 'TimeoutError' || errName === 'AbortError')
    return new SinkWriteError('ERR_WEBHOOK_TIMEOUT', `${name} did not answer in time`);
  return new SinkWriteError('ERR_WEBHOOK_UNREACHABLE', `${name} could not be reached`);
}

/**
 * POSTs a JSON array of records per batch. A batch leaves when it holds `batch_size` records or
 * `flush_interval` after its first record came, whichever is first; it is accepted on any 2xx and
 * each write resolves then, or rejects with the batch when it fails or times out (no retry: the
 * Auditor has counted the failure, and another sink holds the record). A request waits for its
 * batch, so `flush_interval` is latency added to every request while this sink is configured.
 */
export class WebhookSink implements AuditSink {
  readonly name: string;
  readonly timeoutMs: number;
  private readonly buffer: SinkBuffer<Entry>;
  private queued: Entry[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly aborted = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly config: WebhookSinkConfig) {
    this.name = `webhook:${new URL(config.url).origin}`;
    this.timeoutMs = config.timeout;
    this.buffer = new SinkBuffer(this.name, config.buffer, config.timeout);
  }

  get buffered(): number {
    return this.buffer.size;
  }

  write(record: AuditRecord): Promise<void> {
    if (this.aborted.signal.aborted) return Promise.reject(closed(this.name));
    const json = JSON.stringify(record);
    return new Promise<void>((resolve, reject) => {
      const entry: Entry = { json, queuedAt: performance.now(), resolve, reject };
      this.buffer.admit(entry);
      this.queued.push(entry);
      if (this.queued.length >= this.config.batch_size) this.flush();
      else if (!this.flushTimer) {
        this.flushTimer = setTimeout(() => this.flush(), this.config.flush_interval);
        this.flushTimer.unref();
      }
    });
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    while (this.queued.length > 0) {
      const batch = this.queued.splice(0, this.config.batch_size);
      const post = this.post(batch).finally(() => this.inFlight.delete(post));
      this.inFlight.add(post);
    }
  }

  private async post(batch: Entry[]): Promise<void> {
    try {
      const res = await fetch(this.config.url, {
        method: 'POST',
        headers: { ...this.config.headers, 'content-type': 'application/json' },
        body: `[${batch.map((e) => e.json).join(',')}]`,
        // A redirect would send the records, and the headers' token, wherever the receiver says.
        redirect: 'error',
        signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.aborted.signal]),
      });
      // Read to the end so the connection goes back to the pool.
      await res.arrayBuffer();
      if (!res.ok) throw new SinkWriteError(`ERR_WEBHOOK_STATUS_${res.status}`, `${this.name} answered ${res.status}`);
      for (const entry of batch) this.buffer.accept(entry);
    } catch (err) {
      const failure = batchFailure(this.name, err);
      for (const entry of batch) this.buffer.fail(entry, failure);
    }
  }

  /** Sends what is queued, waits up to the timeout for batches in flight, then refuses what is left. */
  async close(): Promise<void> {
    this.flush();
    const timer = new Promise((resolve) => setTimeout(resolve, this.timeoutMs).unref());
    await Promise.race([Promise.allSettled([...this.inFlight]), timer]);
    this.aborted.abort();
    this.buffer.failAll(closed(this.name));
  }
}
