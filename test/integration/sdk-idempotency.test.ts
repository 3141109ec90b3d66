import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Broker, LeaseInUseError, type Lease } from '../../src/sdk/index.js';
import { ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  roleExists,
} from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'sdkidem';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let server: TestBroker;
let storeDb: string;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('sdkidem');
  server = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
  });
});

afterAll(async () => {
  await server?.close();
  await dropRolesWithPrefix(PREFIX);
});

const sdk = (addr = server.url) => new Broker({ addr, token: ROOT_TOKEN, env: {}, retry: { baseMs: 20 } });
const leases = () =>
  adminQuery<{ id: string; state: string; revoke_handle: { username: string } }>(
    storeDb,
    `SELECT id, state, revoke_handle FROM credbroker_leases ORDER BY issued_at`,
  );
const works = async (lease: Lease) => {
  const client = await loginAs(lease.data as never);
  await client.end();
  return true;
};

it('a second lease with a live key is a LeaseInUseError naming the live lease, and mints nothing', async () => {
  const broker = sdk();
  const first = await broker.lease('db/creds/reader', { idempotencyKey: 'pod-a/reader', autoRenew: false });
  const err = await broker
    .lease('db/creds/reader', { idempotencyKey: 'pod-a/reader', autoRenew: false })
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(LeaseInUseError);
  expect((err as LeaseInUseError).status).toBe(409);
  expect((err as LeaseInUseError).leaseId).toBe(first.id);
  expect(JSON.stringify(err)).not.toContain(String(first.data.password));
  expect((await leases()).filter((l) => l.state === 'active').map((l) => l.id)).toEqual([first.id]);
  await first.revoke();
  await broker.close();
});

it("onConflict: 'replace' revokes the live lease of a crashed run (its role is dropped) and takes a working one", async () => {
  const crashed = await sdk().lease('db/creds/reader', { idempotencyKey: 'pod-b/reader', autoRenew: false });
  const broker = sdk();
  const lease = await broker.lease('db/creds/reader', {
    idempotencyKey: 'pod-b/reader',
    onConflict: 'replace',
    autoRenew: false,
  });
  expect(lease.id).not.toBe(crashed.id);
  expect(await roleExists(String(crashed.data.username))).toBe(false);
  expect(await works(lease)).toBe(true);
  await lease.revoke();
  await broker.close();
});

it('an answer lost on the way back: the retry meets its own lease (409), revokes it and returns a new one that works; one live lease', async () => {
  // A proxy that lets the first creds request reach the broker, then drops the connection
  // instead of answering: the lease is minted and nobody has its credential.
  let dropped = 0;
  const target = new URL(server.url);
  const proxy = http.createServer((req, res) => {
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        if (req.url === '/v1/db/creds/reader' && dropped++ === 0) {
          answer.resume();
          answer.on('end', () => res.socket?.destroy());
          return;
        }
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      },
    );
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const before = (await leases()).length;
  const broker = sdk(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`);
  try {
    const lease = await broker.lease('db/creds/reader', { idempotencyKey: 'pod-c/reader', autoRenew: false });
    expect(dropped).toBeGreaterThanOrEqual(2);
    const minted = (await leases()).slice(before);
    expect(minted).toHaveLength(2);
    expect(minted.map((l) => [l.id === lease.id, l.state])).toEqual([
      [false, 'revoked'],
      [true, 'active'],
    ]);
    expect(await roleExists(minted[0]!.revoke_handle.username)).toBe(false);
    expect(await works(lease)).toBe(true);
    await lease.revoke();
  } finally {
    await broker.close();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
  }
});
