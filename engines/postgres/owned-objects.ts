import pg from 'pg';

const { escapeIdentifier } = pg;

/** Where a role still has dependencies: databases by name, and whether it holds shared objects. */
export interface Dependencies {
  databases: string[];
  shared: string[];
}

/**
 * Everything a role owns or holds privileges on, across the cluster, read from pg_shdepend
 * (which every database shares). Objects in a database have that database's oid as `dbid`;
 * shared objects (databases, tablespaces) have 0.
 */
export async function roleDependencies(client: pg.ClientBase, usernames: string[]): Promise<Dependencies> {
  const { rows } = await client.query<{ datname: string | null; shared: string | null }>(
    `SELECT DISTINCT d.datname,
            CASE WHEN s.dbid = 0 THEN
              CASE s.classid WHEN 'pg_database'::regclass THEN 'database ' || quote_ident((SELECT datname FROM pg_database WHERE oid = s.objid))
                             WHEN 'pg_tablespace'::regclass THEN 'tablespace ' || quote_ident((SELECT spcname FROM pg_tablespace WHERE oid = s.objid))
                             ELSE s.classid::regclass::text END
            END AS shared
       FROM pg_shdepend s LEFT JOIN pg_database d ON d.oid = s.dbid
      WHERE s.refclassid = 'pg_authid'::regclass
        AND s.refobjid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($1))`,
    [usernames],
  );
  return {
    databases: rows.flatMap((r) => (r.datname ? [r.datname] : [])),
    shared: rows.flatMap((r) => (r.shared ? [r.shared] : [])),
  };
}

/** REASSIGN OWNED (if configured) then DROP OWNED, for any number of roles: the statements for one database. */
export function dropOwnedStatements(usernames: string[], reassignTo: string | undefined): string[] {
  const names = usernames.map(escapeIdentifier).join(', ');
  return [
    ...(reassignTo ? [`REASSIGN OWNED BY ${names} TO ${escapeIdentifier(reassignTo)}`] : []),
    `DROP OWNED BY ${names}`,
  ];
}

/** The broker's admin connection string for another database of the same cluster. */
export function urlForDatabase(connectionUrl: string, database: string): string {
  const url = new URL(connectionUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}
