import pg from 'pg';

const { escapeIdentifier } = pg;

/** One thing the broker's admin login must be able to do on the target, and how to allow it. */
export interface PrivilegeCheck {
  check: string;
  ok: boolean;
  detail: string;
  /** The SQL an operator runs (as a superuser or the database owner) to fix it. */
  fix?: string;
}

interface AdminFacts {
  me: string;
  rolsuper: boolean;
  rolcreaterole: boolean;
  version: number;
  signal: boolean;
}

interface GroupFacts {
  name: string;
  exists: boolean;
  admin: boolean | null;
}

/**
 * What the admin login needs, checked against the catalog: create roles, add them to the roles'
 * groups (ADMIN OPTION, from PostgreSQL 16; CREATEROLE alone before), and end other roles'
 * sessions (pg_signal_backend). No superuser needed. Seeing other roles' backends needs nothing:
 * pg_stat_activity shows every backend's pid and usesysid to everyone.
 */
export async function checkPrivileges(client: pg.Pool | pg.ClientBase, groups: string[]): Promise<PrivilegeCheck[]> {
  const { rows } = await client.query<AdminFacts>(
    `SELECT current_user AS me, r.rolsuper, r.rolcreaterole,
            current_setting('server_version_num')::int AS version,
            pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS signal
       FROM pg_roles r WHERE r.rolname = current_user`,
  );
  const admin = rows[0]!;
  const me = escapeIdentifier(admin.me);
  const checks: PrivilegeCheck[] = [
    {
      check: 'create roles',
      ok: admin.rolsuper || admin.rolcreaterole,
      detail: admin.rolsuper
        ? `${admin.me} is a superuser`
        : admin.rolcreaterole
          ? `${admin.me} has CREATEROLE`
          : `${admin.me} has neither CREATEROLE nor superuser`,
      fix: `ALTER ROLE ${me} CREATEROLE`,
    },
    {
      check: 'end sessions',
      ok: admin.signal,
      detail: admin.signal
        ? `${admin.me} may terminate other roles' sessions`
        : `${admin.me} cannot terminate other roles' sessions (it lacks pg_signal_backend), so a revoked credential's open sessions would run on`,
      fix: `GRANT pg_signal_backend TO ${me}`,
    },
  ];
  if (groups.length === 0) return checks.map(withoutFixIfOk);
  const { rows: groupRows } = await client.query<GroupFacts>(
    `SELECT g AS name, r.oid IS NOT NULL AS exists, pg_has_role(current_user, r.oid, 'MEMBER WITH ADMIN OPTION') AS admin
       FROM unnest($1::text[]) g LEFT JOIN pg_roles r ON r.rolname = g ORDER BY g`,
    [[...new Set(groups)]],
  );
  const adminOptionNeeded = !admin.rolsuper && admin.version >= 160000;
  for (const group of groupRows) {
    const ident = escapeIdentifier(group.name);
    if (!group.exists) {
      checks.push({
        check: `group ${group.name}`,
        ok: false,
        detail: `role ${group.name} (in member_of) does not exist`,
        fix: `CREATE ROLE ${ident} NOLOGIN`,
      });
      continue;
    }
    const ok = !adminOptionNeeded || group.admin === true;
    checks.push({
      check: `group ${group.name}`,
      ok,
      detail: ok
        ? `${admin.me} may add roles to ${group.name}`
        : `${admin.me} lacks ADMIN OPTION on ${group.name}, so it cannot create roles IN ROLE ${group.name}`,
      fix: `GRANT ${ident} TO ${me} WITH ADMIN OPTION`,
    });
  }
  return checks.map(withoutFixIfOk);
}

function withoutFixIfOk(check: PrivilegeCheck): PrivilegeCheck {
  if (!check.ok) return check;
  const { fix: _fix, ...rest } = check;
  return rest;
}

/** The checks whose failure means the mount must not issue: it could not take the credential back. */
export const REQUIRED_TO_ISSUE = new Set(['create roles', 'end sessions']);
