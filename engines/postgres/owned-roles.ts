import type pg from 'pg';
import type { OwnedListing } from '../../src/engines.js';

/** The handle key that names a lease's role (PostgresTarget.plan). */
export const USERNAME_KEY = 'username';

/**
 * The roles the broker's naming says it made: `<prefix>_<role>_<suffix>` as makeUsername builds
 * it (the prefix is letters and digits only, so it is safe inside the pattern). Left out whatever
 * the broker could not have made even when its name fits: the admin login itself, superusers, and
 * groups (a role someone is a member of, other than the admin, which joins roles to drop them).
 */
const OWNED_ROLES = `
  SELECT r.rolname
    FROM pg_roles r
   WHERE r.rolname ~ $1
     AND r.rolname <> current_user
     AND NOT r.rolsuper
     AND NOT EXISTS (
       SELECT 1 FROM pg_auth_members m
        WHERE m.roleid = r.oid AND m.member <> (SELECT oid FROM pg_roles WHERE rolname = current_user))
   ORDER BY r.rolname`;

export function ownedRolePattern(prefix: string, suffixLength: number): string {
  return `^${prefix}_[a-z0-9_]*_[0-9a-z]{${suffixLength}}$`;
}

/** PostgreSQL has no role creation time: the sweep counts its grace from first sight. */
export async function listOwnedRoles(db: pg.Pool, prefix: string, suffixLength: number): Promise<OwnedListing> {
  const { rows } = await db.query<{ rolname: string }>(OWNED_ROLES, [ownedRolePattern(prefix, suffixLength)]);
  return {
    handleKey: USERNAME_KEY,
    objects: rows.map((r) => ({ name: r.rolname, handle: { [USERNAME_KEY]: r.rolname } })),
  };
}
