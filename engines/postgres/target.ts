import pg from 'pg';
import type { EngineContext, IssueRequest, Limiter, IssueResponse, PlanRequest, RenewRequest, RevokeHandle, RevokeRequest, Target } from '../../src/engines.js';
import { randomName, randomSecret } from '../../src/random.js';
import type { PostgresMount, PostgresRole } from './schema.js';
import { scramVerifier } from './scram.js';
import { pgTimestamp, renderStatement } from './statements.js';

const { escapeIdentifier, escapeLiteral } = pg;

/** SQLSTATEs we branch on. */
const TUPLE_CONCURRENTLY_UPDATED = 'XX000'; // concurrent GRANTs on one object (hashicorp/vault#1857)
const DEPENDENT_OBJECTS_STILL_EXIST = '2BP01';
const RETRYABLE = new Set([TUPLE_CONCURRENTLY_UPDATED, '40001', '40P01']);
const MAX_STATEMENT_ATTEMPTS = 8;

const MAX_IDENTIFIER_BYTES = 63;
const SUFFIX_LENGTH = 16; // base36: ~82 bits, unique without asking the target

interface PostgresHandle extends RevokeHandle {
  username: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `<prefix>_<role>_<random>`, the role part shortened so the whole stays within 63 bytes. */
export function makeUsername(prefix: string, roleName: string): string {
  const room = MAX_IDENTIFIER_BYTES - prefix.length - SUFFIX_LENGTH - 2;
  const role = roleName.replace(/[^a-z0-9_]/g, '_').slice(0, Math.max(0, room));
  return `${prefix}_${role}_${randomName(SUFFIX_LENGTH)}`;
}

function connectionInfo(mount: PostgresMount) {
  const url = new URL(mount.connection_url);
  return {
    host: mount.connection_host ?? (url.hostname || 'localhost'),
    port: mount.connection_port ?? (Number(url.port) || 5432),
    database: mount.connection_database ?? (decodeURIComponent(url.pathname.slice(1)) || 'postgres'),
  };
}

export class PostgresTarget implements Target<PostgresRole> {
  private readonly pool: pg.Pool;
  private readonly connection: { host: string; port: number; database: string };

  constructor(
    private readonly mount: PostgresMount,
    ctx: EngineContext,
  ) {
    this.connection = connectionInfo(mount);
    this.pool = new pg.Pool({
      connectionString: mount.connection_url,
      max: mount.max_open_connections,
      connectionTimeoutMillis: ctx.timeoutMs,
      statement_timeout: ctx.timeoutMs,
      idleTimeoutMillis: 30_000,
      application_name: `credbroker:${ctx.mount}`,
    });
    // An idle client losing its connection (target restarted) must not crash the broker.
    this.pool.on('error', (err) => ctx.log.warn({ mount: ctx.mount, err: err.message }, 'target connection lost'));
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  plan(req: PlanRequest<PostgresRole>): PostgresHandle {
    const handle: PostgresHandle = { username: makeUsername(this.mount.username_prefix, req.roleName) };
    if (req.role.revocation_statements) handle.revocation_statements = req.role.revocation_statements;
    return handle;
  }

  async issue(req: IssueRequest<PostgresRole>): Promise<IssueResponse> {
    const { username } = req.handle as PostgresHandle;
    const password = randomSecret();
    req.secrets.add(password);
    const verifier = scramVerifier(password, this.mount.scram_iterations);
    req.secrets.add(verifier);
    const expiration = pgTimestamp(req.expiresAt);
    if (req.role.creation_statements) {
      await this.runStatements(req.role.creation_statements, { name: username, password: verifier, expiration }, true);
    } else {
      await this.pool.query(this.createRoleSql(req.role, username, verifier, expiration));
    }
    return { data: { username, password, ...this.connection } };
  }

  private createRoleSql(role: PostgresRole, username: string, verifier: string, expiration: string): string {
    const parts = [`CREATE ROLE ${escapeIdentifier(username)} WITH LOGIN INHERIT`];
    parts.push(`PASSWORD ${escapeLiteral(verifier)}`, `VALID UNTIL ${escapeLiteral(expiration)}`);
    if (role.connection_limit !== undefined) parts.push(`CONNECTION LIMIT ${role.connection_limit}`);
    parts.push(`IN ROLE ${role.member_of!.map(escapeIdentifier).join(', ')}`);
    let sql = parts.join(' ');
    if (role.search_path) {
      sql = `${sql}; ALTER ROLE ${escapeIdentifier(username)} SET search_path TO ${role.search_path.map(escapeIdentifier).join(', ')}`;
    }
    return sql;
  }

  /**
   * Runs a statement list in one transaction. GRANTs on one object from concurrent transactions
   * fail with "tuple concurrently updated", so issues of one role are serialized on the target with
   * a transaction-scoped advisory lock (this covers every broker replica), and that SQLSTATE is
   * still retried a bounded number of times for statements we do not control.
   */
  private async runStatements(templates: string[], values: Parameters<typeof renderStatement>[1], serialize: boolean): Promise<void> {
    // One round trip: the whole transaction as one simple query, so the advisory lock is held
    // only for the server's own work, never across client round trips.
    const lock = serialize ? [`SELECT pg_advisory_xact_lock(hashtext(${escapeLiteral(templates.join('\n'))}))`] : [];
    const sql = ['BEGIN', ...lock, ...templates.map((t) => renderStatement(t, values)), 'COMMIT'].join(';\n');
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      try {
        await client.query(sql);
        return;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        const code = (err as { code?: string }).code;
        if (!code || !RETRYABLE.has(code) || attempt >= MAX_STATEMENT_ATTEMPTS) throw err;
        await sleep(Math.random() * 20 * attempt);
      } finally {
        client.release();
      }
    }
  }

  async renew(req: RenewRequest<PostgresRole>): Promise<void> {
    const { username } = req.handle as PostgresHandle;
    const expiration = pgTimestamp(req.expiresAt);
    if (req.role.renew_statements) {
      await this.runStatements(req.role.renew_statements, { name: username, expiration }, false);
      return;
    }
    await this.pool.query(`ALTER ROLE ${escapeIdentifier(username)} VALID UNTIL ${escapeLiteral(expiration)}`);
  }

  /**
   * Drops the role, then ends the sessions it left behind. PostgreSQL keeps the sessions of a
   * dropped role alive, so the terminate is what actually cuts access; doing it after the drop
   * has committed closes the window in which a new login could slip in between the two.
   */
  async revoke(req: RevokeRequest): Promise<void> {
    await this.dropRole(req.handle as PostgresHandle);
    await this.terminateOrphanSessions();
  }

  /** Drops every role within the mount's bound, then sweeps orphaned sessions once for all. */
  async revokeMany(reqs: RevokeRequest[], slots: Limiter): Promise<(Error | null)[]> {
    const errors = await Promise.all(
      reqs.map((req) =>
        slots.run(() =>
          this.dropRole(req.handle as PostgresHandle).then(
            () => null,
            (err: Error) => err,
          ),
        ),
      ),
    );
    try {
      await this.terminateOrphanSessions();
    } catch (err) {
      // The roles are gone, but their sessions may not be: report every revocation as failed, so
      // the retry (idempotent drop, then this sweep again) ends them.
      return reqs.map(() => err as Error);
    }
    return errors;
  }

  /** Sessions whose role no longer exists: every one of them is a revoked credential still in use. */
  private async terminateOrphanSessions(): Promise<void> {
    await this.pool.query(
      `SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
        WHERE a.backend_type = 'client backend' AND a.usesysid IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = a.usesysid)`,
    );
  }

  /** Idempotent: a role that is already gone counts as dropped. */
  private async dropRole(handle: PostgresHandle): Promise<void> {
    const name = escapeIdentifier(handle.username);
    const statements = handle.revocation_statements as string[] | undefined;
    if (statements) {
      // Operator statements may assume the role exists; a role that is gone is revoked already.
      const exists = await this.pool.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [handle.username]);
      if (exists.rowCount === 0) return;
      await this.runStatements([...statements, `DROP ROLE IF EXISTS ${name}`], { name: handle.username }, false);
      return;
    }
    try {
      await this.pool.query(`DROP ROLE IF EXISTS ${name}`);
    } catch (err) {
      if ((err as { code?: string }).code !== DEPENDENT_OBJECTS_STILL_EXIST) throw err;
      // It owns objects or holds grants: only now pay for REASSIGN / DROP OWNED, in one transaction.
      const reassign = this.mount.revoke_owned === 'reassign' ? [`REASSIGN OWNED BY ${name} TO ${escapeIdentifier(this.mount.reassign_owned_to!)}`] : [];
      await this.runStatements([...reassign, `DROP OWNED BY ${name}`, `DROP ROLE IF EXISTS ${name}`], { name: handle.username }, false);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
