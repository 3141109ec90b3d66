import http from 'node:http';
import net from 'node:net';
import nodeVault from 'node-vault';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { acceptListMethod } from '../../src/api/list-method.js';
import { api, ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';
import { RawConnection, rawRequest, type RawResponse } from '../support/raw-http.js';
import { waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'lcklist';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;
let storeDb: string;
const open: RawConnection[] = [];

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('lcklist');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      reader: { member_of: [target.group], default_ttl: '600s', max_ttl: '3600s' },
      other: { member_of: [target.group], default_ttl: '600s', max_ttl: '3600s' },
      ...Object.fromEntries(
        ['vault', 'vaultp', 'minted', 'l0', 'l1', 'l2', 'l3'].map((r) => [
          r,
          { member_of: [target.group], default_ttl: '600s', max_ttl: '3600s' },
        ]),
      ),
    },
  });
});

afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

async function connect(): Promise<RawConnection> {
  const c = await RawConnection.open(broker.url);
  open.push(c);
  return c;
}

async function issue(role: string): Promise<string> {
  const res = await api(broker, 'PUT', `db/creds/${role}`, {});
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.lease_id;
}

const leaseCount = async () =>
  Number((await adminQuery<{ n: string }>(storeDb, 'SELECT count(*) AS n FROM credbroker_leases'))[0]!.n);
const liveKeys = async (role: string) =>
  (
    await adminQuery<{ id: string }>(
      storeDb,
      `SELECT id FROM credbroker_leases WHERE id LIKE $1 AND state IN ('pending', 'active') ORDER BY id`,
      [`db/creds/${role}/%`],
    )
  ).map((r) => r.id.slice(`db/creds/${role}/`.length));

function expectKeptAlive(res: RawResponse) {
  expect(res.headers['connection']?.toLowerCase()).not.toBe('close');
}

/**
 * LIST, revoke, LIST, issue on one connection. Returns the requests and a checker for their answers,
 * given the lease the revoke targets (live before, gone after).
 */
async function fourRequests() {
  await issue('reader'); // stays live, so the second LIST has an answer
  const revokeMe = await issue('reader');
  const keysBefore = await liveKeys('reader');
  const listPath = '/v1/sys/leases/lookup/db/creds/reader/';
  // The revoke's body carries the bytes of a LIST request line: only request lines may be rewritten.
  const revokeBody = JSON.stringify({ lease_id: revokeMe, note: `LIST ${listPath} HTTP/1.1\r\n` });
  const requests = [
    rawRequest('LIST', listPath, { token: ROOT_TOKEN }),
    rawRequest('PUT', '/v1/sys/leases/revoke', { token: ROOT_TOKEN, body: revokeBody }),
    rawRequest('LIST', listPath, { token: ROOT_TOKEN }),
    rawRequest('GET', '/v1/db/creds/reader', { token: ROOT_TOKEN }),
  ];
  const check = async (answers: RawResponse[], leasesBefore: number) => {
    const [list1, revoke, list2, creds] = answers as [RawResponse, RawResponse, RawResponse, RawResponse];
    expect(list1.status, list1.text).toBe(200);
    expect(list1.body.data.keys).toEqual(keysBefore);
    expect(revoke.status, revoke.text).toBe(204);
    expect(list2.status, list2.text).toBe(200);
    expect(list2.body.data.keys).toEqual(keysBefore.filter((k) => `db/creds/reader/${k}` !== revokeMe));
    expect(creds.status, creds.text).toBe(200);
    expect(creds.body.lease_id).toMatch(/^db\/creds\/reader\//);
    for (const a of answers) expectKeptAlive(a);
    // Exactly one lease more than before (the one the client received), and the revoke happened.
    expect(await leaseCount()).toBe(leasesBefore + 1);
    const rows = await adminQuery(storeDb, 'SELECT id, state FROM credbroker_leases WHERE id = ANY($1)', [
      [revokeMe, creds.body.lease_id],
    ]);
    expect(Object.fromEntries(rows.map((r) => [r.id, r.state]))).toEqual({
      [revokeMe]: 'revoked',
      [creds.body.lease_id]: 'active',
    });
  };
  return { requests, check };
}

describe('LIST on a kept-alive connection', () => {
  it('answers LIST, PUT, LIST, GET sent one after another on one connection, and keeps it open', async () => {
    const { requests, check } = await fourRequests();
    const before = await leaseCount();
    const c = await connect();
    const answers: RawResponse[] = [];
    for (const req of requests) {
      await c.write(req);
      answers.push(await c.read());
    }
    await check(answers, before);
    expect(await c.quietAndOpen()).toBe(true);
  });

  it('answers the same four requests pipelined in one write', async () => {
    const { requests, check } = await fourRequests();
    const before = await leaseCount();
    const c = await connect();
    await c.write(requests.join(''));
    const answers: RawResponse[] = [];
    for (let i = 0; i < requests.length; i++) answers.push(await c.read());
    await check(answers, before);
    expect(await c.quietAndOpen()).toBe(true);
  });

  it('answers the four requests pipelined and split across TCP writes at every awkward place', async () => {
    const { requests, check } = await fourRequests();
    const before = await leaseCount();
    const bytes = requests.join('');
    // Split inside "LIST", right after it, inside the request line, inside the headers and inside the body.
    const splits = [
      2,
      4,
      5,
      20,
      requests[0]!.length - 1,
      requests[0]!.length + 3,
      requests[0]!.length + requests[1]!.length - 10,
      requests[0]!.length + requests[1]!.length + 1,
    ];
    const c = await connect();
    await c.write(bytes, splits);
    const answers: RawResponse[] = [];
    for (let i = 0; i < requests.length; i++) answers.push(await c.read());
    await check(answers, before);
  });

  it('rewrites LIST only at a request line: chunked bodies holding "LIST " are left alone', async () => {
    const reader = await issue('reader');
    const c = await connect();
    const body = [
      `{"lease_id":"${reader}",`,
      `"note":"\\r\\nLIST /v1/sys/leases/lookup/db/creds/ HTTP/1.1\\r\\n", `,
      '"x":"LIST "}',
    ];
    await c.write(
      rawRequest('PUT', '/v1/sys/leases/lookup', { token: ROOT_TOKEN, chunked: body }) +
        rawRequest('LIST', '/v1/sys/leases/lookup/db/creds/', { token: ROOT_TOKEN }),
      [30, 200, 260],
    );
    const lookup = await c.read();
    expect(lookup.status, lookup.text).toBe(200);
    expect(lookup.body.data.id).toBe(reader);
    const list = await c.read();
    expect(list.status, list.text).toBe(200);
    expect(list.body.data.keys).toContain('reader/');
    expect(await c.quietAndOpen()).toBe(true);
  });

  it('answers a hundred LISTs in a row on one connection, each with its own answer', async () => {
    const keys = { reader: await liveKeys('reader'), other: [] as string[] };
    await issue('other');
    keys.other = await liveKeys('other');
    const c = await connect();
    for (let i = 0; i < 100; i++) {
      const role = i % 3 === 0 ? 'other' : 'reader';
      await c.write(rawRequest('LIST', `/v1/sys/leases/lookup/db/creds/${role}/`, { token: ROOT_TOKEN }));
      const res = await c.read();
      expect(res.status, `request ${i}: ${res.text}`).toBe(200);
      expect(res.body.data.keys, `request ${i}`).toEqual(keys[role]);
      expectKeptAlive(res);
    }
  });

  it('treats LIST with a query of its own as LIST', async () => {
    const c = await connect();
    await c.write(rawRequest('LIST', '/v1/sys/leases/lookup/db/creds/?list=true', { token: ROOT_TOKEN }));
    const res = await c.read();
    expect(res.status, res.text).toBe(200);
    expect(res.body.data.keys).toContain('reader/');
  });
});

/** A TCP relay in front of the broker that counts the connections a client opens through it. */
async function countingRelay(): Promise<{ url: string; connections: () => number; close: () => Promise<void> }> {
  const { hostname, port } = new URL(broker.url);
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const relay = net.createServer((client) => {
    connections++;
    const upstream = net.connect({ host: hostname, port: Number(port) });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(relay.address() as net.AddressInfo).port}`,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        relay.close(() => resolve());
      }),
  };
}

describe('a real Vault client (node-vault) over its default kept-alive agent', () => {
  it('drives creds → list → lookup → renew → revoke → revoke-prefix on one kept-alive connection', async () => {
    // node-vault sends through axios with no agent of its own, so Node's global agent, which keeps
    // connections alive by default since Node 19. Checked here, and by counting connections below.
    expect((http.globalAgent as http.Agent & { keepAlive?: boolean }).keepAlive).toBe(true);
    const relay = await countingRelay();
    try {
      const vault = nodeVault({ endpoint: relay.url, token: ROOT_TOKEN });
      const creds = await vault.read('db/creds/vault');
      expect(creds.lease_id).toMatch(/^db\/creds\/vault\//);
      expect(await roleExists(creds.data.username)).toBe(true);
      const second = await vault.read('db/creds/vaultp');

      const listed = await vault.list('sys/leases/lookup/db/creds/vault/');
      expect(listed.data.keys).toEqual([creds.lease_id.slice('db/creds/vault/'.length)]);
      const roles = await vault.list('sys/leases/lookup/db/creds/');
      expect(roles.data.keys).toEqual(expect.arrayContaining(['vault/', 'vaultp/']));

      const lookup = await vault.write('sys/leases/lookup', { lease_id: creds.lease_id });
      expect(lookup.data.id).toBe(creds.lease_id);

      const renewed = await vault.renew({ lease_id: creds.lease_id, increment: 120 });
      expect(renewed.lease_id).toBe(creds.lease_id);
      expect(renewed.lease_duration).toBe(120);

      await vault.revoke({ lease_id: creds.lease_id });
      expect(await roleExists(creds.data.username)).toBe(false);
      await expect(vault.list('sys/leases/lookup/db/creds/vault/')).rejects.toMatchObject({
        response: { statusCode: 404 },
      });

      // node-vault's revokePrefix() calls the pre-0.9 path sys/revoke-prefix; the generic write calls today's.
      await vault.write('sys/leases/revoke-prefix/db/creds/vaultp', {});
      expect(await roleExists(second.data.username)).toBe(false);
      const states = await adminQuery(storeDb, 'SELECT state FROM credbroker_leases WHERE id = ANY($1)', [
        [creds.lease_id, second.lease_id],
      ]);
      expect(states.map((r) => r.state)).toEqual(['revoked', 'revoked']);

      // Every call above, LISTs among them, went over the one connection the agent kept alive.
      expect(relay.connections()).toBe(1);
    } finally {
      await relay.close();
    }
  });
});

describe('1,000 random LIST / PUT / GET requests over 8 kept-alive connections', () => {
  it('gives every request its own right answer, pipelined and split at random, with no connection closed', async () => {
    // A tiny seeded generator, so a failure can be replayed from the seed in the message.
    const seed = (Date.now() % 100_000) + 1;
    let state = seed;
    const rand = (n: number) => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) % n;
    };
    const listed = ['l0', 'l1', 'l2', 'l3'];
    const keys: Record<string, string[]> = {};
    const ids: string[] = [];
    for (const role of listed) {
      for (let i = 0; i <= listed.indexOf(role); i++) ids.push(await issue(role));
      keys[role] = await liveKeys(role);
    }
    const leasesBefore = await leaseCount();
    const minted: string[] = [];

    type Expect = (res: RawResponse) => void;
    const next = (): { bytes: string; check: Expect } => {
      const kind = rand(20);
      if (kind < 8) {
        const role = listed[rand(listed.length)]!;
        return {
          bytes: rawRequest('LIST', `/v1/sys/leases/lookup/db/creds/${role}/`, { token: ROOT_TOKEN }),
          check: (res) => {
            expect(res.status, res.text).toBe(200);
            expect(res.body.data.keys).toEqual(keys[role]);
          },
        };
      }
      if (kind < 14) {
        const id = ids[rand(ids.length)]!;
        const body = JSON.stringify({ lease_id: id, note: `LIST /v1/sys/leases/lookup/db/creds/l0/ HTTP/1.1\r\n\r\n` });
        const chunked = rand(2) === 0;
        const cut = rand(body.length - 1) + 1;
        return {
          bytes: rawRequest('PUT', '/v1/sys/leases/lookup', {
            token: ROOT_TOKEN,
            ...(chunked ? { chunked: [body.slice(0, cut), body.slice(cut)] } : { body }),
          }),
          check: (res) => {
            expect(res.status, res.text).toBe(200);
            expect(res.body.data.id).toBe(id);
          },
        };
      }
      if (kind < 19) {
        // Each health answer is told apart by the status it was asked to answer with.
        const codes = [200, 201, 202, 203, 206, 207, 208, 226, 250, 299];
        const code = codes[rand(codes.length)]!;
        return {
          bytes: rawRequest('GET', `/v1/sys/health?activecode=${code}`),
          check: (res) => {
            expect(res.status, res.text).toBe(code);
            expect(res.body.initialized).toBe(true);
          },
        };
      }
      return {
        bytes: rawRequest('GET', '/v1/db/creds/minted', { token: ROOT_TOKEN }),
        check: (res) => {
          expect(res.status, res.text).toBe(200);
          expect(res.body.lease_id).toMatch(/^db\/creds\/minted\//);
          minted.push(res.body.lease_id);
        },
      };
    };

    const TOTAL = 1000;
    let sent = 0;
    let checked = 0;
    const connections = await Promise.all(Array.from({ length: 8 }, () => connect()));
    await Promise.all(
      connections.map(async (c, n) => {
        while (sent < TOTAL) {
          const batch = Array.from({ length: Math.min(1 + rand(4), TOTAL - sent) }, next);
          sent += batch.length;
          const bytes = batch.map((b) => b.bytes).join('');
          await c.write(bytes, rand(2) === 0 ? [] : [rand(bytes.length), rand(bytes.length)]);
          for (const [i, b] of batch.entries()) {
            const res = await c.read();
            try {
              b.check(res);
              expect(res.headers['connection']?.toLowerCase()).not.toBe('close');
            } catch (err) {
              throw new Error(
                `seed ${seed}, connection ${n}, request ${i + 1} of a batch of ${batch.length}: ${(err as Error).message}`,
              );
            }
            checked++;
          }
        }
      }),
    );
    expect(checked).toBe(TOTAL);
    for (const c of connections) expect(c.ended).toBe(false);
    // No lease was made that its client did not receive.
    expect(await leaseCount()).toBe(leasesBefore + minted.length);
  });
});

describe('the socket the HTTP server is handed', () => {
  it("keeps the server's keep-alive timeout, the client's address, and a close that ends idle connections", async () => {
    const seen: Array<{ method: string; url: string; remote: string | undefined }> = [];
    const server = http.createServer((req, res) => {
      seen.push({ method: req.method!, url: req.url!, remote: req.socket.remoteAddress });
      res.end('ok');
    });
    server.keepAliveTimeout = 300;
    acceptListMethod(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    try {
      const idle = await RawConnection.open(url);
      open.push(idle);
      await idle.write(rawRequest('LIST', '/a/'));
      expect((await idle.read()).status).toBe(200);
      expect(seen).toEqual([{ method: 'GET', url: '/a/?list=true', remote: '127.0.0.1' }]);
      // Idle past keepAliveTimeout: the server closes it, as it would a plain socket.
      const started = Date.now();
      await waitUntil(() => idle.ended, {
        timeoutMs: 5000,
        intervalMs: 20,
        what: 'the server to close the idle connection',
      });
      expect(Date.now() - started).toBeGreaterThanOrEqual(200);

      const kept = await RawConnection.open(url);
      open.push(kept);
      await kept.write(rawRequest('GET', '/b'));
      expect((await kept.read()).status).toBe(200);
      server.keepAliveTimeout = 60_000;
    } finally {
      // close() ends idle kept-alive connections and returns.
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    }
  });
  it('carries large bodies both ways intact, with LIST after them on the same connection', async () => {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        // Echo a digest of the request body, then a large answer of its own.
        const big = Buffer.alloc(2 * 1024 * 1024, `${req.method} ${body.length};`);
        res.writeHead(200, { 'content-length': big.length }).end(big);
      });
    });
    acceptListMethod(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const c = await RawConnection.open(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
      open.push(c);
      const body = `LIST /x HTTP/1.1\r\n\r\n`.repeat(20_000); // ~400 KB of request-line look-alikes
      await c.write(rawRequest('PUT', '/up', { body }) + rawRequest('LIST', '/a/'), [1000, 500_000]);
      const first = await c.read(30_000);
      expect(first.status).toBe(200);
      expect(first.text.length).toBe(2 * 1024 * 1024);
      expect(first.text.startsWith(`PUT ${body.length};`)).toBe(true);
      const second = await c.read(30_000);
      expect(second.text.startsWith('GET 0;')).toBe(true);
    } finally {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    }
  });
});
