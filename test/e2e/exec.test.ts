import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import { CLI } from '../support/cli.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';
import { waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'exece2e';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let server: TestBroker;
let storeDb: string;
const dir = mkdtempSync(join(tmpdir(), 'credbroker-exec-'));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The test's environment without a broker or libpq setting of its own, plus the test broker's. */
function execEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (/^(CREDBROKER_|VAULT_|PG|AWS_)/.test(key)) delete env[key];
  return { ...env, CREDBROKER_ADDR: server.url, CREDBROKER_TOKEN: ROOT_TOKEN, ...extra };
}

/** Starts `credbroker exec <args>`; `done` resolves with its exit and all its output, never rejecting. */
function startExec(args: string[], extra: Record<string, string> = {}) {
  const child = spawn(process.execPath, [CLI, 'exec', ...args], {
    env: execEnv(extra),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const done = new Promise<Run>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, done };
}

const runExec = (args: string[], extra: Record<string, string> = {}) => startExec(args, extra).done;

/** The leases of `role` in the store, oldest first. */
async function leasesOf(role: string) {
  return adminQuery<{ id: string; state: string; expires_at: Date; revoke_handle: { username?: string } }>(
    storeDb,
    'SELECT id, state, expires_at, revoke_handle FROM credbroker_leases WHERE role = $1 ORDER BY issued_at',
    [role],
  );
}

/** The one lease of `role`, after exec exited: revoked, and its PostgreSQL role dropped. */
async function expectOneRevokedLease(role: string, username: string) {
  const rows = await leasesOf(role);
  expect(rows.map((r) => r.state)).toEqual(['revoked']);
  expect(username.startsWith(`${PREFIX}_${role}_`)).toBe(true);
  expect(await roleExists(username)).toBe(false);
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('exec');
  const role = { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' };
  server = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      psql: role,
      status: role,
      killed: role,
      forwarded: role,
      prefixed: role,
      // Renewed every ~1.3 s while the child runs.
      watched: { member_of: [target.group], default_ttl: '2s', max_ttl: '1m' },
    },
  });
});

afterAll(async () => {
  await server?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(dir, { recursive: true, force: true });
});

describe('credbroker exec', () => {
  it('the child sees working credentials: psql -c through them reads the granted table, without the broker token; then the lease is revoked', async () => {
    const run = await runExec([
      '--lease',
      'db/creds/psql',
      '--',
      'sh',
      '-c',
      'psql -X -A -t -c "select current_user, count(*) from public.items" && echo "token=${CREDBROKER_TOKEN:-none}" && psql -X -A -t -d "$DATABASE_URL" -c "select 1"',
    ]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const [psqlLine, tokenLine, urlLine] = run.stdout.trim().split('\n');
    const [username, count] = psqlLine!.split('|');
    expect(count).toBe('2');
    expect(tokenLine).toBe('token=none');
    expect(urlLine).toBe('1');
    await expectOneRevokedLease('psql', username!);
  });

  it('passes the exit code through and revokes the lease', async () => {
    const run = await runExec(['--lease', 'db/creds/status', '--', 'sh', '-c', 'echo "$PGUSER"; exit 7']);
    expect(run.code).toBe(7);
    await expectOneRevokedLease('status', run.stdout.trim());
  });

  it('a child killed by a signal: exits 128+N and revokes the lease', async () => {
    const run = await runExec(['--lease', 'db/creds/killed', '--', 'sh', '-c', 'echo "$PGUSER"; kill -KILL $$']);
    expect(run.code).toBe(128 + 9);
    await expectOneRevokedLease('killed', run.stdout.trim());
  });

  it('SIGTERM to exec is forwarded to the child, which dies of it: exit 143, lease revoked', async () => {
    const ready = join(dir, 'forwarded.ready');
    const { child, done } = startExec(
      ['--lease', 'db/creds/forwarded', '--', 'sh', '-c', 'echo "$PGUSER" > "$READY"; exec sleep 30'],
      { READY: ready },
    );
    const username = await waitUntil(() => existsSync(ready) && readFileSync(ready, 'utf8').trim(), {
      timeoutMs: 15_000,
      what: 'the child to start',
    });
    child.kill('SIGTERM');
    const run = await done;
    expect(run.code).toBe(128 + 15);
    await expectOneRevokedLease('forwarded', username);
  });

  it('ps -eo args during the run shows no password, and the lease is renewed while the child runs', async () => {
    const out = join(dir, 'password');
    const { done } = startExec(
      ['--lease', 'db/creds/watched', '--', 'sh', '-c', 'printf %s "$PGPASSWORD" > "$OUT"; echo "$PGUSER"; sleep 4'],
      { OUT: out },
    );
    const password = await waitUntil(() => existsSync(out) && readFileSync(out, 'utf8'), {
      timeoutMs: 15_000,
      what: 'the child to write its password',
    });
    expect(password.length).toBeGreaterThan(20);
    const [{ expires_at: first }] = await leasesOf('watched');
    const ps = await new Promise<string>((resolve, reject) =>
      execFile('ps', ['-eo', 'args'], { maxBuffer: 16 << 20 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    expect(ps).toContain('exec --lease db/creds/watched');
    expect(ps).toContain('sleep 4');
    expect(ps).not.toContain(password);
    await waitUntil(async () => (await leasesOf('watched'))[0]!.expires_at.getTime() > first!.getTime() + 500, {
      timeoutMs: 5_000,
      what: 'a renewal during the run',
    });
    const run = await done;
    expect(run.code).toBe(0);
    await expectOneRevokedLease('watched', run.stdout.trim());
    rmSync(out);
  });

  it('--env-prefix puts the prefix in front of every name: WH_PGUSER…, no PGUSER', async () => {
    const run = await runExec([
      '--lease',
      'db/creds/prefixed',
      '--env-prefix',
      'WH_',
      '--',
      'sh',
      '-c',
      'echo "${PGUSER:-unset} $WH_PGUSER"; PGPASSWORD="$WH_PGPASSWORD" psql -X -A -t -h "$WH_PGHOST" -p "$WH_PGPORT" -U "$WH_PGUSER" -d "$WH_PGDATABASE" -c "select 1"',
    ]);
    expect(run.code).toBe(0);
    const [names, selected] = run.stdout.trim().split('\n');
    expect(names).toMatch(new RegExp(`^unset ${PREFIX}_prefixed_`));
    expect(selected).toBe('1');
  });

  it('--help has an example; a failing lease runs nothing and exits 1', async () => {
    const help = await new Promise<string>((resolve) =>
      execFile(process.execPath, [CLI, 'exec', '--help'], (_err, stdout) => resolve(stdout)),
    );
    expect(help).toContain("credbroker exec --lease demo/creds/readonly -- psql -c 'select 1'");
    const run = await runExec(['--lease', 'db/creds/nosuchrole', '--', 'sh', '-c', 'echo ran']);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^error: .*HTTP 400/);
  });
});
