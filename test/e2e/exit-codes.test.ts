import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';

/**
 * Every command, made to fail: it exits non-zero and says why in one line on stderr, with no
 * stack trace, so a script (or an init container) stops and its log says what to fix. Nothing
 * listens on port 1, so commands that talk to a broker or a store fail to reach it.
 */
const dir = mkdtempSync(join(tmpdir(), 'credbroker-exit-codes-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const NOWHERE = 'http://127.0.0.1:1';
const env = (): NodeJS.ProcessEnv => {
  const clean: NodeJS.ProcessEnv = {
    ...process.env,
    CREDBROKER_ADDR: NOWHERE,
    CREDBROKER_TOKEN: 'cbt.some-token',
    CLI_EXIT_ROOT: 'exit-codes-root-token-0123456789',
  };
  for (const key of ['VAULT_ADDR', 'VAULT_TOKEN', 'CREDBROKER_ROOT_TOKEN']) delete clean[key];
  return clean;
};

function config(name: string, lines: string[]): string {
  const path = join(dir, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}
const unreachableStore = config('unreachable-store.yaml', [
  'store:',
  '  url: postgres://127.0.0.1:1/credbroker',
  '  query_timeout: 2',
  'root_token: ${env:CLI_EXIT_ROOT}',
]);
const noAudit = config('no-audit.yaml', [
  'store:',
  '  url: postgres://127.0.0.1:1/credbroker',
  'root_token: ${env:CLI_EXIT_ROOT}',
]);
const leaseId = 'demo/creds/readonly/AbCdEfGhIjKlMnOpQrStUvWx';

const cases: { command: string; args: string[]; error: RegExp }[] = [
  {
    command: 'server',
    args: ['server', '--config', join(dir, 'missing.yaml')],
    error: /^error: cannot read config .*missing\.yaml: ENOENT$/,
  },
  {
    command: 'server (store unreachable)',
    args: ['server', '--config', unreachableStore],
    error: /^error: .*ECONNREFUSED/,
  },
  {
    command: 'dev',
    args: ['dev', '--root-token', 'short', '--port', '0'],
    error: /^error: --root-token: must be at least 16 characters$/,
  },
  { command: 'dev (log level)', args: ['dev', '--log-level', 'loud', '--port', '0'], error: /^error: --log-level: / },
  { command: 'migrate', args: ['migrate', '--config', unreachableStore], error: /^error: .*ECONNREFUSED/ },
  {
    command: 'creds',
    args: ['creds', 'demo/readonly'],
    error: /^error: cannot reach credbroker at http:\/\/127\.0\.0\.1:1: /,
  },
  { command: 'lease lookup', args: ['lease', 'lookup', leaseId], error: /^error: cannot reach credbroker/ },
  { command: 'lease renew', args: ['lease', 'renew', leaseId], error: /^error: cannot reach credbroker/ },
  { command: 'lease revoke', args: ['lease', 'revoke', leaseId], error: /^error: cannot reach credbroker/ },
  {
    command: 'login',
    args: ['login', '--role', 'etl', '--jwt-file', join(dir, 'no-token')],
    error: /^error: cannot read .*no-token: ENOENT$/,
  },
  {
    command: 'audit hash',
    args: ['audit', 'hash', 'value', '--config', noAudit],
    error: /^error: .*no-audit\.yaml configures no audit log$/,
  },
  { command: 'leases', args: ['leases', 'demo/'], error: /^error: cannot reach credbroker/ },
  {
    command: 'revoke',
    args: ['revoke', '--prefix', 'demo/', '--force', '--issued-before', 'now'],
    error: /^error: --force and --issued-before cannot be combined$/,
  },
  { command: 'mounts check', args: ['mounts', 'check', 'demo'], error: /^error: cannot reach credbroker/ },
];

describe('every command exits non-zero on failure, with a one-line error', () => {
  it.each(cases)('$command', async ({ args, error }) => {
    const run = await runCli(args, { env: env(), timeoutMs: 30_000 });
    expect(run.signal, run.stderr).toBeNull();
    expect(run.code, run.stderr).not.toBe(0);
    const lines = run.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('revoking leases under'));
    expect(lines, run.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(error);
    expect(run.stderr).not.toMatch(/^\s+at /m);
    // dev refuses before it starts anything
    if (args[0] === 'dev') expect(run.stderr).not.toContain('starting embedded PostgreSQL');
  });

  it('a usage mistake exits 1 with the error first, then the usage (commander), and no stack trace', async () => {
    const run = await runCli(['creds', 'not-a-mount-role'], { env: env() });
    expect(run.code).toBe(1);
    expect(run.stderr.split('\n')[0]).toMatch(/^error: .*expected <mount>\/<role>/);
    expect(run.stderr).not.toMatch(/^\s+at /m);
  });
});
