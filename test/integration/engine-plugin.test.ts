import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engines } from '../../engines/index.js';
import { hmacField } from '../../src/audit/hmac.js';
import { startBroker, type Broker } from '../../src/broker.js';
import { parseConfig } from '../../src/config/load.js';
import { configSchemaFor } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { kvEngine, kvSecrets, liveKeys } from '../fixtures/engines/kv/index.js';
import { ROOT_TOKEN, api, baseTestConfig } from '../support/broker.js';
import { freshStoreDatabase } from '../support/pg.js';

// The whole diff that adds this engine to a broker: its folder (test/fixtures/engines/kv/) and this line.
const registry = { ...engines, kv: kvEngine };

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HMAC_KEY = 'engine-plugin-audit-key-0123456789abcdef';
const ADMIN_SECRET = 'kv-admin-secret-7f3a9c';
const SEED = 'kv-signing-seed-41d0e2';
const DECLARED = [
  ...Object.keys(kvSecrets.mount),
  ...Object.keys(kvSecrets.role ?? {}),
  ...kvSecrets.credential.filter((f) => f !== 'username'),
  ...(kvSecrets.plain ?? []),
];

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

describe('the throwaway engine folder', () => {
  it('has field names no file of src/ names, and imports from src/ only the contract and the toolkit', () => {
    for (const file of filesUnder(join(ROOT, 'src'))) {
      const text = readFileSync(file, 'utf8');
      for (const field of DECLARED) expect(text.includes(field), `${file} names ${field}`).toBe(false);
    }
    for (const file of [
      ...filesUnder(join(ROOT, 'test/fixtures/engines/kv')),
      ...filesUnder(join(ROOT, 'engines')).filter((f) => f.endsWith('.ts') && !f.includes('/test/')),
    ]) {
      const fromSrc = [...readFileSync(file, 'utf8').matchAll(/from '((?:\.\.\/)+src\/[^']+)'/g)].map((m) =>
        m[1]!.replace(/^(\.\.\/)+/, ''),
      );
      for (const path of fromSrc)
        expect(['src/engines.js', 'src/engine-kit.js'], `${file} imports ${path}`).toContain(path);
    }
  });
});

describe('config load, for a broker running the throwaway engine', () => {
  const yaml = (mount: string, role = '') =>
    `store: {url: "postgres://x@h/db"}\nroot_token: \${env:T}\nmounts:\n  vault:\n    type: kv\n${mount}    roles:\n      app:\n        ${role || 'kv_scope: read'}\n`;
  const env = { T: 'root-token-0123456789', ADMIN: ADMIN_SECRET, SEED };
  const refusal = (text: string) => {
    try {
      parseConfig(text, env, registry);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error('expected the config to be refused');
  };

  it('refuses its declared mount and role secrets written inline, without echoing them', () => {
    const mount = refusal(yaml(`    kv_admin_secret: ${ADMIN_SECRET}\n`));
    expect(mount).toBe('mounts.vault.kv_admin_secret: write it as ${env:NAME} or ${file:/path}, not inline');
    const role = refusal(yaml('    kv_admin_secret: ${env:ADMIN}\n', `kv_signing_seed: ${SEED}`));
    expect(role).toBe('mounts.vault.roles.app.kv_signing_seed: write it as ${env:NAME} or ${file:/path}, not inline');
    expect(mount + role).not.toContain(ADMIN_SECRET);
    expect(mount + role).not.toContain(SEED);
  });

  it("accepts them as refs, validated by the engine's schemas in the one pass", () => {
    const config = parseConfig(
      yaml('    kv_admin_secret: ${env:ADMIN}\n', 'kv_signing_seed: ${env:SEED}'),
      env,
      registry,
    );
    expect(config.mounts.vault).toMatchObject({
      type: 'kv',
      kv_admin_secret: ADMIN_SECRET,
      kv_region: 'local',
      roles: { app: { kv_signing_seed: SEED, kv_scope: 'read', default_ttl: 3600 } },
    });
    expect(refusal(yaml('    kv_admin_secret: ${env:ADMIN}\n', 'kv_scop: write'))).toMatch(
      /^mounts\.vault\.roles\.app: Unrecognized key: "kv_scop"/,
    );
  });

  it('knows nothing of it without its registry line', () => {
    expect(() => parseConfig(yaml('    kv_admin_secret: ${env:ADMIN}\n'), env)).toThrow(
      'mounts.vault.type: unknown engine "kv"',
    );
  });
});

describe('a broker running the throwaway engine', () => {
  const dir = mkdtempSync(join(tmpdir(), 'credbroker-engine-plugin-'));
  const auditPath = join(dir, 'audit.jsonl');
  const logLines: string[] = [];
  let broker: Broker;

  beforeAll(async () => {
    const config = configSchemaFor(registry).parse({
      ...baseTestConfig(await freshStoreDatabase('plugin')),
      log_level: 'info',
      mounts: {
        vault: {
          type: 'kv',
          kv_admin_secret: ADMIN_SECRET,
          roles: { app: { kv_signing_seed: SEED, default_ttl: 600 } },
        },
      },
      audit: { hmac_key: HMAC_KEY, file: { path: auditPath } },
    });
    // A logger made for the default engines: the broker adds the redaction of the ones it runs.
    const sink = new Writable({
      write(chunk, _enc, done) {
        logLines.push(String(chunk));
        done();
      },
    });
    broker = await startBroker(config, { log: createLogger('info', sink), reaper: false, engines: registry });
  });

  afterAll(async () => {
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("issues and revokes through the engine; its secrets are HMAC'd in the audit log and redacted from logs", async () => {
    const res = await api(broker, 'GET', 'vault/creds/app', undefined, ROOT_TOKEN);
    expect(res.status).toBe(200);
    const { kv_client_id: clientId, kv_api_key: apiKey, username } = res.body.data;
    expect(liveKeys.get(clientId)).toBe(apiKey);
    expect(res.body.lease_id).toMatch(/^vault\/creds\/app\//);

    const records = readFileSync(auditPath, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    const response = records.find((r) => r.type === 'response' && r.path === 'vault/creds/app');
    expect(response.data.data).toEqual({
      kv_client_id: clientId,
      kv_api_key: hmacField(HMAC_KEY, apiKey),
      username: hmacField(HMAC_KEY, username),
    });

    const logged = logLines.map((line) => JSON.parse(line)).find((l) => l.msg === 'kv key issued');
    expect(logged).toMatchObject({ kv_api_key: '[redacted]', kv_admin_secret: '[redacted]', scope: 'read' });
    const everything = logLines.join('') + readFileSync(auditPath, 'utf8');
    for (const secret of [apiKey, ADMIN_SECRET, SEED]) expect(everything).not.toContain(secret);

    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: res.body.lease_id })).status).toBe(204);
    expect(liveKeys.has(clientId)).toBe(false);
  });
});
