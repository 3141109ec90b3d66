import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { randomLeaseSuffix, randomSecret } from '../../src/random.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/store/embedded-postgres.js';
import { startTestBroker } from '../support/broker.js';
import { adminQuery, freshStoreDatabase, randomName } from '../support/pg.js';
import { recordFigures, sleep } from '../support/reliability.js';

/**
 * Issue 10, "target outage during a drain of expiries": the target is its own PostgreSQL server,
 * stopped for OUTAGE_MS while a broker's reaper (on its real timer) works through N leases whose
 * expiries are spread over the first seconds; then started again on the same port. Nothing may be
 * lost, every role must be gone, and `irrevocable` only as the attempts/backoff arithmetic allows.
 */
const LONG = process.env.RELIABILITY_LONG === '1';
const PREFIX = 'toutage';
const GROUP = `${PREFIX}_readers`;
const N = LONG ? 2000 : 500;
const OUTAGE_MS = LONG ? 30_000 : 10_000;
/** The leases' expiries are spread over this, from the seeding on; the outage starts at STOP_AFTER_MS. */
const EXPIRY_SPREAD_MS = 3000;
const STOP_AFTER_MS = 1000;
const DRAIN_AFTER_RETURN_MS = 20_000;

/**
 * The backoff of the store (markRevokeFailed): after the k-th failure (k = 1, 2, ...) the next
 * attempt waits min(backoff_max, backoff_base * 2^(k-1)) * (0.5 + random/2), and the
 * max_attempts-th failure makes the lease irrevocable.
 */
const BACKOFF = { backoff_base: 1, backoff_max: 2, max_attempts: LONG ? 40 : 16 };
const shortestWaitMs = (k: number) => 500 * Math.min(BACKOFF.backoff_max, BACKOFF.backoff_base * 2 ** (k - 1));
/** The shortest time from a lease's first failure to its `failures`-th. */
const shortestSpanMs = (failures: number) =>
  Array.from({ length: failures - 1 }, (_, i) => shortestWaitMs(i + 1)).reduce((a, b) => a + b, 0);
/** The most failures one lease can have in a window of `ms` (attempts are counted per failure). */
const mostFailuresWithin = (ms: number) => {
  let n = 1;
  while (shortestSpanMs(n + 1) <= ms) n++;
  return n;
};

const dataDir = join(tmpdir(), `credbroker-target-${randomName(10)}`);
const password = randomSecret();
let server: EmbeddedServer | null = null;
let port: number;
let storeDb: string;
let broker: Broker | null = null;

const startTarget = async () => {
  server = await startEmbeddedPostgres({ dataDir, password, persistent: true, port });
};
const targetQuery = async <R extends pg.QueryResultRow = any>(sql: string, params: unknown[] = []): Promise<R[]> => {
  const client = new pg.Client({ connectionString: server!.url('postgres') });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
};

beforeAll(async () => {
  server = await startEmbeddedPostgres({ dataDir, password, persistent: true });
  port = server.port;
  await targetQuery(`CREATE ROLE ${GROUP} NOLOGIN`);
  storeDb = await freshStoreDatabase('toutage');
});

afterAll(async () => {
  await broker?.close();
  // The target server is this file's own: its roles go with it.
  await server?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

describe('the target stopped during a drain of expiries, then started again', () => {
  it(
    `loses no lease, revokes every role once it is back, and makes none irrevocable within the attempts the backoff allows (${N} leases, ${OUTAGE_MS / 1000} s)`,
    { timeout: LONG ? 120_000 : 60_000 },
    async () => {
      // The arithmetic this configuration rests on: no lease can use up its attempts in the outage.
      const spanToIrrevocable = shortestSpanMs(BACKOFF.max_attempts);
      expect(spanToIrrevocable, 'the shortest time to irrevocable (ms) must exceed the outage').toBeGreaterThan(
        OUTAGE_MS + 2000,
      );

      broker = await startTestBroker({
        storeDatabase: storeDb,
        targetDatabase: 'postgres',
        prefix: PREFIX,
        roles: { r: { member_of: [GROUP] } },
        mount: { connection_url: server!.url('postgres') },
        reaper: { ...BACKOFF, pending_grace: 30 },
        engineTimeout: 2,
        scheduleReaper: true,
      });

      const usernames = Array.from({ length: N }, () => `${PREFIX}_r_${randomName(16)}`);
      const ids = usernames.map(() => `db/creds/r/${randomLeaseSuffix()}`);
      for (let i = 0; i < N; i += 500) {
        await targetQuery(
          usernames
            .slice(i, i + 500)
            .map((u) => `CREATE ROLE ${pg.escapeIdentifier(u)} LOGIN IN ROLE ${GROUP};`)
            .join('\n'),
        );
      }
      const seeded = Date.now();
      await adminQuery(
        storeDb,
        `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, requester, issued_at, expires_at, max_expires_at, next_attempt_at)
       SELECT id, 'db', 'r', 'postgres', 'active', jsonb_build_object('username', username), 'seed', now() - interval '1 hour', e, e + interval '1 hour', e
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(id, username, i),
              LATERAL (SELECT now() + make_interval(secs => (i - 1) * $3::float8 / $4) AS e) x`,
        [ids, usernames, EXPIRY_SPREAD_MS / 1000, N],
      );

      await sleep(Math.max(0, seeded + STOP_AFTER_MS - Date.now()));
      const stoppedAt = Date.now();
      await server!.stop();
      let returnedAt: number;
      try {
        const [before] = await adminQuery(
          storeDb,
          `SELECT count(*) FILTER (WHERE state = 'revoked')::int AS revoked FROM credbroker_leases`,
        );
        await sleep(OUTAGE_MS - (Date.now() - stoppedAt));
        const [during] = await adminQuery(
          storeDb,
          `SELECT count(*) FILTER (WHERE state = 'revoked')::int AS revoked, count(*) FILTER (WHERE attempts > 0)::int AS failed, max(attempts)::int AS max_attempts FROM credbroker_leases`,
        );
        console.info(
          `target outage: ${N} leases; revoked when the target stopped ${before.revoked}, at its return ${during.revoked}; ${during.failed} with failed attempts, at most ${during.max_attempts}`,
        );
      } finally {
        // Always back, whatever failed above: afterAll stops it and the next file needs nothing from it.
        await startTarget();
        returnedAt = Date.now();
      }

      const deadline = returnedAt + DRAIN_AFTER_RETURN_MS;
      for (;;) {
        const [row] = await adminQuery(
          storeDb,
          `SELECT count(*) FILTER (WHERE state IN ('revoked', 'irrevocable'))::int AS done FROM credbroker_leases`,
        );
        if (row.done === N) break;
        if (Date.now() > deadline)
          throw new Error(
            `only ${row.done} of ${N} leases were revoked or irrevocable ${DRAIN_AFTER_RETURN_MS} ms after the target returned`,
          );
        await sleep(100);
      }
      const drainedAt = Date.now();

      const [fig] = await adminQuery(
        storeDb,
        `SELECT count(*)::int AS leases,
              count(*) FILTER (WHERE state = 'revoked')::int AS revoked,
              count(*) FILTER (WHERE state = 'irrevocable')::int AS irrevocable,
              count(*) FILTER (WHERE attempts > 0)::int AS retried,
              coalesce(sum(attempts), 0)::int AS failures,
              max(attempts)::int AS max_attempts
         FROM credbroker_leases`,
      );
      // Failures happen only while the target is away (and in the moment it takes to come back up).
      const window = returnedAt - stoppedAt + 2000;
      const allowed = mostFailuresWithin(window);
      console.info(
        `target outage figures: ${JSON.stringify({
          ...fig,
          outage_ms: returnedAt - stoppedAt,
          drained_after_return_ms: drainedAt - returnedAt,
          config: BACKOFF,
          shortest_ms_to_irrevocable: spanToIrrevocable,
          most_failures_allowed: allowed,
        })}`,
      );

      const left = await targetQuery(`SELECT rolname FROM pg_roles WHERE rolname LIKE $1 AND rolname <> $2`, [
        `${PREFIX}\\_%`,
        GROUP,
      ]);
      recordFigures('target-outage', {
        received: N,
        lost: N - fig.leases,
        orphans: left.length,
        irrevocable: fig.irrevocable,
        outageMs: returnedAt - stoppedAt,
      });
      expect(fig.leases, 'lease rows in the store').toBe(N);
      expect(fig.irrevocable, 'leases irrevocable although the backoff arithmetic allows none within the outage').toBe(
        0,
      );
      expect(fig.revoked, 'leases revoked once the target was back').toBe(N);
      // The outage did hit the drain: leases failed and were retried, and never more than the schedule allows.
      expect(fig.retried, 'leases whose revocation failed during the outage').toBeGreaterThan(0);
      expect(fig.max_attempts, `failed attempts of one lease within ${window} ms`).toBeLessThanOrEqual(allowed);
      expect(
        left.map((r) => r.rolname),
        'leased roles still on the target',
      ).toEqual([]);
    },
  );
});
