import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { splitRole } from '../../src/config/mount-schema.js';

const dir = mkdtempSync(join(tmpdir(), 'credbroker-config-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ROOT = 'root-token-from-env-0123456789';
const ENV = { ROOT_TOKEN: ROOT, STORE_PW: 's3cret/with:odd@chars' };

/** A realistic config: every secret a ref, durations in both forms, one postgres mount. */
function validYaml(whPasswordFile: string): string {
  return `
listen:
  address: 0.0.0.0
  port: 8300
store:
  url: postgres://broker:\${env:STORE_PW}@store.internal:5432/credbroker
  max_connections: 20
root_token: \${env:ROOT_TOKEN}
log_level: warn
engine_timeout: 5s
reaper:
  schedule: "*/5 * * * * *"
  pending_grace: 2m
mounts:
  warehouse:
    type: postgres
    connection_url: postgres://admin:\${file:${whPasswordFile}}@wh.internal:5432/wh
    username_prefix: wh
    roles:
      reader:
        member_of: [wh_readers]
        default_ttl: 1h
        max_ttl: 24h
      etl:
        creation_statements:
          - CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'
        default_ttl: 900
`;
}

function writeSecret(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content, { mode: 0o600 });
  return path;
}

/** The message parseConfig fails with; fails the test if nothing throws. */
function configError(yaml: string, env: NodeJS.ProcessEnv = ENV): string {
  try {
    parseConfig(yaml, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected the config to be refused');
}

const MINIMAL = 'store:\n  url: postgres://broker@store/credbroker\nroot_token: ${env:ROOT_TOKEN}\n';

/** A minimal valid config with one postgres mount "wh" and the given role body. */
const withRole = (role: string, type = 'postgres') =>
  `${MINIMAL}mounts:\n  wh:\n    type: ${type}\n    connection_url: postgres://admin@wh/wh\n    roles:\n      reader: ${role}\n`;

describe('parseConfig', () => {
  it('parses a valid file, resolving ${env:…} and ${file:…} refs and durations', () => {
    const pwFile = writeSecret('wh-password', 'pa55word-from-file\n');
    const config = parseConfig(validYaml(pwFile), ENV);
    expect(config.listen).toEqual({ address: '0.0.0.0', port: 8300 });
    expect(config.store).toEqual({
      url: 'postgres://broker:s3cret/with:odd@chars@store.internal:5432/credbroker',
      max_connections: 20,
      query_timeout: 5,
      retention: 30 * 86400,
      tidy: { schedule: '0 17 3 * * *', batch_size: 1000 },
    });
    expect(config.root_token).toBe(ROOT);
    expect(config.engine_timeout).toBe(5);
    expect(config.reaper.pending_grace).toBe(120);
    expect(config.reaper.schedule).toBe('*/5 * * * * *');
    // Defaults fill what the file leaves out.
    expect(config.reaper.batch_size).toBe(256);
    expect(config.reaper.claim_ttl).toBe(3);
    // A file ref is read and trimmed of its trailing newline.
    expect(config.mounts.warehouse!.connection_url).toBe('postgres://admin:pa55word-from-file@wh.internal:5432/wh');
  });

  it('fills defaults for everything optional', () => {
    const config = parseConfig(MINIMAL, ENV);
    expect(config.listen).toEqual({ address: '127.0.0.1', port: 8200 });
    expect(config.log_level).toBe('info');
    expect(config.engine_timeout).toBe(10);
    expect(config.reaper.pending_grace).toBe(60);
    expect(config.mounts).toEqual({});
  });

  it('keeps reaper.claim_timeout as the old name of claim_ttl, with no margin over engine_timeout required', () => {
    expect(parseConfig(`${MINIMAL}engine_timeout: 30\nreaper:\n  claim_timeout: 10s\n`, ENV).reaper.claim_ttl).toBe(10);
    expect(parseConfig(`${MINIMAL}engine_timeout: 30\nreaper:\n  claim_ttl: 2s\n`, ENV).reaper.claim_ttl).toBe(2);
    expect(configError(`${MINIMAL}reaper:\n  claim_ttl: 5\n  claim_timeout: 600\n`)).toBe(
      'reaper.claim_timeout: is the old name of claim_ttl: give only claim_ttl',
    );
  });

  it('refuses a reaper.claim_ttl or store.query_timeout out of bounds, naming the key', () => {
    expect(configError(`${MINIMAL}reaper:\n  claim_ttl: 0\n`)).toMatch(
      /^reaper\.claim_ttl: must be between 1 s and 3600 s: the claim is renewed every third of it/,
    );
    expect(configError(`${MINIMAL}reaper:\n  claim_timeout: 2h\n`)).toMatch(
      /^reaper\.claim_timeout: must be between 1 s and 3600 s/,
    );
    expect(parseConfig(MINIMAL, ENV).store.query_timeout).toBe(5);
    const store = MINIMAL.match(/^store:\n(?: {2}.*\n)+/m)![0];
    expect(configError(MINIMAL.replace(store, `${store}  query_timeout: 0\n`))).toBe(
      'store.query_timeout: must be between 1 s and 300 s',
    );
  });

  it('reads store.retention, store.tidy and audit.retention, and refuses a retention under a day, naming the key', () => {
    const store = MINIMAL.match(/^store:\n(?: {2}.*\n)+/m)![0];
    const withStore = (lines: string) => MINIMAL.replace(store, `${store}${lines}`);
    const config = parseConfig(
      withStore('  retention: 7d\n  tidy: { schedule: "0 0 * * * *", batch_size: 500 }\n'),
      ENV,
    );
    expect(config.store).toMatchObject({ retention: 7 * 86400, tidy: { schedule: '0 0 * * * *', batch_size: 500 } });
    expect(configError(withStore('  retention: 12h\n'))).toBe('store.retention: must be at least 1 day ("24h")');
    expect(configError(withStore('  tidy: { schedule: "every night" }\n'))).toMatch(
      /^store\.tidy\.schedule: must be a node-cron expression/,
    );
    const audit = 'audit:\n  hmac_key: ${env:HMAC_KEY}\n  stdout: true\n';
    expect(parseConfig(`${MINIMAL}${audit}`, { ...ENV, HMAC_KEY: 'k'.repeat(32) }).audit?.retention).toBe(90 * 86400);
    expect(
      parseConfig(`${MINIMAL}${audit}  retention: 400d\n`, { ...ENV, HMAC_KEY: 'k'.repeat(32) }).audit?.retention,
    ).toBe(400 * 86400);
  });

  it('refuses a reaper.pending_grace not longer than engine_timeout, naming the key', () => {
    const message = configError(`${MINIMAL}engine_timeout: 30\nreaper:\n  pending_grace: 20s\n`);
    expect(message).toBe(
      'reaper.pending_grace: must be longer than engine_timeout, or the reaper could revoke an issue still in progress',
    );
  });

  it('refuses an unknown top-level key, naming it', () => {
    expect(configError(`${MINIMAL}listn:\n  port: 8200\n`)).toBe('(top level): Unrecognized key: "listn"');
  });

  it('refuses a config without store.url, naming the key', () => {
    expect(configError('root_token: ${env:ROOT_TOKEN}\nstore: {}\n')).toMatch(/^store\.url: .*expected string/);
  });

  it('refuses a bad duration, naming the key', () => {
    expect(configError(`${MINIMAL}engine_timeout: soon\n`)).toMatch(
      /^engine_timeout: duration must be a non-negative whole number/,
    );
  });

  it('refuses text that is not a YAML mapping', () => {
    expect(configError('- a\n- b\n')).toBe('the config must be a YAML mapping');
    expect(configError('store: [unclosed\n')).toMatch(/^not valid YAML: /);
  });

  it('refuses a ${env:…} ref to an unset variable, naming the key and the variable', () => {
    expect(configError(MINIMAL, {})).toBe('root_token: environment variable ROOT_TOKEN is not set');
    const yaml = `${MINIMAL}mounts:\n  wh:\n    type: postgres\n    connection_url: postgres://admin:\${env:WH_PW}@wh/wh\n`;
    expect(configError(yaml)).toBe('mounts.wh.connection_url: environment variable WH_PW is not set');
  });

  it('refuses a ${file:…} ref to a missing file, naming the key and the path', () => {
    const missing = join(dir, 'no-such-file');
    expect(configError(`store:\n  url: postgres://broker@store/db\nroot_token: \${file:${missing}}\n`)).toBe(
      `root_token: cannot read ${missing}: ENOENT`,
    );
  });

  it('refuses an inline root_token without echoing it', () => {
    const inline = 'inline-root-token-0123456789';
    const message = configError(`store:\n  url: postgres://broker@store/db\nroot_token: ${inline}\n`);
    expect(message).toMatch(/^root_token: write it as \$\{env:NAME\} or \$\{file:\/path\}, not inline$/);
    expect(message).not.toContain(inline);
  });

  it('refuses an inline password in a mount connection_url or in store.url without echoing it', () => {
    const mountMessage = configError(
      `${MINIMAL}mounts:\n  wh:\n    type: postgres\n    connection_url: postgres://admin:hunter2@wh:5432/wh\n`,
    );
    expect(mountMessage).toBe(
      'mounts.wh.connection_url: the password must be a ${env:NAME} or ${file:/path} ref, not inline',
    );
    const storeMessage = configError(
      'store:\n  url: postgres://broker:hunter2@store/db\nroot_token: ${env:ROOT_TOKEN}\n',
    );
    expect(storeMessage).toBe('store.url: the password must be a ${env:NAME} or ${file:/path} ref, not inline');
    expect(mountMessage + storeMessage).not.toContain('hunter2');
  });

  it('refuses the reserved mount name "sys" and names that do not fit URLs and lease ids', () => {
    expect(configError(`${MINIMAL}mounts:\n  sys:\n    type: postgres\n`)).toMatch(/^mounts\.sys: "sys" is reserved/);
    expect(configError(`${MINIMAL}mounts:\n  Bad.Name:\n    type: postgres\n`)).toMatch(
      /^mounts\.Bad\.Name: a mount name must be 1-32 characters/,
    );
  });
});

describe("parseConfig: mounts and roles, by their engines' schemas", () => {
  it("accepts valid postgres mounts and roles, with TTLs in seconds and the engine's defaults filled in", () => {
    const pwFile = writeSecret('wh-password-2', 'pw');
    const mount = parseConfig(validYaml(pwFile), ENV).mounts.warehouse!;
    expect(mount.type).toBe('postgres');
    expect(mount.max_open_connections).toBe(4); // the engine's default: its mountSchema ran
    expect(Object.keys(mount.roles)).toEqual(['reader', 'etl']);
    expect(splitRole(mount.roles.reader!)).toEqual({
      common: { default_ttl: 3600, max_ttl: 86400 },
      config: { member_of: ['wh_readers'] },
    });
    expect(splitRole(mount.roles.etl!).common).toEqual({ default_ttl: 900, max_ttl: 86400 });
  });

  it('parses a validated config again to itself, so one can travel as JSON', async () => {
    const { configSchema } = await import('../../src/config/schema.js');
    const config = parseConfig(validYaml(writeSecret('wh-password-3', 'pw')), ENV);
    expect(configSchema.parse(JSON.parse(JSON.stringify(config)))).toEqual(config);
  });

  it('refuses an inline AWS secret_access_key or session_token without echoing it: the engine declares them secret', () => {
    const aws = (fields: string) => `${MINIMAL}mounts:\n  cloud:\n    type: aws\n${fields}`;
    const key = configError(
      aws('    access_key_id: AKIAIOSFODNN7EXAMPLE\n    secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n'),
    );
    expect(key).toBe('mounts.cloud.secret_access_key: write it as ${env:NAME} or ${file:/path}, not inline');
    const token = configError(aws('    session_token: FwoGZXIvYXdzEXAMPLETOKEN\n'));
    expect(token).toBe('mounts.cloud.session_token: write it as ${env:NAME} or ${file:/path}, not inline');
    expect(key + token).not.toMatch(/wJalr|FwoGZ/);
    const refs = aws('    access_key_id: AKIAIOSFODNN7EXAMPLE\n    secret_access_key: ${env:AWS_SK}\n');
    expect(
      parseConfig(refs, { ...ENV, AWS_SK: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' }).mounts.cloud!.secret_access_key,
    ).toBe('wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY');
  });

  it('refuses an unknown engine type, naming mounts.<m>.type', () => {
    expect(configError(withRole('{ member_of: [g] }', 'mysql'))).toBe('mounts.wh.type: unknown engine "mysql"');
  });

  it('refuses a postgres role with both member_of and creation_statements, naming mounts.<m>.roles.<r>', () => {
    const message = configError(withRole('{ member_of: [g], creation_statements: ["CREATE ROLE \\"{{name}}\\""] }'));
    expect(message).toBe('mounts.wh.roles.reader: give exactly one of member_of or creation_statements');
  });

  it('refuses a postgres role with neither member_of nor creation_statements', () => {
    expect(configError(withRole('{ connection_limit: 2 }'))).toBe(
      'mounts.wh.roles.reader: give exactly one of member_of or creation_statements',
    );
  });

  it('refuses default_ttl greater than max_ttl, naming mounts.<m>.roles.<r>.default_ttl', () => {
    const message = configError(withRole('{ member_of: [g], default_ttl: 2h, max_ttl: 1h }'));
    expect(message).toBe('mounts.wh.roles.reader.default_ttl: must not exceed max_ttl');
  });

  it('refuses an unknown role key and a bad mount option, naming the key', () => {
    expect(configError(withRole('{ member_of: [g], memberof: [h] }'))).toMatch(
      /^mounts\.wh\.roles\.reader: Unrecognized key: "memberof"/,
    );
    const badPrefix = `${MINIMAL}mounts:\n  wh:\n    type: postgres\n    connection_url: postgres://admin@wh/wh\n    username_prefix: Has-Caps\n`;
    expect(configError(badPrefix)).toMatch(/^mounts\.wh\.username_prefix: must be 1-16 lower-case letters or digits/);
  });
});
