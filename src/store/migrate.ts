import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { packageRoot } from '../package-root.js';

/** Any fixed number: every replica takes the same lock, so only one applies migrations. */
const MIGRATION_LOCK = 7_402_011_901;

/** `0007_tidy_indexes.sql`: four digits, an underscore, a lower-case name. */
const MIGRATION_NAME = /^(\d{4})_[a-z0-9_]+\.sql$/;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/**
 * The migrations shipped with this code, in order. A file in the folder that is not named like
 * a migration, or two files with one version, is a packaging mistake: refused here rather than
 * skipped, since a skipped migration is a schema that silently differs from the code's.
 */
export function readMigrations(dir = join(packageRoot(), 'migrations')): Migration[] {
  const files = readdirSync(dir).sort();
  const misnamed = files.filter((f) => !MIGRATION_NAME.test(f));
  if (misnamed.length) {
    throw new Error(
      `${dir} holds ${misnamed.map((f) => `"${f}"`).join(', ')}, not named like a migration (NNNN_lower_case_name.sql): rename or remove it`,
    );
  }
  const migrations = files.map((f) => ({
    version: Number(MIGRATION_NAME.exec(f)![1]),
    name: f,
    sql: readFileSync(join(dir, f), 'utf8'),
  }));
  for (let i = 1; i < migrations.length; i++) {
    if (migrations[i]!.version === migrations[i - 1]!.version) {
      throw new Error(
        `${dir}: ${migrations[i - 1]!.name} and ${migrations[i]!.name} have the same version ${migrations[i]!.version}`,
      );
    }
  }
  return migrations;
}

export interface MigrateOptions {
  /**
   * What to do with a store migrated further than this code knows: `refuse` (what
   * `credbroker migrate` does, exit 1) or `accept` (a broker starting: an older replica during a
   * rolling upgrade, or a rollback, must still start on a schema that only grew).
   */
  newerSchema?: 'refuse' | 'accept';
}

/** The store has migrations this code does not ship: it was migrated by a newer credbroker. */
export class SchemaNewerThanCode extends Error {
  constructor(
    readonly storeVersion: { version: number; name: string },
    readonly codeVersion: number,
  ) {
    super(
      `the lease store's schema is at migration ${storeVersion.name}, newer than this credbroker knows (up to ${String(codeVersion).padStart(4, '0')}): ` +
        'run the credbroker version that migrated it, or a newer one',
    );
  }
}

/**
 * Applies the migrations not yet recorded, in order, each in its own transaction, under an
 * advisory lock so replicas starting together do not race. Returns the names applied. A version
 * recorded under another file name than the code's is refused: the code would assume a schema
 * the store does not have.
 */
export async function migrate(
  pool: pg.Pool,
  migrations = readMigrations(),
  opts: MigrateOptions = {},
): Promise<string[]> {
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(
      `CREATE TABLE IF NOT EXISTS credbroker_migrations (
         version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const recorded = (
      await client.query<{ version: number; name: string }>(
        'SELECT version, name FROM credbroker_migrations ORDER BY version',
      )
    ).rows;
    const known = new Map(migrations.map((m) => [m.version, m.name]));
    for (const r of recorded) {
      const ours = known.get(r.version);
      if (ours !== undefined && ours !== r.name) {
        throw new Error(
          `the lease store recorded migration ${r.version} as ${r.name}, but this credbroker ships it as ${ours}: a migration file was renamed`,
        );
      }
    }
    const codeVersion = Math.max(0, ...migrations.map((m) => m.version));
    const newest = recorded.at(-1);
    if (newest && newest.version > codeVersion && opts.newerSchema === 'refuse')
      throw new SchemaNewerThanCode(newest, codeVersion);
    const done = new Set(recorded.map((r) => r.version));
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      try {
        await client.query('BEGIN');
        await client.query(m.sql);
        await client.query('INSERT INTO credbroker_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(m.name);
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
  return applied;
}
