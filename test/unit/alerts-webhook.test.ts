import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../src/alerts/alert.js';
import { alertsConfigSchema } from '../../src/alerts/alerts-config.js';
import { WebhookNotifier } from '../../src/alerts/webhook-notifier.js';
import { createLogger } from '../../src/log.js';

const alert = (i: number): Alert => ({
  detector: 'root_token',
  severity: 'warning',
  subject: `s${i}`,
  summary: 'the root token was used',
  at: Date.now(),
});

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

/** A receiver answering with `answer` (or never, when it is null); returns its base URL and what it received. */
async function receiver(answer: number | null) {
  const bodies: unknown[] = [];
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      bodies.push({ path: req.url, headers: req.headers, body: JSON.parse(body) });
      if (answer !== null) res.writeHead(answer).end();
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies };
}

function capturedLog() {
  const lines: string[] = [];
  const log = createLogger(
    'info',
    new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  );
  return { log, lines };
}

const notifier = (url: string, log: ReturnType<typeof createLogger>, extra: Record<string, unknown> = {}) =>
  new WebhookNotifier(alertsConfigSchema.parse({ webhook: { url, timeout: 1, ...extra } }).webhook!, log, 'test');

describe('webhook notifier', () => {
  it('posts JSON with the configured headers; a refusal is logged with the origin only, never the path or a header', async () => {
    const { url, bodies } = await receiver(500);
    const { log, lines } = capturedLog();
    const hook = notifier(`${url}/services/T000/B000/SECRETPATH`, log, {
      headers: { authorization: 'Bearer HEADERSECRET' },
    });
    hook.send(alert(1));
    await hook.close();
    expect(bodies).toEqual([
      expect.objectContaining({
        path: '/services/T000/B000/SECRETPATH',
        headers: expect.objectContaining({ authorization: 'Bearer HEADERSECRET', 'content-type': 'application/json' }),
        body: expect.objectContaining({ detector: 'root_token', subject: 's1' }),
      }),
    ]);
    const text = lines.join('');
    expect(text).toContain('alert webhook refused');
    expect(text).toContain(url);
    expect(text).not.toContain('SECRETPATH');
    expect(text).not.toContain('HEADERSECRET');
  });

  it('a receiver that never answers: each POST gives up at the timeout, the queue stays bounded, close() is bounded', async () => {
    const { url, bodies } = await receiver(null);
    const { log, lines } = capturedLog();
    const hook = notifier(`${url}/hook`, log);
    const started = Date.now();
    for (let i = 0; i < 150; i++) hook.send(alert(i)); // returns at once: fire-and-forget
    expect(Date.now() - started).toBeLessThan(500);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await hook.close();
    expect(Date.now() - started).toBeLessThan(6000);
    expect(lines.filter((l) => l.includes('queue full')).length).toBeGreaterThanOrEqual(49);
    expect(lines.some((l) => l.includes('alert webhook failed') && l.includes('TimeoutError'))).toBe(true);
    expect(bodies.length).toBeLessThanOrEqual(3);
  });
});
