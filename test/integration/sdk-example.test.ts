import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, roleExists } from '../support/pg.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'sdkexmp';
const SOURCE = fileURLToPath(new URL('../../examples/pipeline-step.ts', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../dist/examples/pipeline-step.js', import.meta.url));

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let server: TestBroker;
let storeDb: string;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;

beforeAll(async () => {
  // The suite's freshness check covers src/ and engines/; this file runs the compiled example too.
  if (statSync(EXAMPLE).mtimeMs < statSync(SOURCE).mtimeMs) throw new Error(`${EXAMPLE} is stale: npm run build`);
  target = await freshTargetDatabase(PREFIX);
  await adminQuery(
    target.database,
    `CREATE TABLE public.items_copy (id int PRIMARY KEY, name text NOT NULL);
     GRANT INSERT ON public.items_copy TO ${target.group};`,
  );
  storeDb = await freshStoreDatabase('sdkexmp');
  server = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { etl: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
  });
});

afterAll(async () => {
  await server?.close();
  await dropRolesWithPrefix(PREFIX);
});

function runExample(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(CREDBROKER_|VAULT_|PG)/.test(k)));
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      [EXAMPLE],
      { env: { ...clean, ...env }, encoding: 'utf8', timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

it('examples/pipeline-step.ts end to end: leases through credbroker/sdk, copies the rows with pg as the leased login, revokes', async () => {
  const run = await runExample({
    CREDBROKER_ADDR: server.url,
    CREDBROKER_TOKEN: ROOT_TOKEN,
    LEASE_PATH: 'db/creds/etl',
    SOURCE_TABLE: 'public.items',
    TARGET_TABLE: 'public.items_copy',
  });
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  expect(run.stdout).toMatch(
    /^copied 2 rows from public\.items to public\.items_copy \(lease db\/creds\/etl\/\w+\)\n$/,
  );
  expect(await adminQuery(target.database, 'SELECT id, name FROM public.items_copy ORDER BY id')).toEqual([
    { id: 1, name: 'one' },
    { id: 2, name: 'two' },
  ]);
  const leases = await adminQuery<{ state: string; revoke_handle: { username: string } }>(
    storeDb,
    `SELECT state, revoke_handle FROM credbroker_leases WHERE role = 'etl'`,
  );
  expect(leases.map((l) => l.state)).toEqual(['revoked']);
  const username = leases[0]!.revoke_handle.username;
  expect(username.startsWith(`${PREFIX}_etl_`)).toBe(true);
  expect(await roleExists(username)).toBe(false);
});

it('a failing step (the copy violates a key) still revokes its lease and exits 1', async () => {
  const run = await runExample({
    CREDBROKER_ADDR: server.url,
    CREDBROKER_TOKEN: ROOT_TOKEN,
    LEASE_PATH: 'db/creds/etl',
    SOURCE_TABLE: 'public.items',
    TARGET_TABLE: 'public.items_copy',
  });
  expect(run.code).toBe(1);
  expect(run.stderr).toMatch(/^pipeline step failed: duplicate key value/);
  const states = await adminQuery<{ state: string }>(storeDb, `SELECT state FROM credbroker_leases WHERE role = 'etl'`);
  expect(states.map((s) => s.state)).toEqual(['revoked', 'revoked']);
});
