import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { Broker, BrokerApiError, IDEMPOTENCY_HEADER } from '../../src/sdk/index.js';

/** A stand-in broker over real HTTP: records every request, answers from `replies` in turn, then 200. */
interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}
const seen: Seen[] = [];
let replies: number[] = [];
let server: http.Server;
let addr: string;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c) => (text += c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: text ? JSON.parse(text) : null });
      const status = replies.shift() ?? 200;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(
          status === 200
            ? {
                lease_id: 'db/creds/r/abc',
                lease_duration: 60,
                renewable: true,
                data: { username: 'u', password: 'p' },
              }
            : { errors: [`status ${status}`] },
        ),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  addr = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

beforeEach(() => {
  seen.length = 0;
  replies = [];
});

const broker = () => new Broker({ addr, token: 'tok-123', env: {}, retry: { attempts: 4, baseMs: 1, maxMs: 2 } });

it('sends the token, the ttl and, when the caller gives one, the idempotency key', async () => {
  const b = broker();
  await b.lease('db/creds/r', { ttl: '15m', idempotencyKey: 'pod-7f3/reader', autoRenew: false });
  await b.lease('db/creds/r', { autoRenew: false });
  expect(seen.map((s) => [s.method, s.url])).toEqual([
    ['PUT', '/v1/db/creds/r'],
    ['PUT', '/v1/db/creds/r'],
  ]);
  expect(seen[0]!.headers['x-vault-token']).toBe('tok-123');
  expect(seen[0]!.headers[IDEMPOTENCY_HEADER.toLowerCase()]).toBe('pod-7f3/reader');
  expect(seen[0]!.body).toEqual({ ttl: '15m' });
  expect(seen[1]!.headers[IDEMPOTENCY_HEADER.toLowerCase()]).toBeUndefined();
  await b.close();
});

it('retries a 502/503 with the same key and body until the broker answers; a 4xx is sent once', async () => {
  const b = broker();
  replies = [503, 502];
  const lease = await b.lease('db/creds/r', { idempotencyKey: 'k1', autoRenew: false });
  expect(lease.id).toBe('db/creds/r/abc');
  expect(seen).toHaveLength(3);
  expect(new Set(seen.map((s) => s.headers[IDEMPOTENCY_HEADER.toLowerCase()]))).toEqual(new Set(['k1']));
  seen.length = 0;
  replies = [429];
  await expect(b.lease('db/creds/r', { autoRenew: false })).rejects.toBeInstanceOf(BrokerApiError);
  expect(seen).toHaveLength(1);
  await b.close();
});
