import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, readMigrations } from '../../src/store/migrate.js';
import { runCli, storeConfigFile } from '../support/cli.js';
import { adminQuery, freshStoreDatabase, pgUrl, randomName } from '../support/pg.js';

const dir = mkdtempSync(join(tmpdir(), 'credbroker-migrate-guards-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const shipped = readMigrations();
const newest = shipped.at(-1)!;

/** An empty database: no lease store yet. */
async function emptyDatabase(): Promise<string> {
  const name = `t_migr_${randomName(8)}`;
  await adminQuery('postgres', `CREATE DATABASE ${name}`);
  return name;
}

const recorded = async (database: string) =>
  (await adminQuery<{ name: string }>(database, 'SELECT name FROM credbroker_migrations ORDER BY version')).map(
    (r) => r.name,
  );

describe('credbroker migrate', () => {
  it('applies every migration to an empty store, then finds nothing to do', async () => {
    const database = await emptyDatabase();
    const { path, env } = storeConfigFile(dir, database);
    const first = await runCli(['migrate', '--config', path], { env });
    expect(first, first.stderr).toMatchObject({
      code: 0,
      stdout: `applied: ${shipped.map((m) => m.name).join(', ')}\n`,
    });
    const again = await runCli(['migrate', '--config', path], { env });
    expect(again).toMatchObject({ code: 0, stdout: 'the lease store is up to date\n' });
    expect(await recorded(database)).toEqual(shipped.map((m) => m.name));
  });

  it('refuses a store whose schema is newer than the code: exit 1, one line naming both versions, nothing changed', async () => {
    const database = await freshStoreDatabase('migr');
    const future = `${String(newest.version + 1).padStart(4, '0')}_from_a_newer_credbroker.sql`;
    await adminQuery(database, 'INSERT INTO credbroker_migrations (version, name) VALUES ($1, $2)', [
      newest.version + 1,
      future,
    ]);
    const { path, env } = storeConfigFile(dir, database);
    const run = await runCli(['migrate', '--config', path], { env });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      `error: the lease store's schema is at migration ${future}, newer than this credbroker knows (up to ${newest.name.slice(0, 4)}): run the credbroker version that migrated it, or a newer one\n`,
    );
    expect(await recorded(database)).toEqual([...shipped.map((m) => m.name), future]);
  });

  it('a starting broker accepts a newer schema (a rollback or an older replica must still start)', async () => {
    const database = await freshStoreDatabase('migr');
    await adminQuery(database, 'INSERT INTO credbroker_migrations (version, name) VALUES ($1, $2)', [
      newest.version + 1,
      'later.sql',
    ]);
    const pool = new pg.Pool({ connectionString: pgUrl(database), max: 1 });
    try {
      expect(await migrate(pool)).toEqual([]);
      await expect(migrate(pool, undefined, { newerSchema: 'refuse' })).rejects.toThrow(
        /newer than this credbroker knows/,
      );
    } finally {
      await pool.end();
    }
  });

  it('refuses a store that recorded a migration under another file name than the code ships', async () => {
    const database = await freshStoreDatabase('migr');
    await adminQuery(database, 'UPDATE credbroker_migrations SET name = $1 WHERE version = $2', [
      '0001_first_draft.sql',
      1,
    ]);
    const { path, env } = storeConfigFile(dir, database);
    const run = await runCli(['migrate', '--config', path], { env });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `error: the lease store recorded migration 1 as 0001_first_draft.sql, but this credbroker ships it as ${shipped[0]!.name}: a migration file was renamed\n`,
    );
  });
});

describe('the migrations folder', () => {
  const folder = (files: Record<string, string>) => {
    const path = mkdtempSync(join(dir, 'migrations-'));
    for (const [name, sql] of Object.entries(files)) writeFileSync(join(path, name), sql);
    return path;
  };

  it.each(['7_short.sql', '0008-dash.sql', '0008_Upper.sql', '0008_name.SQL', '0008_name.sql.orig', 'README.md'])(
    'refuses a file named %s, naming it',
    (bad) => {
      const path = folder({ '0001_ok.sql': 'SELECT 1', [bad]: 'SELECT 1' });
      expect(() => readMigrations(path)).toThrow(
        `${path} holds "${bad}", not named like a migration (NNNN_lower_case_name.sql): rename or remove it`,
      );
    },
  );

  it('refuses two files with one version', () => {
    const path = folder({ '0001_ok.sql': 'SELECT 1', '0002_one.sql': 'SELECT 1', '0002_two.sql': 'SELECT 1' });
    expect(() => readMigrations(path)).toThrow('0002_one.sql and 0002_two.sql have the same version 2');
  });

  it('reads well-named files in order', () => {
    const path = folder({ '0002_b.sql': 'SELECT 2', '0001_a.sql': 'SELECT 1' });
    expect(readMigrations(path)).toEqual([
      { version: 1, name: '0001_a.sql', sql: 'SELECT 1' },
      { version: 2, name: '0002_b.sql', sql: 'SELECT 2' },
    ]);
  });
});
