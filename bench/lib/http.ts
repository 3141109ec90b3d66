import http from 'node:http';
import { ROOT_TOKEN } from './cluster.js';

export interface HttpReply {
  status: number;
  body: any;
  /** The broker's own time for this request (Server-Timing `broker`), in ms. */
  brokerMs: number;
}

/** A keep-alive client with at most `sockets` connections, as a fleet of pods would present. */
export function httpClient(baseUrl: string, sockets: number, token: string = ROOT_TOKEN) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: sockets });
  const url = new URL(baseUrl);
  const request = (method: string, path: string, body?: unknown): Promise<HttpReply> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
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
    close: () => agent.destroy(),
  };
}
