import pg from 'pg';
import type {
  EngineContext,
  IssueRequest,
  Limiter,
  IssueResponse,
  OwnedListing,
  PlanRequest,
  RenewRequest,
  RevokeHandle,
  RevokeProgress,
  RevokeRequest,
  Target,
  VerifyCheck,
  ConnectionPoolStats,
} from '../../src/engines.js';
import {
  Batcher,
  CredentialDisabled,
  describeConnectError,
  pgConnectionConfig,
  randomName,
  randomSecret,
  type PgTls,
} from '../../src/engine-kit.js';
import { KeyedLock } from './keyed-lock.js';
import { listOwnedRoles } from './owned-roles.js';
import { dropOwnedStatements, roleDependencies, urlForDatabase } from './owned-objects.js';
import { REQUIRED_TO_ISSUE, checkPrivileges } from './privileges.js';
import type { PostgresMount, PostgresRole } from './schema.js';
import { scramVerifier } from './scram.js';
import { TERMINATE_ORPHAN_SESSIONS, disableAndEndSessionsSql, issuerTag } from './session-sql.js';
import { pgTimestamp, renderStatement } from './statements.js';

const { escapeIdentifier, escapeLiteral } = pg;

/** SQLSTATEs we branch on. */
const TUPLE_CONCURRENTLY_UPDATED = 'XX000'; // concurrent GRANTs on one object (hashicorp/vault#1857)
const DEPENDENT_OBJECTS_STILL_EXIST = '2BP01';
const UNDEFINED_OBJECT = '42704';
const RETRYABLE = new Set([TUPLE_CONCURRENTLY_UPDATED, '40001', '40P01']);
const MAX_STATEMENT_ATTEMPTS = 8;
/** Most roles cleaned up in one transaction. */
const CLEANUP_BATCH = 64;

const MAX_IDENTIFIER_BYTES = 63;
const SUFFIX_LENGTH = 16; // base36: ~82 bits, unique without asking the target
/** A failed privilege check is asked again at most this often, so a fixed GRANT takes effect soon. */
const RECHECK_FAILED_PRIVILEGES_MS = 5000;

interface PostgresHandle extends RevokeHandle {
  username: string;
}

type CleanupKind = 'owned' | 'statements';

interface TransactionOptions {
  /** application_name of the transaction, so a revoke can find and end an issue still running. */
  tag?: string;
  /** Serializes the transaction with every other one under this key, across replicas. */
  lock?: string;
  /** More keys taken after `lock`, in sorted order (so two holders of several never deadlock). */
  alsoLock?: string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const sqlstate = (err: unknown) => (err as { code?: string }).code;

/** `<prefix>_<role>_<random>`, the role part shortened so the whole stays within 63 bytes. */
export function makeUsername(prefix: string, roleName: string): string {
  const room = MAX_IDENTIFIER_BYTES - prefix.length - SUFFIX_LENGTH - 2;
  const role = roleName.replace(/[^a-z0-9_]/g, '_').slice(0, Math.max(0, room));
  return `${prefix}_${role}_${randomName(SUFFIX_LENGTH)}`;
}

/** Where and how a workload connects: the credential's non-secret fields. */
function connectionInfo(mount: PostgresMount): Record<string, string | number> {
  const url = new URL(mount.connection_url);
  return {
    host: mount.connection_host ?? (url.hostname || 'localhost'),
    port: mount.connection_port ?? (Number(url.port) || 5432),
    database: mount.connection_database ?? (decodeURIComponent(url.pathname.slice(1)) || 'postgres'),
    ...(mount.client_sslmode ? { sslmode: mount.client_sslmode } : {}),
    ...(mount.client_sslrootcert ? { sslrootcert: mount.client_sslrootcert } : {}),
  };
}

export class PostgresTarget implements Target<PostgresRole> {
  private readonly pool: pg.Pool;
  /** One connection of its own, so a stuck issue can be ended even when the pool is exhausted. */
  private readonly control: pg.Pool;
  private readonly connection: Record<string, string | number>;
  private readonly roleLocks = new KeyedLock();
  private readonly cleanups = new Batcher(
    (items: { kind: CleanupKind; handle: PostgresHandle }[]) => this.cleanUpAll(items),
    CLEANUP_BATCH,
  );
  private privileges: { checkedAt: number; failure: string | null } | null = null;

  /** `tls`: connection_url and ssl as pgTlsOptions read them. */
  constructor(
    private readonly mount: PostgresMount,
    private readonly ctx: EngineContext,
    private readonly tls: PgTls,
  ) {
    this.connection = connectionInfo(mount);
    const common = {
      ...pgConnectionConfig(tls),
      connectionTimeoutMillis: ctx.timeoutMs,
      idleTimeoutMillis: 30_000,
    };
    this.pool = new pg.Pool({
      ...common,
      max: mount.max_open_connections,
      statement_timeout: ctx.timeoutMs,
      application_name: `credbroker:${ctx.mount}`,
    });
    this.control = new pg.Pool({
      ...common,
      max: 1,
      statement_timeout: ctx.timeoutMs,
      application_name: `credbroker:${ctx.mount}:control`,
    });
    // An idle client losing its connection (target restarted) must not crash the broker.
    for (const pool of [this.pool, this.control])
      pool.on('error', (err) => ctx.log.warn({ mount: ctx.mount, err: err.message }, 'target connection lost'));
  }

  async ping(): Promise<void> {
    await this.explained(this.pool.query('SELECT 1'));
  }

  /**
   * A failure to reach the target, said in words with what to check (a wrong ssl.ca_file…); any
   * other error as it is. Applied where an error leaves the engine, so retries inside still see
   * the driver's own errors and codes.
   */
  private async explained<T>(work: Promise<T>): Promise<T> {
    try {
      return await work;
    } catch (err) {
      const reason = describeConnectError(err, `mounts.${this.ctx.mount}`);
      throw reason ? new Error(`cannot connect to the target: ${reason}`) : err;
    }
  }

  plan(req: PlanRequest<PostgresRole>): PostgresHandle {
    const handle: PostgresHandle = { username: makeUsername(this.mount.username_prefix, req.roleName) };
    if (req.role.creation_statements) handle.lock = `${req.mount}/${req.roleName}`;
    if (req.role.revocation_statements) handle.revocation_statements = req.role.revocation_statements;
    return handle;
  }

  async verify(roles: PostgresRole[]): Promise<VerifyCheck[]> {
    return this.explained(
      checkPrivileges(
        this.pool,
        roles.flatMap((r) => r.member_of ?? []),
      ),
    );
  }

  issue(req: IssueRequest<PostgresRole>): Promise<IssueResponse> {
    return this.explained(this.issueRole(req));
  }

  private async issueRole(req: IssueRequest<PostgresRole>): Promise<IssueResponse> {
    await this.ensureCanTakeBack();
    const handle = req.handle as PostgresHandle;
    const { username } = handle;
    const password = randomSecret();
    req.secrets.add(password);
    const verifier = scramVerifier(password, this.mount.scram_iterations);
    req.secrets.add(verifier);
    const expiration = pgTimestamp(req.expiresAt);
    const tag = issuerTag(username);
    await this.endIfStuck(tag, async () => {
      if (req.role.creation_statements) {
        const statements = req.role.creation_statements.map((t) =>
          renderStatement(t, { name: username, password: verifier, expiration }),
        );
        const lock = typeof handle.lock === 'string' ? handle.lock : `${this.ctx.mount}/${req.roleName}`;
        await this.roleLocks.run(lock, () => this.transaction(statements, { tag, lock }));
      } else {
        await this.transaction(this.createRoleStatements(req.role, username, verifier, expiration), { tag });
      }
    });
    return { data: { username, password, ...this.connection } };
  }

  private createRoleStatements(role: PostgresRole, username: string, verifier: string, expiration: string): string[] {
    const parts = [`CREATE ROLE ${escapeIdentifier(username)} WITH LOGIN INHERIT`];
    parts.push(`PASSWORD ${escapeLiteral(verifier)}`, `VALID UNTIL ${escapeLiteral(expiration)}`);
    if (role.connection_limit !== undefined) parts.push(`CONNECTION LIMIT ${role.connection_limit}`);
    parts.push(`IN ROLE ${role.member_of!.map(escapeIdentifier).join(', ')}`);
    const statements = [parts.join(' ')];
    if (role.search_path)
      statements.push(
        `ALTER ROLE ${escapeIdentifier(username)} SET search_path TO ${role.search_path.map(escapeIdentifier).join(', ')}`,
      );
    return statements;
  }

  /**
   * A mount that could not end the sessions of what it issues must not issue. Checked on the
   * first issue (a target down at start must not fail the broker), then trusted; a failure is
   * checked again every few seconds, so a GRANT takes effect without a restart.
   */
  private async ensureCanTakeBack(): Promise<void> {
    const known = this.privileges;
    if (known && (known.failure === null || Date.now() - known.checkedAt < RECHECK_FAILED_PRIVILEGES_MS)) {
      if (known.failure) throw new Error(known.failure);
      return;
    }
    let checks;
    try {
      checks = await checkPrivileges(this.pool, []);
    } catch {
      return; // unreachable or refused: the issue itself fails with the target's own error
    }
    const missing = checks.filter((c) => !c.ok && REQUIRED_TO_ISSUE.has(c.check));
    const failure = missing.length
      ? `refusing to issue a credential the broker could not take back: ${missing.map((c) => `${c.detail}; fix: ${c.fix}`).join('; ')}`
      : null;
    this.privileges = { checkedAt: Date.now(), failure };
    if (failure) throw new Error(failure);
  }

  /**
   * Bounds an issuing transaction as a whole (statement_timeout only bounds each statement): just
   * before the engine timeout, the backend running it is terminated, which rolls it back. So a
   * timed-out issue can never commit a role after the broker stopped waiting for it.
   */
  private async endIfStuck(tag: string, work: () => Promise<void>): Promise<void> {
    const timer = setTimeout(
      () => {
        this.control
          .query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [tag])
          .catch((err: Error) => {
            this.ctx.log.warn(
              { mount: this.ctx.mount, err: err.message },
              'could not end a stuck issue; the reaper will',
            );
          });
      },
      Math.max(1, this.ctx.timeoutMs * 0.9),
    );
    try {
      await work();
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Runs statements in one transaction, sent as one simple query, so an advisory lock is held only
   * for the server's own work, never across client round trips. Concurrent GRANTs on one object
   * fail with "tuple concurrently updated"; that SQLSTATE (and deadlocks, serialization failures)
   * is retried a bounded number of times for statements we do not control.
   */
  private async transaction(statements: string[], opts: TransactionOptions = {}): Promise<void> {
    const prologue = ['BEGIN'];
    if (opts.tag) prologue.push(`SET LOCAL application_name = ${escapeLiteral(opts.tag)}`);
    for (const key of [...(opts.lock ? [opts.lock] : []), ...[...new Set(opts.alsoLock ?? [])].sort()])
      prologue.push(`SELECT pg_advisory_xact_lock(hashtext(${escapeLiteral(`credbroker ${key}`)}))`);
    const sql = [...prologue, ...statements, 'COMMIT'].join(';\n');
    for (let attempt = 1; ; attempt++) {
      try {
        await this.withClient(async (client) => {
          try {
            await client.query(sql);
          } catch (err) {
            await client.query('ROLLBACK').catch(() => undefined);
            throw err;
          }
        });
        return;
      } catch (err) {
        const code = sqlstate(err);
        if (!code || !RETRYABLE.has(code) || attempt >= MAX_STATEMENT_ATTEMPTS) throw err;
        await sleep(Math.random() * 20 * attempt);
      }
    }
  }

  /**
   * A pooled client for several queries. While checked out, a client whose backend is terminated
   * (a stuck issue ended by endIfStuck) emits 'error' with no pool listener: caught here, and the
   * client is discarded rather than returned to the pool.
   */
  private async withClient<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let lost: Error | undefined;
    const onError = (err: Error) => (lost = err);
    client.on('error', onError);
    try {
      return await work(client);
    } finally {
      client.off('error', onError);
      client.release(lost);
    }
  }

  renew(req: RenewRequest<PostgresRole>): Promise<void> {
    return this.explained(this.renewRole(req));
  }

  private async renewRole(req: RenewRequest<PostgresRole>): Promise<void> {
    const { username } = req.handle as PostgresHandle;
    const expiration = pgTimestamp(req.expiresAt);
    if (req.role.renew_statements) {
      await this.transaction(req.role.renew_statements.map((t) => renderStatement(t, { name: username, expiration })));
      return;
    }
    await this.pool.query(`ALTER ROLE ${escapeIdentifier(username)} VALID UNTIL ${escapeLiteral(expiration)}`);
  }

  /**
   * Takes the credential's power away, then cleans up: a leased user can make DROP ROLE fail (a
   * temporary table is enough) and must not keep its sessions meanwhile. Idempotent. When only
   * the cleanup fails, the error is a CredentialDisabled: the role can no longer log in and has
   * no session left, and the retry only has the cleanup to do.
   */
  revoke(req: RevokeRequest): Promise<void> {
    return this.explained(this.revokeRole(req));
  }

  private async revokeRole(req: RevokeRequest): Promise<void> {
    const handle = req.handle as PostgresHandle;
    const statements = handle.revocation_statements as string[] | undefined;
    const disable = (expectRole: boolean) =>
      this.pool.query(
        disableAndEndSessionsSql(handle.username, { drop: !statements, expectRole }),
      ) as unknown as Promise<pg.QueryResult<{ remains: boolean }>[]>;
    const disableOnce = () =>
      disable(true).catch((err) => {
        if (sqlstate(err) !== UNDEFINED_OBJECT) throw err;
        return disable(false); // revoked already, or its issue still running: that path ends it first
      });
    // DROP ROLE of a group's member and a concurrent CREATE ROLE … IN ROLE that group (or another
    // member's DROP) write the same catalog rows: XX000 "tuple concurrently updated". Every step
    // is idempotent, so the whole disable is retried, as transaction() retries statements.
    let results: pg.QueryResult<{ remains: boolean }>[];
    for (let attempt = 1; ; attempt++) {
      try {
        results = await disableOnce();
        break;
      } catch (err) {
        const code = sqlstate(err);
        if (!code || !RETRYABLE.has(code) || attempt >= MAX_STATEMENT_ATTEMPTS) throw err;
        await sleep(Math.random() * 20 * attempt);
      }
    }
    if (!results.at(-1)!.rows[0]!.remains) return;
    await this.cleanUp(statements ? 'statements' : 'owned', handle);
  }

  /** Revokes each within the mount's bound, reporting each outcome as it is final; one failure never fails another. */
  async revokeMany(reqs: RevokeRequest[], slots: Limiter, progress?: RevokeProgress): Promise<(Error | null)[]> {
    const errors = await Promise.all(
      reqs.map((req, i) =>
        slots.run(() =>
          this.revoke(req).then(
            () => (progress?.onResult(i, null), null),
            (err: Error) => (progress?.onResult(i, err), err),
          ),
        ),
      ),
    );
    // Sessions of roles dropped before this version revoked in the safe order; best effort.
    await this.pool.query(TERMINATE_ORPHAN_SESSIONS).catch((err: Error) => {
      this.ctx.log.warn({ mount: this.ctx.mount, err: err.message }, 'orphaned-session sweep failed');
    });
    return errors;
  }

  /**
   * The role is disabled and sessionless by now: what is left is cleanup, and a failure here
   * leaves only cleanup to do. Cleanups touch shared catalog rows (the ACL of a table that several
   * roles were granted), so concurrent ones deadlock or fail with "tuple concurrently updated":
   * they are batched instead, one transaction for all those waiting, one batch at a time on the
   * mount (and across replicas, under an advisory lock).
   */
  private async cleanUp(kind: CleanupKind, handle: PostgresHandle): Promise<void> {
    const error = await this.cleanups.run({ kind, handle });
    if (error)
      throw new CredentialDisabled(
        `role ${handle.username} can no longer log in and has no session, but cleanup failed: ${error.message}`,
      );
  }

  private async cleanUpAll(items: { kind: CleanupKind; handle: PostgresHandle }[]): Promise<(Error | null)[]> {
    const outcomes = new Map<PostgresHandle, Error | null>();
    for (const kind of ['statements', 'owned'] as const) {
      const handles = items.filter((i) => i.kind === kind).map((i) => i.handle);
      if (handles.length === 0) continue;
      const errors = await this.cleanUpBatch(kind, `${this.ctx.mount}/cleanup`, handles);
      handles.forEach((h, i) => outcomes.set(h, errors[i]!));
    }
    return items.map((i) => outcomes.get(i.handle) ?? null);
  }

  /** One outcome per handle. All together first; if that fails, one by one, so one bad role fails alone. */
  private async cleanUpBatch(kind: CleanupKind, lock: string, handles: PostgresHandle[]): Promise<(Error | null)[]> {
    const run = (group: PostgresHandle[]) =>
      kind === 'owned' ? this.dropOwnedThenRoles(group, lock) : this.runRevocationStatements(group, lock);
    try {
      await run(handles);
      return handles.map(() => null);
    } catch (err) {
      if (handles.length === 1) return [err as Error];
    }
    const outcomes: (Error | null)[] = [];
    for (const handle of handles)
      outcomes.push(
        await run([handle]).then(
          () => null,
          (err: Error) => err,
        ),
      );
    return outcomes;
  }

  /** Operator statements may assume the role exists; a role that is gone is revoked already. */
  private async runRevocationStatements(handles: PostgresHandle[], lock: string): Promise<void> {
    const { rows } = await this.pool.query<{ rolname: string }>(
      'SELECT rolname FROM pg_roles WHERE rolname = ANY($1)',
      [handles.map((h) => h.username)],
    );
    const existing = new Set(rows.map((r) => r.rolname));
    const live = handles.filter((h) => existing.has(h.username));
    if (live.length === 0) return;
    const statements = live.flatMap((h) => [
      ...(h.revocation_statements as string[]).map((t) => renderStatement(t, { name: h.username })),
      `DROP ROLE IF EXISTS ${escapeIdentifier(h.username)}`,
    ]);
    // The operator's revocation statements touch what the role's creation statements GRANTed (a
    // table's ACL row): under the role's own lock, as its issues run, they wait for an issue in
    // flight instead of failing with "tuple concurrently updated" while issues keep coming.
    const roleLocks = live.flatMap((h) => (typeof h.lock === 'string' ? [h.lock] : []));
    try {
      await this.transaction(statements, { lock, alsoLock: roleLocks });
    } catch (err) {
      if (sqlstate(err) !== DEPENDENT_OBJECTS_STILL_EXIST) throw err;
      await this.dropOwnedThenRoles(live, lock);
    }
  }

  /**
   * What the roles own or were granted goes (or is reassigned), in every database of the cluster
   * where they have any; the databases the broker cannot reach are named in the error.
   */
  private async dropOwnedThenRoles(handles: PostgresHandle[], lock: string): Promise<void> {
    const usernames = handles.map((h) => h.username);
    const names = usernames.map(escapeIdentifier).join(', ');
    const reassignTo = this.mount.revoke_owned === 'reassign' ? this.mount.reassign_owned_to : undefined;
    const { here, deps } = await this.withClient(async (client) => {
      const { rows } = await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [
        usernames,
      ]);
      // Without superuser, DROP OWNED needs the roles' privileges: the admin created them, so it
      // may join them; the membership goes with the roles.
      if (rows.length)
        await client
          .query(`GRANT ${rows.map((r) => escapeIdentifier(r.rolname)).join(', ')} TO CURRENT_USER`)
          .catch(() => undefined);
      const here = (await client.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db;
      return { here, deps: await roleDependencies(client, usernames) };
    });
    if (deps.shared.length)
      throw new Error(`${deps.shared.join(', ')} belong to a leased role; drop or reassign them, then retry`);
    const failures: string[] = [];
    const statements = dropOwnedStatements(usernames, reassignTo);
    for (const database of deps.databases) {
      if (database === here) {
        await this.transaction(statements, { lock });
        continue;
      }
      const other = new pg.Client({
        ...pgConnectionConfig(this.tls),
        connectionString: urlForDatabase(this.tls.connectionString, database),
        connectionTimeoutMillis: this.ctx.timeoutMs,
        statement_timeout: this.ctx.timeoutMs,
      });
      other.on('error', () => undefined); // a lost connection fails the query below
      try {
        await other.connect();
        await other.query(['BEGIN', ...statements, 'COMMIT'].join(';\n'));
      } catch (err) {
        const reason = describeConnectError(err, `mounts.${this.ctx.mount}`);
        failures.push(`database ${database}: ${reason ? `cannot connect: ${reason}` : (err as Error).message}`);
      } finally {
        await other.end().catch(() => undefined);
      }
    }
    if (failures.length) throw new Error(`objects or privileges of the role remain in ${failures.join('; ')}`);
    await this.pool.query(`DROP ROLE IF EXISTS ${names}`);
  }

  /** Roles named like this mount's (the prefix, the role, the random suffix), leased or not. */
  listOwned(): Promise<OwnedListing> {
    return this.explained(listOwnedRoles(this.pool, this.mount.username_prefix, SUFFIX_LENGTH));
  }

  connectionPool(): ConnectionPoolStats {
    return { total: this.pool.totalCount, idle: this.pool.idleCount, waiting: this.pool.waitingCount };
  }

  async close(): Promise<void> {
    await Promise.all([this.pool.end(), this.control.end()]);
  }
}
