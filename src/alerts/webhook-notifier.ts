import type { Logger } from 'pino';
import type { Alert } from './alert.js';
import type { WebhookConfig } from './alerts-config.js';
import { webhookPayload } from './webhook-payload.js';

/** Alerts waiting to be sent; past this new ones are dropped (and logged): a dead receiver must not grow memory. */
const MAX_QUEUED = 100;

/**
 * Sends alerts to one webhook, one at a time, each POST bounded by the configured timeout.
 * send() never waits and never throws. A failure is logged with the receiver's origin only:
 * the rest of a webhook URL (Slack's path) and its headers are credentials.
 */
export class WebhookNotifier {
  private readonly queue: Alert[] = [];
  private draining: Promise<void> | undefined;
  private readonly origin: string;
  private closed = false;

  constructor(
    private readonly config: WebhookConfig,
    private readonly log: Logger,
    private readonly source: string,
  ) {
    this.origin = new URL(config.url).origin;
  }

  send(alert: Alert): void {
    if (this.closed) return;
    if (this.queue.length >= MAX_QUEUED) {
      this.log.warn({ webhook: this.origin, detector: alert.detector }, 'alert webhook queue full: alert dropped');
      return;
    }
    this.queue.push(alert);
    this.draining ??= this.drain().finally(() => (this.draining = undefined));
  }

  private async drain(): Promise<void> {
    for (let alert = this.queue.shift(); alert; alert = this.queue.shift()) await this.post(alert);
  }

  private async post(alert: Alert): Promise<void> {
    const body = webhookPayload(alert, this.config.format, this.source, this.config.routing_key);
    try {
      const res = await fetch(this.config.url, {
        method: 'POST',
        headers: { ...this.config.headers, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.config.timeout * 1000),
        redirect: 'manual',
      });
      await res.body?.cancel();
      if (res.status >= 300)
        this.log.warn({ webhook: this.origin, status: res.status, detector: alert.detector }, 'alert webhook refused');
    } catch (err) {
      this.log.warn(
        { webhook: this.origin, code: (err as { name?: string }).name ?? 'Error', detector: alert.detector },
        'alert webhook failed',
      );
    }
  }

  /** Stops taking alerts and gives the queued ones one timeout to go out; the rest are dropped. */
  async close(): Promise<void> {
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.draining,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, this.config.timeout * 1000))),
    ]);
    clearTimeout(timer);
    this.queue.length = 0;
  }
}
