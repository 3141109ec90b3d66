import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import { CLI, runCli } from '../support/cli.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';

/**
 * `credbroker revoke` with a selector, `jobs list|show`, `leases list|retry`, run as an operator
 * runs them: exit codes, the dry run, the plain progress lines off a terminal and the bar on one,
 * and a summary naming each lease that failed.
 */
const PREFIX = 'rjobcli';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;
let storeDb: string;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('rjobcli');
  broker = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] }, writer: { member_of: [target.group] } },
  });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

function env(): NodeJS.ProcessEnv {
  const clean = { ...process.env };
  for (const key of ['CREDBROKER_ADDR', 'CREDBROKER_TOKEN', 'VAULT_ADDR', 'VAULT_TOKEN']) delete clean[key];
  return { ...clean, CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: ROOT_TOKEN };
}
const cli = (args: string[]) => runCli(args, { env: env(), timeoutMs: 60_000 });

async function issue(role: string, n: number): Promise<{ lease_id: string; data: { username: string } }[]> {
  const out = [];
  for (let i = 0; i < n; i++) out.push((await api(broker, 'PUT', `db/creds/${role}`)).body);
  return out;
}

/** A lease of a mount this broker no longer configures: its revocation fails, as a dead target's would. */
async function orphanLease(): Promise<string> {
  const id = `gone/creds/reader/${'x'.repeat(24)}`;
  await adminQuery(
    storeDb,
    `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester, issued_at, expires_at, max_expires_at, next_attempt_at)
     VALUES ($1, 'gone', 'reader', 'postgres', 'active', '{"username":"nobody"}', null, now(), now() + interval '1 hour', now() + interval '1 hour', now() + interval '1 hour')`,
    [id],
  );
  return id;
}

describe('credbroker revoke with a selector', () => {
  it('refuses no selector at all with a clear message and exit 1, and --help answers how', async () => {
    const none = await cli(['revoke']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/say which leases: --identity, --meta, --mount/);
    const badMeta = await cli(['revoke', '--meta', 'novalue']);
    expect(badMeta.code).not.toBe(0);
    expect(badMeta.stderr).toMatch(/--meta takes key=value/);
    const help = await cli(['revoke', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--dry-run/);
    expect(help.stdout).toMatch(/--meta service_account_namespace=etl/);
    expect(help.stdout).toMatch(/Exit status: 0 when every selected lease was revoked, 1 if any failed/);
  });

  it('--dry-run prints counts by mount and role and the first ids, and revokes nothing', async () => {
    const readers = await issue('reader', 3);
    const dry = await cli(['revoke', '--mount', 'db', '--role', 'reader', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^dry run: 3 leases would be revoked; nothing changed\n/);
    expect(dry.stdout).toMatch(/MOUNT\s+ROLE\s+STATE\s+LEASES\ndb\s+reader\s+active\s+3\n/);
    for (const l of readers) {
      expect(dry.stdout).toContain(l.lease_id);
      expect(await roleExists(l.data.username)).toBe(true);
    }
    const json = await cli(['revoke', '--mount', 'db', '--dry-run', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ dry_run: true, total: 3 });
  });

  it('runs the job, prints a plain progress line off a terminal, and ends with the summary', async () => {
    const writers = await issue('writer', 4);
    const run = await cli(['revoke', '--mount', 'db', '--role', 'writer', '--reason', 'INC-7']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^job (revoke-\S+): 4 leases selected\n/);
    expect(run.stderr).toMatch(/revoke-\S+: \d+\/4 done \(\d+ revoked, 0 failed, \d+ remaining\), [\d.]+\/s, ETA/);
    expect(run.stdout).toMatch(/^revoke-\S+: 4 leases selected, 4 revoked, 0 failed in [\d.]+ s\n$/);
    for (const l of writers) expect(await roleExists(l.data.username)).toBe(false);

    const list = await cli(['jobs', 'list']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/JOB\s+STATE\s+CREATED\s+TOTAL\s+REVOKED\s+FAILED\s+BY\s+REASON/);
    expect(list.stdout).toMatch(/revoke-\S+\s+done\s+\S+\s+4\s+4\s+0\s+token\/root\s+INC-7/);
    const id = /^job (revoke-\S+):/.exec(run.stderr)![1]!;
    const show = await cli(['jobs', 'show', id, '--json']);
    expect(JSON.parse(show.stdout)).toMatchObject({ id, state: 'done', total: 4, revoked: 4, failed: 0 });
    const unknown = await cli(['jobs', 'show', 'revoke-nothere']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no job revoke-nothere/);
  });

  it('lists each lease that failed with its error and exits 1; leases list shows it; retry tries it again', async () => {
    const failing = await orphanLease();
    const ok = await issue('reader', 1);
    const run = await cli(['revoke', '--role', 'reader']);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/leases selected, \d+ revoked, 1 failed in/);
    expect(run.stdout).toMatch(new RegExp(`${failing}\\s+mount "gone" is not configured on this broker`));
    expect(run.stderr).toMatch(/error: 1 lease could not be revoked; they stay queued for retry/);
    expect(await roleExists(ok[0]!.data.username)).toBe(false);

    const listed = await cli(['leases', 'list', '--mount', 'gone', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const rows = listed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ lease_id: failing, state: 'revoking', attempts: 1 });
    const table = await cli(['leases', 'list', '--state', 'revoking']);
    expect(table.stdout).toMatch(/LEASE\s+IDENTITY\s+MOUNT\/ROLE\s+STATE\s+ISSUED\s+EXPIRES\s+LAST ERROR/);
    expect(table.stdout).toMatch(
      new RegExp(`${failing}\\s+-\\s+gone/reader\\s+revoking\\s+\\S+\\s+\\S+\\s+mount "gone"`),
    );

    const retried = await cli(['leases', 'retry', failing]);
    expect(retried.code).toBe(1);
    expect(retried.stderr).toMatch(/mount "gone" is not configured/);
    expect(
      (await adminQuery(storeDb, 'SELECT attempts FROM credbroker_leases WHERE id = $1', [failing]))[0].attempts,
    ).toBe(2);
    // The operator gives up on it (the mount is gone for good) and forces it: nothing is left.
    await adminQuery(
      storeDb,
      `UPDATE credbroker_leases SET state = 'revoked', revoked_at = now(), next_attempt_at = NULL WHERE id = $1`,
      [failing],
    );
    const none = await cli(['leases', 'retry', '--irrevocable', '--dry-run']);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toMatch(/^dry run: 0 leases would be revoked/);
  });

  it('draws a progress bar on a terminal', async () => {
    await issue('reader', 2);
    // `script` gives the CLI a pseudo-terminal, as an operator's shell does.
    const out = await new Promise<string>((resolve) => {
      execFile(
        'script',
        ['-qfec', `${process.execPath} ${CLI} revoke --mount db --role reader`, '/dev/null'],
        { env: env(), timeout: 60_000, encoding: 'utf8' },
        (_err, stdout) => resolve(stdout),
      );
    });
    expect(out).toMatch(/[█░]+ \d+% \| \d+\/2 · revoked \d+ · failed 0 · left \d+/);
    expect(out).toMatch(/2 leases selected, 2 revoked, 0 failed/);
  });
});
