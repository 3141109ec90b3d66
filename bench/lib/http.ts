import http from 'node:http';
import https from 'node:https';
import { ROOT_TOKEN } from './cluster.js';

export interface HttpReply {
  status: number;
  body: any;
  /** The broker's own time for this request (Server-Timing `broker`), in ms. */
  brokerMs: number;
}

/**
 * A keep-alive client with at most `sockets` connections, as a fleet of pods would present; over
 * https when the URL says so, trusting `ca`. `connections()` counts the connections (so TLS
 * handshakes) it opened.
 */
export function httpClient(baseUrl: string, sockets: number, token: string = ROOT_TOKEN, ca?: string) {
  const url = new URL(baseUrl);
  const secure = url.protocol === 'https:';
  const agent = secure
    ? new https.Agent({ keepAlive: true, maxSockets: sockets, ca })
    : new http.Agent({ keepAlive: true, maxSockets: sockets });
  const opened = new WeakSet<object>();
  let connections = 0;
  const request = (method: string, path: string, body?: unknown): Promise<HttpReply> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = (secure ? https : http).request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          method,
          path: `/v1/${path}`,
          headers: {
            'x-vault-token': token,
            ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            const timing = String(res.headers['server-timing'] ?? '');
            resolve({
              status: res.statusCode!,
              body: text ? JSON.parse(text) : null,
              brokerMs: Number(/broker;dur=([\d.]+)/.exec(timing)?.[1] ?? NaN),
            });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.on('socket', (socket) => {
        if (opened.has(socket)) return;
        opened.add(socket);
        connections++;
      });
      req.end(payload);
    });
  return {
    request,
    /** Issue one lease; throws unless 200. */
    async issue(mountRole: string, ttl?: string): Promise<HttpReply> {
      const [mount, role] = mountRole.split('/');
      const reply = await request('PUT', `${mount}/creds/${role}`, ttl ? { ttl } : {});
      if (reply.status !== 200) throw new Error(`HTTP ${reply.status}: ${JSON.stringify(reply.body)}`);
      return reply;
    },
    connections: () => connections,
    close: () => agent.destroy(),
  };
}
