import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { hmacField } from '../../src/audit/hmac.js';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { packageRoot } from '../../src/package-root.js';
import { ROOT_TOKEN } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  pgUrl,
  roleExists,
} from '../support/pg.js';
import { expireTokensOnce } from '../../src/auth/token-expiry.js';

const run = promisify(execFile);
const PREFIX = 'logincli';
const HMAC_KEY = 'an-audit-hmac-key-of-at-least-32-characters';
const dir = mkdtempSync(join(tmpdir(), 'credbroker-login-'));
let broker: Broker;
let jwtFile: string;
let storeDb: string;

beforeAll(async () => {
  const keys = await generateKeyPair('ES256', { extractable: true });
  const target = await freshTargetDatabase(PREFIX);
  broker = await startBroker(
    configSchema.parse({
      listen: { address: '127.0.0.1', port: 0 },
      store: { url: pgUrl((storeDb = await freshStoreDatabase('logincli'))) },
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
          roles: { reader: { member_of: [target.group] } },
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
});

const cli = (args: string[], token?: string) =>
  run(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), ...args], {
    env: { ...process.env, CREDBROKER_ADDR: broker.url, ...(token ? { CREDBROKER_TOKEN: token } : {}) },
  });

it('logs in with the service-account token file, and the printed token gets a credential', async () => {
  const { stdout, stderr } = await cli(['login', '--role', 'etl', '--jwt-file', jwtFile]);
  const token = stdout.trim();
  expect(token).toMatch(/^cbt\./);
  expect(stderr).toMatch(/logged in as reader; policies: etl/);
  const creds = await cli(['creds', 'db/reader', '--format', 'json'], token);
  expect(JSON.parse(creds.stdout).data.username).toMatch(new RegExp(`^${PREFIX}_reader_`));
});

it('prints an export line with --format env', async () => {
  const { stdout } = await cli(['login', '--role', 'etl', '--jwt-file', jwtFile, '--format', 'env']);
  expect(stdout).toMatch(/^export CREDBROKER_TOKEN=cbt\.\S+\n$/);
});

it('says clearly when the token file cannot be read, or the role is wrong', async () => {
  await expect(cli(['login', '--role', 'etl', '--jwt-file', join(dir, 'missing')])).rejects.toMatchObject({
    stderr: expect.stringMatching(/cannot read .*missing: ENOENT/),
  });
  await expect(cli(['login', '--role', 'nope', '--jwt-file', jwtFile])).rejects.toMatchObject({
    stderr: expect.stringMatching(/role "nope" could not be found/),
  });
});

it('computes with `audit hash` the HMAC the audit log uses for a value', async () => {
  const config = join(dir, 'config.yaml');
  writeFileSync(
    config,
    [
      'store:',
      '  url: postgres://x@localhost/db',
      'root_token: ${env:T}',
      'audit:',
      '  hmac_key: ${env:K}',
      '  stdout: true',
      '',
    ].join('\n'),
  );
  const { stdout } = await run(
    process.execPath,
    [join(packageRoot(), 'dist/src/cli/main.js'), 'audit', 'hash', 's3cret-value', '--config', config],
    {
      env: { ...process.env, T: 'root-token-0123456789', K: HMAC_KEY },
    },
  );
  expect(stdout.trim()).toBe(hmacField(HMAC_KEY, 's3cret-value'));
});

it('revokes the leases of a token when the token expires, as Vault does', async () => {
  const token = (await cli(['login', '--role', 'etl', '--jwt-file', jwtFile])).stdout.trim();
  const lease = JSON.parse((await cli(['creds', 'db/reader', '--format', 'json'], token)).stdout);
  expect(await roleExists(lease.data.username)).toBe(true);
  const [row] = await adminQuery(storeDb, `SELECT token_accessor FROM credbroker_leases WHERE id = $1`, [
    lease.lease_id,
  ]);
  await adminQuery(
    storeDb,
    `UPDATE credbroker_tokens SET expires_at = now() - interval '1 second' WHERE accessor = $1`,
    [row.token_accessor],
  );
  expect(await expireTokensOnce(broker.auth.tokens, broker.leases, createLogger('silent'))).toBe(1);
  expect(await roleExists(lease.data.username)).toBe(false);
  expect(await expireTokensOnce(broker.auth.tokens, broker.leases, createLogger('silent'))).toBe(0); // claimed once
});
