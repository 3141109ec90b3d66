import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { createServer as createTlsServer } from 'node:tls';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { AuditUnavailable, Auditor } from '../../src/audit/auditor.js';
import { hmacField } from '../../src/audit/hmac.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { webhookSinkSchema } from '../../src/audit/sinks/sink-config.js';
import { WebhookSink } from '../../src/audit/sinks/webhook-sink.js';
import { createLogger } from '../../src/log.js';
import { randomSecret } from '../../src/random.js';
import { api, startTestBroker } from '../support/broker.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';
import { tlsFixture } from '../support/tls.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'audstrm';
const HMAC_KEY = `audit-key-${randomSecret()}`;
const dir = mkdtempSync(join(tmpdir(), 'credbroker-audit-streaming-'));

let storeDb: string;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  storeDb = await freshStoreDatabase('audstrm');
  target = await freshTargetDatabase(PREFIX);
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await dropRolesWithPrefix(PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

async function broker(audit: Record<string, unknown>) {
  const b = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
    audit: { hmac_key: HMAC_KEY, ...audit },
  });
  cleanups.push(() => b.close());
  return b;
}

interface SyslogMessage {
  pri: number;
  version: string;
  appName: string;
  msgId: string;
  record: AuditRecord;
  raw: string;
}

/** Parses one RFC 5424 message whose MSG is a JSON record; throws if it is not one. */
function parseSyslog(raw: string): SyslogMessage {
  const m = /^<(\d{1,3})>(\d) (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) (.*)$/s.exec(raw);
  if (!m) throw new Error(`not an RFC 5424 message: ${raw.slice(0, 80)}`);
  expect(Number.isNaN(Date.parse(m[3]!))).toBe(false);
  return { pri: Number(m[1]), version: m[2]!, appName: m[5]!, msgId: m[7]!, record: JSON.parse(m[9]!), raw };
}

/** A syslog TCP receiver (TLS with `tls`) that splits its stream by RFC 6587 octet counting, strictly. */
async function tcpReceiver(port = 0, tls?: { cert: string; key: string }) {
  const messages: SyslogMessage[] = [];
  const sockets = new Set<Socket>();
  const onConnection = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const space = pending.indexOf(0x20);
        if (space < 0) return;
        const lengthText = pending.subarray(0, space).toString('ascii');
        if (!/^[1-9]\d*$/.test(lengthText)) throw new Error(`bad octet count ${JSON.stringify(lengthText)}`);
        const length = Number(lengthText);
        if (pending.length < space + 1 + length) return;
        messages.push(parseSyslog(pending.subarray(space + 1, space + 1 + length).toString('utf8')));
        pending = pending.subarray(space + 1 + length);
      }
    });
  };
  const server: TcpServer = tls
    ? createTlsServer(tls, onConnection).on('tlsClientError', () => undefined)
    : createTcpServer(onConnection);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  };
  return { messages, port: (server.address() as AddressInfo).port, close };
}

async function udpReceiver() {
  const messages: SyslogMessage[] = [];
  const socket: UdpSocket = createSocket('udp4');
  socket.on('message', (msg) => messages.push(parseSyslog(msg.toString('utf8'))));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => socket.close(() => resolve(undefined))));
  return { messages, port: socket.address().port };
}

/** A webhook receiver; `answer: false` makes it a blackhole that reads the request and never responds. */
async function webhookReceiver(answer = true) {
  const batches: AuditRecord[][] = [];
  const headers: IncomingMessage['headers'][] = [];
  const server: HttpServer = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (!answer) return;
      headers.push(req.headers);
      batches.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  cleanups.push(close);
  return { batches, headers, close, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `count` calls of `work`, `concurrency` at a time. */
async function inParallel<T>(count: number, concurrency: number, work: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await work(i);
      }
    }),
  );
  return results;
}

/** The buffer-depth gauge of one sink, from the broker's Prometheus text. */
async function bufferedRecords(b: { metrics: { render(): Promise<string> } }, sink: string): Promise<number> {
  const line = (await b.metrics.render())
    .split('\n')
    .find((l) => l.startsWith(`credbroker_audit_sink_buffered_records{sink="${sink}"}`));
  if (!line) throw new Error(`no buffer gauge for ${sink}`);
  return Number(line.split(' ').pop());
}

const fileRequestIds = (path: string) =>
  new Set(
    readFileSync(path, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).request_id),
  );

describe('syslog sinks', () => {
  it('a lease request reaches a TCP and a UDP receiver as RFC 5424 messages with the scrubbed record as MSG', async () => {
    const tcp = await tcpReceiver();
    cleanups.push(tcp.close);
    const udp = await udpReceiver();
    const b = await broker({
      syslog: [
        { address: `127.0.0.1:${tcp.port}` },
        { address: `127.0.0.1:${udp.port}`, protocol: 'udp', facility: 'local3', app_name: 'broker-eu1' },
      ],
    });
    const res = await api(b, 'PUT', 'db/creds/reader', {});
    expect(res.status).toBe(200);
    const password: string = res.body.data.password;
    const requestId: string = res.body.request_id;

    for (const [receiver, facility, appName] of [
      [tcp, 4, 'credbroker'],
      [udp, 19, 'broker-eu1'],
    ] as const) {
      const mine = await until('both records of the request', () => {
        const m = receiver.messages.filter((x) => x.record.request_id === requestId);
        return m.length === 2 && m;
      });
      expect(mine.map((m) => m.msgId).sort()).toEqual(['request', 'response']);
      for (const m of mine) {
        expect(m.version).toBe('1');
        expect(m.pri).toBe(facility * 8 + 6);
        expect(m.appName).toBe(appName);
        expect(m.record.type).toBe(m.msgId);
        expect(m.raw).not.toContain(password);
      }
      const response = mine.find((m) => m.msgId === 'response')!.record;
      expect(response.outcome).toBe('ok');
      expect(JSON.stringify(response)).toContain(hmacField(HMAC_KEY, password));
    }

    expect((await api(b, 'GET', 'sys/mounts', undefined, 'not-a-token')).status).toBe(403);
    const denied = await until('the refused request', () => tcp.messages.find((x) => x.record.status === 403));
    // A denial is a notice (severity 5), not informational.
    expect(denied.pri).toBe(4 * 8 + 5);
  });

  it('TLS syslog reaches a receiver whose certificate the configured CA signed, and no other', async () => {
    const tls = await tlsFixture();
    cleanups.push(async () => rmSync(tls.dir, { recursive: true, force: true }));
    const receiver = await tcpReceiver(0, { cert: tls.server.certPem, key: tls.server.keyPem });
    cleanups.push(receiver.close);
    const address = `127.0.0.1:${receiver.port}`;
    const trusting = await broker({ syslog: { address, tls: { ca_file: tls.caFile }, timeout: '1s' } });
    const res = await api(trusting, 'GET', 'sys/mounts');
    expect(res.status).toBe(200);
    await until('the records over TLS', () =>
      receiver.messages.some((m) => m.record.request_id === res.body.request_id),
    );

    // The system's CAs do not know the test CA: the handshake fails and, as the only sink, refuses the request.
    const count = receiver.messages.length;
    const distrusting = await broker({ syslog: { address, tls: {}, timeout: '1s' } });
    expect((await api(distrusting, 'GET', 'sys/mounts')).status).toBe(503);
    expect(receiver.messages.length).toBe(count);
  });

  it('TCP syslog reconnects to a receiver that was down, and later records arrive', async () => {
    const probe = await tcpReceiver();
    const port = probe.port;
    await probe.close();
    const auditPath = join(dir, 'reconnect.jsonl');
    const b = await broker({ file: { path: auditPath }, syslog: { address: `127.0.0.1:${port}`, timeout: '1s' } });

    const whileDown = await inParallel(5, 5, () => api(b, 'GET', 'sys/mounts'));
    expect(whileDown.map((r) => r.status)).toEqual(Array(5).fill(200));
    const sink = `syslog:tcp://127.0.0.1:${port}`;
    expect(await bufferedRecords(b, sink)).toBeGreaterThan(0);

    const receiver = await tcpReceiver(port);
    cleanups.push(receiver.close);
    const later: string[] = [];
    await until(
      'a record sent after the receiver came back',
      () => {
        void api(b, 'GET', 'sys/mounts').then(
          (r) => later.push(r.body.request_id),
          () => undefined,
        );
        return receiver.messages.some((m) => later.includes(m.record.request_id));
      },
      20_000,
    );
    const ids = fileRequestIds(auditPath);
    for (const m of receiver.messages) expect(ids.has(m.record.request_id)).toBe(true);
    // What was held while the receiver was down went out too.
    await until('the buffer to drain', async () => (await bufferedRecords(b, sink)) === 0);
  });
});

describe('webhook sink', () => {
  it('250 requests reach the receiver in fewer POSTs than records, every record exactly once', async () => {
    const receiver = await webhookReceiver();
    const token = `hec-${randomSecret()}`;
    const b = await broker({
      webhook: {
        url: `${receiver.url}/services/collector/raw?channel=${randomSecret()}`,
        headers: { authorization: `Splunk ${token}` },
        batch_size: 100,
        flush_interval: '200ms',
      },
    });
    const results = await inParallel(250, 25, () => api(b, 'GET', 'sys/mounts'));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const ids = results.map((r) => r.body.request_id as string);

    const records = receiver.batches.flat();
    expect(receiver.batches.length).toBeLessThan(records.length);
    expect(Math.max(...receiver.batches.map((batch) => batch.length))).toBeLessThanOrEqual(100);
    const keys = records.map((r) => `${r.request_id}/${r.type}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const id of ids) {
      expect(keys).toContain(`${id}/request`);
      expect(keys).toContain(`${id}/response`);
    }
    expect(receiver.headers.every((h) => h.authorization === `Splunk ${token}`)).toBe(true);
    expect(receiver.headers.every((h) => h['content-type'] === 'application/json')).toBe(true);
  });

  it('a blackholed webhook costs each request at most its own timeout while a file sink accepts', async () => {
    const blackhole = await webhookReceiver(false);
    const auditPath = join(dir, 'blackhole.jsonl');
    const b = await broker({
      file: { path: auditPath },
      webhook: { url: blackhole.url, timeout: '1s', flush_interval: '20ms' },
    });
    const results = await inParallel(50, 10, async () => {
      const started = performance.now();
      const res = await api(b, 'GET', 'sys/mounts');
      return { status: res.status, ms: performance.now() - started, id: res.body.request_id };
    });
    expect(results.map((r) => r.status)).toEqual(Array(50).fill(200));
    // 1 s timeout plus a margin for two shared cores: under 2 s, so a request that waited the timeout
    // twice (once per record) fails, as does the broker-wide 5 s deadline.
    expect(Math.max(...results.map((r) => r.ms))).toBeLessThan(1800);
    const ids = fileRequestIds(auditPath);
    for (const r of results) expect(ids.has(r.id)).toBe(true);
  });

  it('with only a blackholed webhook, a request is refused as audit unavailable within its timeout', async () => {
    const blackhole = await webhookReceiver(false);
    const b = await broker({ webhook: { url: blackhole.url, timeout: '1s', flush_interval: '20ms' } });
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const res = await api(b, 'GET', 'sys/mounts');
      expect(res.status).toBe(503);
      expect(JSON.stringify(res.body.errors)).toMatch(/audit/);
      expect(performance.now() - started).toBeLessThan(2500);
    }
  });

  it('a full buffer refuses new records at once while the held ones wait for the receiver', async () => {
    const blackhole = await webhookReceiver(false);
    const sink = new WebhookSink(
      webhookSinkSchema.parse({ url: blackhole.url, buffer: 3, timeout: '2s', flush_interval: '10ms' }),
    );
    cleanups.push(() => sink.close());
    const record = (i: number): AuditRecord => ({ type: 'event', time: new Date().toISOString(), request_id: `b${i}` });
    const started = performance.now();
    const outcomes = Array.from({ length: 5 }, (_, i) =>
      sink.write(record(i)).then(
        () => ({ ok: true, code: '', ms: performance.now() - started }),
        (err: { code?: string }) => ({ ok: false, code: err.code ?? '', ms: performance.now() - started }),
      ),
    );
    const settled = await Promise.all(outcomes);
    const full = settled.slice(3);
    expect(full.map((o) => o.code)).toEqual(['ERR_SINK_BUFFER_FULL', 'ERR_SINK_BUFFER_FULL']);
    for (const o of full) expect(o.ms).toBeLessThan(500);
    const held = settled.slice(0, 3);
    expect(held.map((o) => o.code)).toEqual(Array(3).fill('ERR_WEBHOOK_TIMEOUT'));
    for (const o of held) expect(o.ms).toBeGreaterThan(1500);
    // Drained: the sink takes records again.
    await expect(sink.write(record(9))).rejects.toMatchObject({ code: 'ERR_WEBHOOK_TIMEOUT' });
  });

  it('a failing webhook is logged by its origin and an error code, never the token in its URL or headers', async () => {
    const probe = await webhookReceiver();
    const closedUrl = probe.url;
    await probe.close();
    const token = randomSecret();
    const lines: string[] = [];
    const log = createLogger(
      'info',
      new Writable({
        write(chunk, _enc, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    );
    const sink = new WebhookSink(
      webhookSinkSchema.parse({
        url: `${closedUrl}/hook?token=${token}`,
        headers: { authorization: `Bearer ${token}` },
        flush_interval: '10ms',
      }),
    );
    const auditor = new Auditor([sink], HMAC_KEY, log);
    await expect(auditor.record({ type: 'event', time: new Date().toISOString(), request_id: 'x' })).rejects.toThrow(
      AuditUnavailable,
    );
    await auditor.close();
    const text = lines.join('');
    expect(text).toContain(`webhook:${closedUrl}`);
    expect(text).toContain('ERR_WEBHOOK_UNREACHABLE');
    expect(text).not.toContain(token);
    expect(text).not.toContain('/hook');
  });
});
