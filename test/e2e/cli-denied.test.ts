import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { ROOT_TOKEN, api } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';

/**
 * "permission denied" has three causes, and an operator needs to know which: no token at all, a
 * token the broker does not (or no longer) know, or a policy that does not grant the path. The
 * API keeps Vault's errors (with Vault's "invalid token" for the second); the CLI names the cause.
 */
const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const PREFIX = 'clidenied';
const dir = mkdtempSync(join(tmpdir(), 'credbroker-denied-'));
let broker: Broker;
let storeDb: string;
let jwtFile: string;

const NO_TOKEN = 'error: permission denied: no token set (set CREDBROKER_TOKEN or run credbroker login)\n';
const BAD_TOKEN =
  'error: permission denied: the token is unknown, expired or revoked (run credbroker login for a new one)\n';

function cli(args: string[], token?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, CREDBROKER_ADDR: broker.url };
  for (const key of ['CREDBROKER_TOKEN', 'VAULT_TOKEN', 'VAULT_ADDR']) delete env[key];
  if (token !== undefined) env.CREDBROKER_TOKEN = token;
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env, timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function login(): Promise<string> {
  const run = await cli(['login', '--role', 'etl', '--jwt-file', jwtFile]);
  expect(run.code, run.stderr).toBe(0);
  return run.stdout.trim();
}

beforeAll(async () => {
  const keys = await generateKeyPair('ES256', { extractable: true });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('denied');
  broker = await startBroker(
    configSchema.parse({
      listen: { address: '127.0.0.1', port: 0 },
      store: { url: pgUrl(storeDb) },
      root_token: ROOT_TOKEN,
      log_level: 'silent',
      auth: {
        kubernetes: {
          type: 'kubernetes',
          jwt_validation_pubkeys: [await exportSPKI(keys.publicKey)],
          roles: { etl: { bound_audiences: ['credbroker'], token_policies: ['etl'] } },
        },
      },
      policies: { etl: [{ path: 'db/creds/reader', capabilities: ['update'] }] },
      mounts: {
        db: {
          type: 'postgres',
          connection_url: pgUrl(target.database),
          username_prefix: PREFIX,
          roles: { reader: { member_of: [target.group] }, writer: { member_of: [target.group] } },
        },
      },
    }),
    { log: createLogger('silent'), reaper: false },
  );
  const jwt = await new SignJWT({
    'kubernetes.io': { namespace: 'etl', serviceaccount: { name: 'reader', uid: 'u-1' } },
  })
    .setProtectedHeader({ alg: 'ES256' })
    .setAudience('credbroker')
    .setSubject('system:serviceaccount:etl:reader')
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(keys.privateKey);
  jwtFile = join(dir, 'token');
  writeFileSync(jwtFile, `${jwt}\n`);
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

describe('permission denied, from the CLI', () => {
  it('with no token set: says to set CREDBROKER_TOKEN or log in, exit 1', async () => {
    for (const args of [
      ['creds', 'db/reader'],
      ['leases', 'db/'],
      ['revoke', '--prefix', 'db/'],
      ['lease', 'lookup', 'db/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA'],
    ]) {
      const run = await cli(args);
      expect(run.stderr.endsWith(NO_TOKEN), `${args.join(' ')}: ${run.stderr}`).toBe(true);
      expect(run.code).toBe(1);
    }
  });

  it('with a token the broker never issued: says the token is unknown, expired or revoked', async () => {
    for (const token of ['cbt.not-a-token-the-broker-issued', 'garbage', `${ROOT_TOKEN}x`]) {
      const run = await cli(['creds', 'db/reader'], token);
      expect(run.stderr).toBe(BAD_TOKEN);
      expect(run.code).toBe(1);
    }
  });

  it('with an expired token, and with a revoked one: the same', async () => {
    const expired = await login();
    await adminQuery(
      storeDb,
      `UPDATE credbroker_tokens SET expires_at = now() - interval '1 second' WHERE expires_at > now() - interval '1 second'`,
    );
    expect(await cli(['creds', 'db/reader'], expired)).toMatchObject({ code: 1, stderr: BAD_TOKEN });

    const revoked = await login();
    expect((await cli(['creds', 'db/reader', '--format', 'json'], revoked)).code).toBe(0); // it worked before
    expect((await api(broker, 'PUT', 'auth/token/revoke-self', {}, revoked)).status).toBe(204);
    expect(await cli(['creds', 'db/reader'], revoked)).toMatchObject({ code: 1, stderr: BAD_TOKEN });
  });

  it('with a live token whose policies do not grant the path: names the request refused', async () => {
    const token = await login();
    expect(await cli(['creds', 'db/writer'], token)).toMatchObject({
      code: 1,
      stderr: "error: permission denied: the token's policies do not allow PUT /v1/db/creds/writer\n",
    });
    expect(await cli(['revoke', '--prefix', 'db/'], token)).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(
        /error: permission denied: the token's policies do not allow PUT \/v1\/sys\/leases\/revoke-prefix\/db\/\n$/,
      ),
    });
  });
});

describe('permission denied, on the API (Vault-compatible)', () => {
  it('a refused token answers 403 ["permission denied", "invalid token"]; no token or a policy refusal, ["permission denied"]', async () => {
    expect(await api(broker, 'PUT', 'db/creds/reader', {}, 'cbt.not-a-token-the-broker-issued')).toMatchObject({
      status: 403,
      body: { errors: ['permission denied', 'invalid token'] },
    });
    expect(await api(broker, 'GET', 'nope/anything', undefined, 'cbt.not-a-token-the-broker-issued')).toMatchObject({
      status: 403,
      body: { errors: ['permission denied', 'invalid token'] },
    });
    expect(await api(broker, 'PUT', 'db/creds/reader', {}, null)).toMatchObject({
      status: 403,
      body: { errors: ['permission denied'] },
    });
    expect(await api(broker, 'PUT', 'db/creds/writer', {}, await login())).toMatchObject({
      status: 403,
      body: { errors: ['permission denied'] },
    });
  });
});

describe('an unknown mount, for a caller who sees only its own leases', () => {
  it('is still a 400 (CLI: exit 1), but does not name the configured mounts', async () => {
    const token = await login();
    expect(await api(broker, 'GET', 'sys/leases/lookup/dmeo/?list=true', undefined, token)).toMatchObject({
      status: 400,
      body: { errors: ['no mount named "dmeo"'] },
    });
    expect(await cli(['leases', 'dmeo/'], token)).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/error: no mount named "dmeo"\n$/),
    });
    // Root (or sudo/list on the prefix) is told which mounts exist.
    expect(await api(broker, 'GET', 'sys/leases/lookup/dmeo/?list=true')).toMatchObject({
      status: 400,
      body: { errors: ['no mount named "dmeo"; configured mounts: db'] },
    });
  });
});
