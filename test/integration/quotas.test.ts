import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { packageRoot } from '../../src/package-root.js';
import { freePort } from '../../src/store/embedded-postgres.js';
import { ROOT_TOKEN, api } from '../support/broker.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

const PREFIX = 'quota';
const ISSUER = 'https://cluster.example';
let privateKey: CryptoKey;
let rawConfig: Record<string, unknown>;
let inProcess: Broker;
let child: ChildProcess;
let childUrl: string;

beforeAll(async () => {
  const keys = await generateKeyPair('RS256', { extractable: true });
  privateKey = keys.privateKey as CryptoKey;
  const target = await freshTargetDatabase(PREFIX);
  const store = await freshStoreDatabase('quota');
  rawConfig = {
    listen: { address: '127.0.0.1', port: 0 },
    store: { url: pgUrl(store) },
    root_token: ROOT_TOKEN,
    log_level: 'silent',
    auth: {
      k8s: {
        type: 'kubernetes',
        jwt_validation_pubkeys: [await exportSPKI(keys.publicKey)],
        bound_issuer: ISSUER,
        roles: { etl: { bound_audiences: ['credbroker'], token_policies: ['etl'] } },
      },
    },
    policies: { etl: [{ path: 'db/creds/*', capabilities: ['read', 'update'] }] },
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: {
          mine: { member_of: [target.group], max_active_leases_per_identity: 2 },
          shared: { member_of: [target.group], max_active_leases: 5 },
        },
      },
    },
  };
  inProcess = await startBroker(configSchema.parse(rawConfig), { log: createLogger('silent'), reaper: false });

  // A second broker process on the same store, started the way operators do: a YAML file with refs.
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'credbroker-quota-'));
  const file = join(dir, 'config.yaml');
  const password = new URL(pgUrl(store)).password;
  const withRefs = (url: string) => url.replace(`:${password}@`, ':${env:QUOTA_PG_PASSWORD}@');
  const childConfig = structuredClone(rawConfig) as any;
  childConfig.listen.port = port;
  childConfig.root_token = '${env:QUOTA_ROOT_TOKEN}';
  childConfig.store.url = withRefs(childConfig.store.url);
  childConfig.mounts.db.connection_url = withRefs(childConfig.mounts.db.connection_url);
  writeFileSync(file, stringify(childConfig));
  child = spawn(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'server', '--config', file], {
    env: { ...process.env, QUOTA_PG_PASSWORD: decodeURIComponent(password), QUOTA_ROOT_TOKEN: ROOT_TOKEN },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  childUrl = `http://127.0.0.1:${port}`;
  await waitUntil(
    () =>
      fetch(`${childUrl}/v1/sys/health`).then(
        (r) => r.ok,
        () => false,
      ),
    {
      timeoutMs: 10_000,
      what: 'the second broker process to answer /v1/sys/health',
    },
  );
});

afterAll(async () => {
  child?.kill('SIGTERM');
  await inProcess?.close();
  await dropRolesWithPrefix(PREFIX);
});

async function login(sub: string): Promise<string> {
  const jwt = await new SignJWT({})
    .setProtectedHeader({ alg: 'RS256' })
    .setIssuer(ISSUER)
    .setAudience('credbroker')
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(privateKey);
  const res = await api(inProcess, 'PUT', 'auth/k8s/login', { role: 'etl', jwt }, null);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.auth.client_token;
}

describe('quotas counted in the lease store', () => {
  it('refuses the (N+1)th lease of one identity with 429, while another identity still gets its own', async () => {
    const alice = await login('system:serviceaccount:etl:alice');
    const bob = await login('system:serviceaccount:etl:bob');
    for (let i = 0; i < 2; i++) expect((await api(inProcess, 'PUT', 'db/creds/mine', {}, alice)).status).toBe(200);
    const third = await api(inProcess, 'PUT', 'db/creds/mine', {}, alice);
    expect(third.status).toBe(429);
    expect(third.body.errors[0]).toMatch(/quota reached: system:serviceaccount:etl:alice may hold 2 active leases/);
    expect((await api(inProcess, 'PUT', 'db/creds/mine', {}, bob)).status).toBe(200);
  });

  it('gives back a place when a lease is revoked', async () => {
    const carol = await login('system:serviceaccount:etl:carol');
    const first = await api(inProcess, 'PUT', 'db/creds/mine', {}, carol);
    await api(inProcess, 'PUT', 'db/creds/mine', {}, carol);
    expect((await api(inProcess, 'PUT', 'db/creds/mine', {}, carol)).status).toBe(429);
    expect((await api(inProcess, 'PUT', 'sys/leases/revoke', { lease_id: first.body.lease_id }, carol)).status).toBe(
      204,
    );
    expect((await api(inProcess, 'PUT', 'db/creds/mine', {}, carol)).status).toBe(200);
  });

  it('holds one shared quota across two broker processes hit at the same time', async () => {
    const requests = Array.from({ length: 12 }, (_, i) =>
      api(i % 2 ? inProcess : { url: childUrl }, 'PUT', 'db/creds/shared'),
    );
    const statuses = (await Promise.all(requests)).map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(7);
  });
});
