import { inject } from 'vitest';
import pg from 'pg';
import { randomName } from '../../src/random.js';

const TEMPLATE_DB = 'credbroker_template';

/** Connection URL to a database of the test server, as its superuser. */
export function pgUrl(database: string): string {
  const { port, password } = inject('pg');
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

export async function adminQuery<R extends pg.QueryResultRow = any>(database: string, sql: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: pgUrl(database) });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** A new database cloned from the migrated template: one lease store per test file. */
export async function freshStoreDatabase(label = 'store'): Promise<string> {
  const name = `t_${label}_${randomName(8)}`;
  await adminQuery('postgres', `CREATE DATABASE ${name} TEMPLATE ${TEMPLATE_DB}`);
  return name;
}

/** A new empty database to mint roles on, with a NOLOGIN group role that may read one table. */
export async function freshTargetDatabase(prefix: string): Promise<{ database: string; group: string; table: string }> {
  const database = `t_target_${randomName(8)}`;
  const group = `${prefix}_readers`;
  await adminQuery('postgres', `CREATE DATABASE ${database}`);
  await adminQuery(
    database,
    `CREATE ROLE ${group} NOLOGIN;
     CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL);
     INSERT INTO public.items VALUES (1, 'one'), (2, 'two');
     GRANT CONNECT ON DATABASE ${database} TO ${group};
     GRANT USAGE ON SCHEMA public TO ${group};
     GRANT SELECT ON public.items TO ${group};`,
  );
  return { database, group, table: 'public.items' };
}

/** Roles are cluster-wide: each test file names its roles with its own prefix and drops them after. */
export async function dropRolesWithPrefix(prefix: string): Promise<void> {
  const roles = await adminQuery<{ rolname: string }>('postgres', `SELECT rolname FROM pg_roles WHERE rolname LIKE $1`, [`${prefix}\\_%`]);
  for (const { rolname } of roles) {
    for (const db of await adminQuery<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'`)) {
      await adminQuery(db.datname, `DROP OWNED BY ${pg.escapeIdentifier(rolname)}`).catch(() => undefined);
    }
    await adminQuery('postgres', `DROP ROLE IF EXISTS ${pg.escapeIdentifier(rolname)}`).catch(() => undefined);
  }
}

export async function roleExists(name: string): Promise<boolean> {
  return (await adminQuery('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).length > 0;
}

/** Logs in as a lease's user over TCP with password auth, as a client would. */
export async function loginAs(data: { username: string; password: string; host: string; port: number; database: string }): Promise<pg.Client> {
  const client = new pg.Client({ user: data.username, password: data.password, host: data.host, port: data.port, database: data.database });
  await client.connect();
  return client;
}

export { randomName };
