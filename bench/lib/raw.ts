import pg from 'pg';
import { scramVerifier } from '../../engines/postgres/scram.js';
import { pgTimestamp } from '../../engines/postgres/statements.js';
import { randomName, randomSecret } from '../../src/random.js';
import type { EmbeddedServer } from '../../src/store/embedded-postgres.js';

const { escapeIdentifier: id, escapeLiteral: lit } = pg;

/**
 * What the broker must do at minimum per lease, done directly with `pg`: a pending lease row,
 * CREATE ROLE with a SCRAM verifier, the row marked active. Same server, same databases.
 */
export class RawIssuer {
  readonly store: pg.Pool;
  readonly target: pg.Pool;

  constructor(
    server: EmbeddedServer,
    storeDb: string,
    targetDb: string,
    connections: number,
    private readonly opts: { prefix: string; group: string; iterations: number; grantTable?: string },
  ) {
    this.store = new pg.Pool({ connectionString: server.url(storeDb), max: connections });
    this.target = new pg.Pool({ connectionString: server.url(targetDb), max: connections });
  }

  async issue(): Promise<void> {
    const leaseId = `raw/creds/r/${randomName(24)}`;
    const user = `${this.opts.prefix}_r_${randomName(16)}`;
    const verifier = scramVerifier(randomSecret(), this.opts.iterations);
    await this.store.query(
      `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, expires_at, max_expires_at, next_attempt_at)
       VALUES ($1, 'raw', 'r', 'postgres', 'pending', $2, now() + interval '1 hour', now() + interval '1 day', now() + interval '1 minute')`,
      [leaseId, { username: user }],
    );
    const expiry = lit(pgTimestamp(new Date(Date.now() + 3600_000)));
    if (this.opts.grantTable) {
      await this.grantIssue(user, verifier, expiry);
    } else {
      await this.target.query(
        `CREATE ROLE ${id(user)} WITH LOGIN PASSWORD ${lit(verifier)} VALID UNTIL ${expiry} IN ROLE ${id(this.opts.group)}`,
      );
    }
    await this.store.query(
      `UPDATE credbroker_leases SET state = 'active', next_attempt_at = expires_at WHERE id = $1 AND state = 'pending'`,
      [leaseId],
    );
  }

  /** CREATE ROLE + GRANT in a transaction, retrying "tuple concurrently updated" as a raw client must. */
  private async grantIssue(user: string, verifier: string, expiry: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const client = await this.target.connect();
      try {
        await client.query(
          `BEGIN; CREATE ROLE ${id(user)} WITH LOGIN PASSWORD ${lit(verifier)} VALID UNTIL ${expiry}; GRANT SELECT ON ${this.opts.grantTable} TO ${id(user)}; COMMIT`,
        );
        return;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        if ((err as { code?: string }).code !== 'XX000' || attempt > 20) throw err;
      } finally {
        client.release();
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.store.end(), this.target.end()]);
  }
}
