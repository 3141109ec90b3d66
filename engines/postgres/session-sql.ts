import { createHash } from 'node:crypto';
import pg from 'pg';

const { escapeIdentifier, escapeLiteral } = pg;

/** How long a revoke waits for terminated backends to exit, polling every 20 ms. */
const EXIT_POLLS = 100;

/**
 * The `application_name` an issuing transaction runs under. A revoke looks for it first: a
 * broker killed mid-issue leaves its transaction running on the target, and the role it creates
 * must not commit after the revoke has looked for it. A hash, because application_name keeps
 * 63 bytes and a username may have as many.
 */
export function issuerTag(username: string): string {
  return `credbroker issue ${createHash('sha256').update(username).digest('base64url').slice(0, 24)}`;
}

/** Waits (in the server) until no backend matches `where`, else raises SQLSTATE 55006. */
function waitForExit(where: string, what: string): string {
  return `
  FOR i IN 1..${EXIT_POLLS} LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT count(*) INTO n FROM pg_stat_activity WHERE ${where} AND pid <> pg_backend_pid();
    EXIT WHEN n = 0;
    PERFORM pg_sleep(0.02);
  END LOOP;
  IF n > 0 THEN
    RAISE EXCEPTION USING ERRCODE = '55006', MESSAGE = n || ' ' || ${escapeLiteral(what)} || ' still running after pg_terminate_backend';
  END IF;`;
}

/**
 * One round trip that takes a login's power away, in the only safe order:
 *   1. if the role does not exist yet, a broker killed mid-issue may have left its transaction
 *      running on the target: that issuer is ended (and waited for) before the role is looked for
 *      again, so it cannot be created after this revoke. (A role that exists has no issuer left:
 *      the tag ends with the issuing transaction's commit.)
 *   2. NOLOGIN and VALID UNTIL in the past, committed, so no new session can start;
 *   3. every session of the role in every database is terminated, and the revoke waits until
 *      none is left (else SQLSTATE 55006, and steps 1-2 stay committed);
 *   4. with `drop`, DROP ROLE unless it owns objects or holds privileges.
 * The last statement answers `remains`: whether the role still exists (it owns something, or
 * `drop` was not asked), so cleanup is left to do. A role that never existed is revoked already.
 * A session that passed its login check just before step 2 and was not yet visible in step 3 is
 * ended by the sweep of sessions whose role is gone (TERMINATE_ORPHAN_SESSIONS), once per batch.
 * With `expectRole`, step 1 is skipped and the statement fails with 42704 when the role does not
 * exist: the caller then sends it again without, for the rare leases whose role is gone or not
 * created yet. Other failing statements are avoided on the common paths on purpose: an error costs the server far
 * more than a catalog lookup (it is logged with the whole statement).
 */
export function disableAndEndSessionsSql(username: string, opts: { drop: boolean; expectRole: boolean }): string {
  const name = escapeLiteral(username);
  const ident = escapeIdentifier(username);
  const tag = escapeLiteral(issuerTag(username));
  const disable = `
DECLARE
  n bigint := 0;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${name}) THEN
    SELECT count(pg_terminate_backend(pid)) INTO n FROM pg_stat_activity WHERE application_name = ${tag} AND pid <> pg_backend_pid();
    IF n > 0 THEN
      ${waitForExit(`application_name = ${tag}`, 'issuing transaction(s) of this role')}
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${name}) THEN
      RETURN;
    END IF;
  END IF;
  ALTER ROLE ${ident} NOLOGIN VALID UNTIL 'epoch';
END`;
  const endSessions = `
DECLARE
  r oid;
  n bigint := 0;
BEGIN
  SELECT oid INTO r FROM pg_roles WHERE rolname = ${name};
  IF r IS NULL THEN
    RETURN;
  END IF;
  SELECT count(pg_terminate_backend(pid)) INTO n FROM pg_stat_activity WHERE usesysid = r AND pid <> pg_backend_pid();
  IF n > 0 THEN
    ${waitForExit('usesysid = r', `session(s) of role ${username}`)}
  END IF;
  ${opts.drop ? dropUnlessDependent(ident) : ''}
END`;
  // The common case, a role that exists, as a plain statement: two DO blocks cost ~25% more than
  // one. It fails (42704) if the role does not exist; the caller then asks again without expectRole.
  const first = opts.expectRole ? `ALTER ROLE ${ident} NOLOGIN VALID UNTIL 'epoch'` : `DO ${escapeLiteral(disable)}`;
  return [
    first,
    'COMMIT',
    `DO ${escapeLiteral(endSessions)}`,
    `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${name}) AS remains`,
  ].join(';\n');
}

function dropUnlessDependent(ident: string): string {
  return `IF NOT EXISTS (SELECT 1 FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass AND refobjid = r) THEN
    DROP ROLE IF EXISTS ${ident};
  END IF;`;
}

/** Sessions whose role no longer exists: each one is a revoked credential still in use. */
export const TERMINATE_ORPHAN_SESSIONS = `SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
  WHERE a.usesysid IS NOT NULL AND a.pid <> pg_backend_pid()
    AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = a.usesysid)`;
