import { inject } from 'vitest';
import pg from 'pg';
import { randomName } from '../../src/random.js';
import { TEST_ADMIN_APPLICATION } from './suite-sweep.js';

const TEMPLATE_DB = 'credbroker_template';

/** Connection URL to a database of the test server, as its superuser. */
export function pgUrl(database: string): string {
  const { port, password } = inject('pg');
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

export async function adminQuery<R extends pg.QueryResultRow = any>(
  database: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: pgUrl(database), application_name: TEST_ADMIN_APPLICATION });
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

/**
 * Roles are cluster-wide: each test file names its roles with its own prefix and drops them after.
 * Only the databases where those roles own objects or hold grants are visited (pg_shdepend), all
 * roles at once in each, so cleaning up hundreds of leftover roles stays within a hook's timeout.
 */
export async function dropRolesWithPrefix(prefix: string): Promise<void> {
  const roles = (
    await adminQuery<{ rolname: string }>('postgres', `SELECT rolname FROM pg_roles WHERE rolname LIKE $1`, [
      `${prefix}\\_%`,
    ])
  ).map((r) => r.rolname);
  for (let i = 0; i < roles.length; i += 500) {
    const chunk = roles.slice(i, i + 500);
    const names = chunk.map((r) => pg.escapeIdentifier(r)).join(', ');
    const databases = await adminQuery<{ datname: string }>(
      'postgres',
      `SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
        WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($1))`,
      [chunk],
    );
    for (const { datname } of databases) await adminQuery(datname, `DROP OWNED BY ${names}`).catch(() => undefined);
    await adminQuery('postgres', 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)', [
      chunk,
    ]);
    await adminQuery('postgres', `DROP ROLE IF EXISTS ${names}`).catch(async () => {
      for (const role of chunk)
        await adminQuery('postgres', `DROP ROLE IF EXISTS ${pg.escapeIdentifier(role)}`).catch(() => undefined);
    });
  }
}

export async function roleExists(name: string): Promise<boolean> {
  return (await adminQuery('postgres', 'SELECT 1 FROM pg_roles WHERE rolname = $1', [name])).length > 0;
}

/** Logs in as a lease's user over TCP with password auth, as a client would. */
export async function loginAs(data: {
  username: string;
  password: string;
  host: string;
  port: number;
  database: string;
}): Promise<pg.Client> {
  const client = new pg.Client({
    user: data.username,
    password: data.password,
    host: data.host,
    port: data.port,
    database: data.database,
  });
  await client.connect();
  return client;
}

export { randomName };
