import { randomInt } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { pgConnectionConfig, type PgTls } from './pg-ssl.js';

/** The first key of every broker's process lock (pg_advisory_lock(int4, int4)): "cbr1". */
export const PROCESS_LOCK_CLASS = 0x63627231;
const RECONNECT_MS = 1000;

/**
 * The process lock keys held right now on the store's database, as a subquery whose one
 * parameter is PROCESS_LOCK_CLASS: a claim whose holder is not among them belongs to a process
 * that is gone.
 */
export const liveHoldersSql = (classParam: string): string =>
  `SELECT l.objid::bigint FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.classid = ${classParam}::bigint AND l.objsubid = 2 AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;

/**
 * A session advisory lock this process holds on the store for as long as it runs, under a random
 * key recorded on the claims it makes. PostgreSQL releases it the moment the process's connection
 * ends, so a replica that was killed is seen to be gone at once (pg_locks), and the leases it was
 * revoking are taken over at the next tick instead of after their claim TTL. The TTL stays the
 * fallback: while the lock is not held (the store restarted), claims carry no holder.
 */
export class ProcessLock {
  private key = randomInt(1, 2 ** 31 - 1);
  private client: pg.Client | null = null;
  private held = false;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;

  constructor(
    private readonly tls: PgTls,
    private readonly log: Logger,
  ) {}

  /** The key while the lock is held, else null. */
  holder(): number | null {
    return this.held ? this.key : null;
  }

  async acquire(): Promise<void> {
    const client = new pg.Client({ ...pgConnectionConfig(this.tls), application_name: 'credbroker:process-lock' });
    const lost = () => {
      if (this.client !== client) return;
      this.held = false;
      this.client = null;
      if (!this.closed) {
        this.log.warn('process lock on the lease store lost; claims fall back to their TTL until it is back');
        this.scheduleRetry();
      }
    };
    client.on('error', lost);
    client.on('end', lost);
    this.client = client;
    try {
      await client.connect();
      // Never wait for a lock: a key another live process holds (one chance in 2^31) is swapped.
      for (;;) {
        const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::int, $2::int) AS ok', [
          PROCESS_LOCK_CLASS | 0,
          this.key,
        ]);
        if (rows[0]!.ok) break;
        this.key = randomInt(1, 2 ** 31 - 1);
      }
      this.held = !this.closed;
    } catch (err) {
      await client.end().catch(() => undefined);
      lost();
      throw err;
    }
  }

  private scheduleRetry(): void {
    if (this.retry || this.closed) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      this.acquire().catch(() => undefined);
    }, RECONNECT_MS);
    this.retry.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.held = false;
    if (this.retry) clearTimeout(this.retry);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }
}
