import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { freePort } from '../../src/store/embedded-postgres.js';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  roleExists,
} from '../support/pg.js';

/** The built CLI, exactly as `npx credbroker` runs it (`npm test` builds before running vitest). */
const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const PREFIX = 'clie2e';

let broker: Broker;
let targetDatabase: string;
const outDir = mkdtempSync(join(tmpdir(), 'credbroker-cli-e2e-'));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The test process's environment without any broker address or token of its own. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of ['CREDBROKER_ADDR', 'CREDBROKER_TOKEN', 'VAULT_ADDR', 'VAULT_TOKEN', 'CREDBROKER_ROOT_TOKEN'])
    delete env[key];
  return env;
}

/** Runs `node dist/src/cli/main.js …` and resolves with its exit code and output, never rejecting. */
function cli(
  args: string[],
  env: Record<string, string | undefined> = { CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: ROOT_TOKEN },
): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...cleanEnv(), ...env }, timeout: 30_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Parses the CLI's env format (KEY='value' lines, with '\'' for a quote). */
function parseEnvFile(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.trimEnd().split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(?:'((?:[^']|'\\'')*)'|(\S*))$/.exec(line);
    if (!m) throw new Error(`not an env line: ${line}`);
    vars[m[1]!] = m[2] !== undefined ? m[2].replace(/'\\''/g, "'") : m[3]!;
  }
  return vars;
}

/** A port nothing listens on: the OS hands it out, then it is closed again. */
const closedPort = freePort;

async function issue(role = 'reader', body: Record<string, unknown> = {}) {
  const res = await api(broker, 'PUT', `db/creds/${role}`, body);
  expect(res.status).toBe(200);
  return res.body as {
    lease_id: string;
    lease_duration: number;
    data: { username: string; password: string; host: string; port: number; database: string };
  };
}

async function readItems(data: {
  username: string;
  password: string;
  host: string;
  port: number;
  database: string;
}): Promise<string[]> {
  const client = await loginAs(data);
  try {
    return (await client.query<{ name: string }>('SELECT name FROM public.items ORDER BY id')).rows.map((r) => r.name);
  } finally {
    await client.end();
  }
}

/** A V8 stack frame: `    at fn (file:line:col)`, `    at file:line:col` or `    at async …`. */
const STACK_FRAME = /^ {4}at (?:async )?\S.*(?::\d+:\d+\)?|\(native\)|<anonymous>\)?)$/m;

const expectNoStackTrace = (run: Run) => {
  expect(run.stderr).not.toMatch(STACK_FRAME);
  expect(run.stdout).not.toMatch(STACK_FRAME);
};

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with \`npx tsc -p .\` (npm test does)`);
  const target = await freshTargetDatabase(PREFIX);
  targetDatabase = target.database;
  broker = await startTestBroker({
    storeDatabase: await freshStoreDatabase('cli'),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      reader: { member_of: [target.group] },
      batch: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
    },
  });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(outDir, { recursive: true, force: true });
});

describe('credbroker creds', () => {
  it('writes a credential with --format env --out to a file readable only by its owner, whose PGUSER/PGPASSWORD log in', async () => {
    const file = join(outDir, 'reader.env');
    const run = await cli(['creds', 'db/reader', '--format', 'env', '--out', file]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(''); // the secret goes to the file only
    expect(run.stderr).toMatch(new RegExp(`^wrote ${file} \\(lease db/creds/reader/[A-Za-z0-9]{24}, 3600s\\)\\n$`));

    expect(statSync(file).mode & 0o777).toBe(0o600);
    const vars = parseEnvFile(readFileSync(file, 'utf8'));
    expect(vars.PGUSER).toMatch(/^clie2e_reader_[a-z0-9]{16}$/);
    expect(vars.CREDBROKER_LEASE_ID).toMatch(/^db\/creds\/reader\/[A-Za-z0-9]{24}$/);
    expect(vars.CREDBROKER_LEASE_DURATION).toBe('3600');
    const { port } = inject('pg');
    expect(vars).toMatchObject({ PGHOST: '127.0.0.1', PGPORT: String(port), PGDATABASE: targetDatabase });
    const rows = await readItems({
      username: vars.PGUSER!,
      password: vars.PGPASSWORD!,
      host: vars.PGHOST!,
      port: Number(vars.PGPORT),
      database: vars.PGDATABASE!,
    });
    expect(rows).toEqual(['one', 'two']);
  });

  it('replaces an existing --out file whole, and leaves no temp file beside it', async () => {
    const file = join(outDir, 'replaced.env');
    expect((await cli(['creds', 'db/reader', '--format', 'env', '--out', file])).code).toBe(0);
    const first = parseEnvFile(readFileSync(file, 'utf8'));
    expect((await cli(['creds', 'db/reader', '--format', 'env', '--out', file])).code).toBe(0);
    const second = parseEnvFile(readFileSync(file, 'utf8'));
    expect(second.PGUSER).not.toBe(first.PGUSER);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(outDir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('prints a ~/.pgpass line to stdout with --format pgpass, and the line logs in', async () => {
    const run = await cli(['creds', 'db/reader', '--format', 'pgpass']);
    expect(run.code).toBe(0);
    expect(run.stdout.endsWith('\n')).toBe(true);
    expect(run.stdout.trimEnd().split('\n')).toHaveLength(1);
    const [host, port, database, username, password] = run.stdout.trimEnd().split(':');
    expect(host).toBe('127.0.0.1');
    expect(Number(port)).toBe(inject('pg').port);
    expect(database).toBe(targetDatabase);
    expect(username).toMatch(/^clie2e_reader_/);
    expect(
      await readItems({
        username: username!,
        password: password!,
        host: host!,
        port: Number(port),
        database: database!,
      }),
    ).toEqual(['one', 'two']);
  });

  it('prints the whole Vault envelope with --format json', async () => {
    const run = await cli(['creds', 'db/reader', '--format', 'json']);
    expect(run.code).toBe(0);
    const envelope = JSON.parse(run.stdout);
    expect(envelope).toMatchObject({
      renewable: true,
      lease_duration: 3600,
      data: { host: '127.0.0.1', database: targetDatabase },
    });
    expect(envelope.lease_id).toMatch(/^db\/creds\/reader\/[A-Za-z0-9]{24}$/);
    expect(await roleExists(envelope.data.username)).toBe(true);
  });

  it('asks for the --ttl given, and the lease carries it', async () => {
    const run = await cli(['creds', 'db/reader', '--ttl', '30s']);
    expect(run.code).toBe(0);
    const envelope = JSON.parse(run.stdout);
    expect(envelope.lease_duration).toBe(30);
    const lookup = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: envelope.lease_id });
    expect(lookup.body.data.ttl).toBeGreaterThan(20);
    expect(lookup.body.data.ttl).toBeLessThanOrEqual(30);
  });

  it('caps a --ttl above the role max_ttl and says so on stderr', async () => {
    const run = await cli(['creds', 'db/batch', '--ttl', '5h']);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).lease_duration).toBe(3600);
    expect(run.stderr).toContain('warning: TTL of "18000s" exceeded the effective max_ttl of "3600s"');
  });

  it('falls back to VAULT_ADDR and VAULT_TOKEN when CREDBROKER_ADDR and CREDBROKER_TOKEN are unset', async () => {
    const run = await cli(['creds', 'db/reader', '--format', 'json'], {
      VAULT_ADDR: broker.url,
      VAULT_TOKEN: ROOT_TOKEN,
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).lease_id).toMatch(/^db\/creds\/reader\//);
  });
});

describe('credbroker lease / leases / revoke', () => {
  it('looks up a lease with `lease lookup`', async () => {
    const lease = await issue();
    const run = await cli(['lease', 'lookup', lease.lease_id]);
    expect(run.code).toBe(0);
    const data = JSON.parse(run.stdout);
    expect(data).toMatchObject({
      id: lease.lease_id,
      state: 'active',
      mount: 'db',
      role: 'reader',
      renewable: true,
      revoked_at: null,
    });
    expect(data.ttl).toBeGreaterThan(3500);
  });

  it('extends a lease with `lease renew --increment 1h`, moving the role’s VALID UNTIL too', async () => {
    const lease = await issue('reader', { ttl: 60 });
    const run = await cli(['lease', 'renew', lease.lease_id, '--increment', '1h']);
    expect(run.code).toBe(0);
    const renewed = JSON.parse(run.stdout);
    expect(renewed.lease_id).toBe(lease.lease_id);
    expect(renewed.lease_duration).toBeGreaterThanOrEqual(3590);
    expect(renewed.lease_duration).toBeLessThanOrEqual(3600);
    const [role] = await adminQuery<{ rolvaliduntil: Date }>(
      'postgres',
      'SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1',
      [lease.data.username],
    );
    expect(role!.rolvaliduntil.getTime()).toBeGreaterThan(Date.now() + 55 * 60_000);
  });

  it('revokes a lease with `lease revoke`: the login is dropped and lookup shows it revoked', async () => {
    const lease = await issue();
    expect(await roleExists(lease.data.username)).toBe(true);
    const run = await cli(['lease', 'revoke', lease.lease_id]);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe(`revoked ${lease.lease_id}\n`);
    expect(await roleExists(lease.data.username)).toBe(false);
    const lookup = await cli(['lease', 'lookup', lease.lease_id]);
    expect(lookup.code).toBe(0);
    expect(JSON.parse(lookup.stdout)).toMatchObject({ state: 'revoked', revoke_reason: 'revoked', ttl: 0 });
    await expect(readItems(lease.data)).rejects.toThrow(/password authentication failed/);
  });

  it('lists the live leases of a role with `leases db/creds/reader/`, one id suffix a line', async () => {
    const a = await issue();
    const b = await issue();
    const run = await cli(['leases', 'db/creds/reader/']);
    expect(run.code).toBe(0);
    const keys = run.stdout.trimEnd().split('\n');
    expect(keys).toContain(a.lease_id.split('/').pop());
    expect(keys).toContain(b.lease_id.split('/').pop());
    expect(keys.every((k) => /^[A-Za-z0-9]{24}$/.test(k))).toBe(true);
    const roles = await cli(['leases', 'db/creds/']);
    expect(roles.stdout.split('\n')).toContain('reader/');
  });

  it('revokes every lease of a role with `revoke --prefix`, leaving other roles alone', async () => {
    const batch = [await issue('batch'), await issue('batch')];
    const reader = await issue('reader');
    const live = (await api(broker, 'GET', 'sys/leases/lookup/db/creds/batch/?list=true')).body.data.keys.length; // earlier tests' too
    expect(live).toBeGreaterThanOrEqual(2);
    const run = await cli(['revoke', '--prefix', 'db/creds/batch']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe(`revoking leases under db/creds/batch…\nrevoked ${live} leases under db/creds/batch\n`);
    for (const lease of batch) expect(await roleExists(lease.data.username)).toBe(false);
    expect(await roleExists(reader.data.username)).toBe(true);
    const after = await cli(['leases', 'db/creds/batch/']);
    expect(after).toEqual({ code: 0, stdout: '', stderr: '' }); // nothing left, and that is not an error
    const again = await cli(['revoke', '--prefix', 'db/creds/batch']);
    expect(again).toMatchObject({
      code: 0,
      stderr: 'revoking leases under db/creds/batch…\nrevoked 0 leases under db/creds/batch\n',
    });
    const force = await cli(['revoke', '--prefix', 'db/creds/batch', '--force']);
    expect(force).toMatchObject({
      code: 0,
      stderr: expect.stringMatching(/\nmarked revoked 0 leases under db\/creds\/batch\n$/),
    });
  });

  it('says that an id that names no lease was not revoked, exit 1; a lease revoked twice was already revoked, exit 0', async () => {
    for (const id of ['db/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA', 'dmeo/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA']) {
      expect(await cli(['lease', 'revoke', id])).toEqual({
        code: 1,
        stdout: '',
        stderr: `error: no lease ${id} was ever issued (a typo?); nothing was revoked\n`,
      });
    }
    const lease = await issue();
    expect(await cli(['lease', 'revoke', lease.lease_id])).toMatchObject({
      code: 0,
      stderr: `revoked ${lease.lease_id}\n`,
    });
    expect(await cli(['lease', 'revoke', lease.lease_id])).toMatchObject({
      code: 0,
      stderr: `${lease.lease_id} was already revoked\n`,
    });
  });

  it('refuses a mount that is not configured (a typo) on `revoke --prefix` and `leases`, naming the configured mounts', async () => {
    const bystander = await issue();
    const refused = 'error: no mount named "dmeo"; configured mounts: db\n';
    for (const args of [
      ['revoke', '--prefix', 'dmeo/'],
      ['revoke', '--prefix', 'dmeo'],
      ['revoke', '--prefix', 'dmeo/', '--force'],
      ['revoke', '--prefix', 'dmeo/', '--issued-before', 'now'],
      ['leases', 'dmeo/'],
      ['leases', 'dmeo/creds/reader/'],
    ]) {
      const run = await cli(args);
      expect(run.code, args.join(' ')).toBe(1);
      expect(run.stderr.endsWith(refused), `${args.join(' ')}: ${run.stderr}`).toBe(true);
      expect(run.stderr).not.toContain('done');
      expectNoStackTrace(run);
    }
    expect(await roleExists(bystander.data.username)).toBe(true);
  });
});

describe('credbroker errors', () => {
  it('reports an unknown mount on `creds`, naming the configured mounts, and exits 1', async () => {
    const run = await cli(['creds', 'dmeo/reader']);
    expect(run).toMatchObject({ code: 1, stdout: '' });
    expect(run.stderr).toBe(
      'error: no handler for route "dmeo/creds/reader". route entry not found.\nno mount named "dmeo"; configured mounts: db\n',
    );
    expectNoStackTrace(run);
  });

  it('reports an unknown role in one line and exits 1, with no stack trace', async () => {
    const run = await cli(['creds', 'db/nosuch']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('error: unknown role: nosuch\n');
    expect(run.stdout).toBe('');
    expect(run.stderr).not.toContain('    at ');
  });

  it('says it cannot reach credbroker, naming the address, when nothing listens there', async () => {
    const addr = `http://127.0.0.1:${await closedPort()}`;
    const run = await cli(['creds', 'db/reader'], { CREDBROKER_ADDR: addr, CREDBROKER_TOKEN: ROOT_TOKEN });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`error: cannot reach credbroker at ${addr}: ECONNREFUSED\n`);
    expectNoStackTrace(run);
  });

  it('reports a missing token as permission denied, saying how to set one', async () => {
    const run = await cli(['creds', 'db/reader'], { CREDBROKER_ADDR: broker.url });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('error: permission denied: no token set (set CREDBROKER_TOKEN or run credbroker login)\n');
    expectNoStackTrace(run);
  });

  it('reports an unknown lease id on lookup', async () => {
    const run = await cli(['lease', 'lookup', 'db/creds/reader/AAAAAAAAAAAAAAAAAAAAAAAA']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('error: invalid lease\n');
    expectNoStackTrace(run);
  });

  it('reports a bad --ttl with the broker’s message', async () => {
    const run = await cli(['creds', 'db/reader', '--ttl', 'soon']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error: ttl must be a non-negative whole number of seconds/);
    expectNoStackTrace(run);
  });

  it('refuses a malformed <mount/role> with a usage hint, before contacting any broker', async () => {
    const run = await cli(['creds', 'nonsense'], {
      CREDBROKER_ADDR: 'http://127.0.0.1:9',
      CREDBROKER_TOKEN: ROOT_TOKEN,
    });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(
      "error: command-argument value 'nonsense' is invalid for argument 'mount/role'. expected <mount>/<role>, e.g. demo/readonly",
    );
    expect(run.stderr).toContain('Usage: credbroker creds [options] <mount/role>');
    expect(run.stderr).not.toContain('cannot reach');
    expectNoStackTrace(run);
  });

  it('refuses an unknown --format, listing the choices', async () => {
    const run = await cli(['creds', 'db/reader', '--format', 'yaml']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('Allowed choices are json, env, pgpass');
  });

  it('refuses an unknown command with a usage hint', async () => {
    const run = await cli(['credz']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain("error: unknown command 'credz'");
    expectNoStackTrace(run);
  });

  it('refuses an --out file in a missing directory before any credential exists', async () => {
    const run = await cli(['creds', 'db/batch', '--format', 'env', '--out', join(outDir, 'no-such-dir', 'batch.env')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error: cannot write .*no-such-dir/);
    expect(await cli(['leases', 'db/creds/batch/'])).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('revokes the credential it could not write to --out, so no live lease is left behind', async () => {
    // The directory is writable, but the target is itself a directory: the rename fails after the issue.
    const run = await cli(['creds', 'db/batch', '--format', 'env', '--out', outDir]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/was revoked/);
    expect(await cli(['leases', 'db/creds/batch/'])).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  // URL parsing would resolve the ".." client-side and revoke "db/creds/": the CLI must refuse it.
  it('refuses `revoke --prefix` with a ".." segment instead of revoking a wider prefix', async () => {
    const bystander = await issue('reader');
    const run = await cli(['revoke', '--prefix', 'db/creds/nosuch/..']);
    const lookup = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: bystander.lease_id });
    expect(lookup.body.data.state).toBe('active');
    expect(run.code).not.toBe(0);
  });
});

describe('credbroker --help', () => {
  const help = (command: string) => cli([...command.split(' '), '--help'], {});

  it('`credbroker --help` exits 0 and lists the commands', async () => {
    const run = await cli(['--help'], {});
    expect(run.code).toBe(0);
    for (const command of ['server', 'dev', 'migrate', 'creds', 'lease', 'leases', 'revoke'])
      expect(run.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
  });

  it('`credbroker --version` (and -V) prints the package version and exits 0', async () => {
    const { version } = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8'));
    for (const flag of ['--version', '-V'])
      expect(await cli([flag], {})).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
    expect((await cli(['--help'], {})).stdout).toContain('-V, --version');
  });

  it.each(['creds', 'lease', 'leases', 'revoke'])(
    '`credbroker %s --help` exits 0 and explains CREDBROKER_ADDR and CREDBROKER_TOKEN',
    async (command) => {
      const run = await help(command);
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(`Usage: credbroker ${command}`);
      expect(run.stdout).toContain(
        'CREDBROKER_ADDR   broker address (falls back to VAULT_ADDR; default http://127.0.0.1:8200)',
      );
      expect(run.stdout).toContain('CREDBROKER_TOKEN  token sent as X-Vault-Token (falls back to VAULT_TOKEN)');
    },
  );

  it.each(['lease lookup', 'lease renew', 'lease revoke', 'dev', 'server', 'migrate'])(
    '`credbroker %s --help` exits 0 and shows its usage',
    async (command) => {
      const run = await help(command);
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(`Usage: credbroker ${command} [options]`);
      expect(run.stderr).toBe('');
    },
  );

  it.each(['lease lookup', 'lease renew', 'lease revoke'])(
    '`credbroker %s --help` explains CREDBROKER_ADDR, as the command reaches the broker',
    async (command) => {
      const run = await help(command);
      expect(run.code).toBe(0);
      expect(run.stdout).toContain('CREDBROKER_ADDR');
    },
  );
});
