import http from 'node:http';
import net from 'node:net';
import nodeVault from 'node-vault';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'vcdisc';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;
let storeDb: string;
let cluster: JwksServer;

beforeAll(async () => {
  cluster = await startJwksServer({ issuer: K8S_ISSUER });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('vcdisc');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      reader: { member_of: [target.group], default_ttl: '600s', max_ttl: '3600s' },
      writer: { member_of: [target.group], default_ttl: '600s', max_ttl: '3600s' },
    },
    auth: { kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['etl']) }) },
    policies: { etl: [{ path: 'db/creds/reader', capabilities: ['read', 'update'] }] },
  });
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
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

describe('a real Vault client (node-vault) discovers the broker with its own calls', () => {
  it('drives mounts, auths, status, leader, health, roles, capabilities-self and leases count over one kept-alive connection', async () => {
    // node-vault has no agent of its own: Node's global one, which keeps connections alive since Node 19.
    expect((http.globalAgent as http.Agent & { keepAlive?: boolean }).keepAlive).toBe(true);
    const relay = await countingRelay();
    try {
      const vault = nodeVault({ endpoint: relay.url, token: ROOT_TOKEN });

      const mounts = await vault.mounts();
      expect(mounts.data['db/']).toMatchObject({ type: 'database', options: { credbroker_engine: 'postgres' } });
      const auths = await vault.auths();
      expect(auths.data['kubernetes/'].type).toBe('kubernetes');
      expect(auths.data['token/'].type).toBe('token');

      // status() validates sealed, t, n and progress against its own schema.
      const status = await vault.status();
      expect(status).toMatchObject({ sealed: false, initialized: true, t: 1, n: 1, progress: 0 });
      expect(await vault.leader()).toMatchObject({ ha_enabled: false, is_self: false });
      expect(await vault.health()).toMatchObject({ initialized: true, sealed: false, standby: false });

      const roles = await vault.list('db/roles');
      expect(roles.data.keys).toEqual(['reader', 'writer']);
      const role = await vault.read('db/roles/reader');
      expect(role.data).toMatchObject({ db_name: 'db', default_ttl: 600, max_ttl: 3600, credential_type: 'password' });
      expect(JSON.stringify(role)).not.toContain('postgres://');

      const caps = await vault.write('sys/capabilities-self', { paths: ['db/creds/reader'] });
      expect(caps.capabilities).toEqual(['root']);
      expect(caps.data['db/creds/reader']).toEqual(['root']);

      // One lease the reaper gave up on, as it leaves it.
      const lease = await vault.read('db/creds/reader');
      await adminQuery(
        storeDb,
        `UPDATE credbroker_leases SET state = 'irrevocable', next_attempt_at = NULL, last_error = 'refused' WHERE id = $1`,
        [lease.lease_id],
      );
      const count = await vault.read('sys/leases/count?type=irrevocable');
      expect(count.data.lease_count).toBe(1);
      expect(count.data.counts).toEqual({ [mounts.data['db/'].accessor]: 1 });
      const listed = await vault.read('sys/leases?type=irrevocable');
      expect(listed.data.leases).toEqual([expect.objectContaining({ lease_id: lease.lease_id, error: 'refused' })]);

      // Every call above went over the one connection the agent kept alive.
      expect(relay.connections()).toBe(1);
    } finally {
      await relay.close();
    }
  });

  it('logs in, then renews itself with tokenRenewSelf() and gets its own token back, which node-vault keeps using', async () => {
    const vault = nodeVault({ endpoint: broker.url });
    const jwt = await cluster.sign(kubernetesClaims({ namespace: 'etl', serviceAccount: 'vault-client' }));
    const login = await vault.kubernetesLogin({ role: 'etl', jwt, mount_point: 'kubernetes' });
    const token = login.auth.client_token;
    expect(vault.token).toBe(token);

    const renewed = await vault.tokenRenewSelf({ increment: 300 });
    expect(renewed.auth.client_token).toBe(token);
    expect(renewed.auth.accessor).toBe(login.auth.accessor);
    // tokenRenewSelf is a token source: node-vault adopts the answer's client_token for what follows.
    expect(vault.token).toBe(token);
    expect((await vault.tokenLookupSelf()).data.accessor).toBe(login.auth.accessor);
    const caps = await vault.write('sys/capabilities-self', { paths: ['db/creds/reader', 'db/creds/writer'] });
    expect(caps.data).toEqual({ 'db/creds/reader': ['read', 'update'], 'db/creds/writer': ['deny'] });
  });
});
