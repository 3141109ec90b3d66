import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { api, ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';
import { RawConnection, rawRequest, type RawResponse } from '../support/raw-http.js';

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

const leaseCount = async () => Number((await adminQuery<{ n: string }>(storeDb, 'SELECT count(*) AS n FROM credbroker_leases'))[0]!.n);
const liveKeys = async (role: string) =>
  (await adminQuery<{ id: string }>(storeDb, `SELECT id FROM credbroker_leases WHERE id LIKE $1 AND state IN ('pending', 'active') ORDER BY id`, [`db/creds/${role}/%`])).map(
    (r) => r.id.slice(`db/creds/${role}/`.length),
  );

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
    const rows = await adminQuery(storeDb, 'SELECT id, state FROM credbroker_leases WHERE id = ANY($1)', [[revokeMe, creds.body.lease_id]]);
    expect(Object.fromEntries(rows.map((r) => [r.id, r.state]))).toEqual({ [revokeMe]: 'revoked', [creds.body.lease_id]: 'active' });
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
    const splits = [2, 4, 5, 20, requests[0]!.length - 1, requests[0]!.length + 3, requests[0]!.length + requests[1]!.length - 10, requests[0]!.length + requests[1]!.length + 1];
    const c = await connect();
    await c.write(bytes, splits);
    const answers: RawResponse[] = [];
    for (let i = 0; i < requests.length; i++) answers.push(await c.read());
    await check(answers, before);
  });

  it('rewrites LIST only at a request line: chunked bodies holding "LIST " are left alone', async () => {
    const reader = await issue('reader');
    const c = await connect();
    const body = [`{"lease_id":"${reader}",`, `"note":"\\r\\nLIST /v1/sys/leases/lookup/db/creds/ HTTP/1.1\\r\\n", `, '"x":"LIST "}'];
    await c.write(
      rawRequest('PUT', '/v1/sys/leases/lookup', { token: ROOT_TOKEN, chunked: body }) + rawRequest('LIST', '/v1/sys/leases/lookup/db/creds/', { token: ROOT_TOKEN }),
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
