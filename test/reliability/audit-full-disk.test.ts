import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { randomName, randomSecret } from '../../src/random.js';
import { AnswerLog } from '../support/answer-log.js';
import { api, testConfig } from '../support/broker.js';
import { startBrokerProcess } from '../support/broker-process.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';
import {
  checkInvariants,
  killAndWait,
  recordFigures,
  LoadDriver,
  loadRoles,
  sleep,
  waitStoreDrained,
} from '../support/reliability.js';

/**
 * Issue 10, "audit sink on a full filesystem": the broker's only audit sink is a file on a small
 * tmpfs. Under a steady load, a filler file takes every byte left; while it is there every
 * request must fail closed (503, no credential handed out, no role left behind), the audit file
 * must hold only whole JSON lines, and once the filler is gone the same process serves again.
 * Where the machine does not let us mount a tmpfs, the sink is /dev/full (every write ENOSPC):
 * then only the fail-closed half can be shown, and the test says so.
 */
const PREFIX = 'raudit';
const DIST_BROKER = fileURLToPath(new URL('../../dist/src/broker.js', import.meta.url));
/** The audit file of the whole run (~500 bytes a line, two lines a request: 100-220 KB here) fits in it. */
const TMPFS_SIZE = '512k';
/** tmpfs allocates a file's space in pages. */
const PAGE = 4096;
const WARM_MS = 2000;
const FULL_MS = 3000;
const AFTER_FREED_MS = 2000;
const RECOVERY_BOUND_MS = 2000;
const CLIENT_LOOPS = 2;
const TTL_SECONDS = 3;
const MAX_TTL_SECONDS = 8;
const MAX_OUTLIVE_MS = 5000;
const DRAIN_TIMEOUT_MS = 20_000;
const LOG_TABLE = 'public.raudit_drops';

const dir = join(tmpdir(), `credbroker-raudit-${randomName(10)}`);
let mounted = false;
let auditPath: string;
let storeDb: string;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  if (!existsSync(DIST_BROKER)) throw new Error(`${DIST_BROKER} is missing: run \`npm run build\` before this test`);
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE}`, 'tmpfs', dir], { stdio: 'pipe' });
    mounted = true;
    auditPath = join(dir, 'audit.log');
  } catch (err) {
    auditPath = '/dev/full';
    console.info(
      `audit full disk: mount of a tmpfs refused (${(err as Error).message.split('\n')[0]}); the sink is /dev/full`,
    );
  }
  storeDb = await freshStoreDatabase('raudit');
  target = await freshTargetDatabase(PREFIX);
  await adminQuery(
    target.database,
    `CREATE TABLE ${LOG_TABLE} (name text NOT NULL, dropped_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );
});

afterAll(async () => {
  for (const child of children) await killAndWait(child);
  if (mounted) execFileSync('umount', [dir]);
  rmSync(dir, { recursive: true, force: true });
  await dropRolesWithPrefix(PREFIX);
});

/** Writes a file until the filesystem refuses with ENOSPC; returns its size. */
function fillUp(path: string): number {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4096, 0x2e);
  let written = 0;
  try {
    for (;;) written += writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return written;
}

describe('the only audit sink on a full filesystem, under load', () => {
  it(
    'fails closed while the disk is full (503, no credential, no role), writes no torn record, and serves again once space returns',
    { timeout: 60_000 },
    async () => {
      const config = configSchema.parse({
        ...testConfig({
          storeDatabase: storeDb,
          targetDatabase: target.database,
          prefix: PREFIX,
          engineTimeout: 2,
          reaper: { pending_grace: 3 },
          roles: loadRoles({
            group: target.group,
            logTable: LOG_TABLE,
            ttlSeconds: TTL_SECONDS,
            maxTtlSeconds: MAX_TTL_SECONDS,
          }),
        }),
        audit: { hmac_key: randomSecret(), file: { path: auditPath } },
      });
      const broker = await startBrokerProcess({ config }, children, { reaper: true });
      const pid = broker.child.pid;
      const log = new AnswerLog();
      const uninstall = log.install();
      const load = new LoadDriver({ clientLoops: CLIENT_LOOPS, ttlSeconds: TTL_SECONDS, requestTimeoutMs: 10_000 });
      load.urls = [broker.url];
      const running = load.run();
      let fullAt: number;
      let freedAt = 0;
      let fillerBytes = 0;
      let probe: { status: number; body: unknown } | undefined;
      let sizeAtFull: number;
      let sizeAtFreed = 0;
      const filler = join(dir, 'filler');
      try {
        if (mounted) {
          await sleep(WARM_MS);
          fillerBytes = fillUp(filler);
        }
        fullAt = Date.now();
        sizeAtFull = mounted ? statSync(auditPath).size : 0;
        // The audit file's last page may still take a line or two (tmpfs allocates whole pages): the
        // first refusal comes once the broker's records no longer fit in it.
        for (let i = 0; i < 40 && probe?.status !== 503; i++) {
          const res = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: 'db/creds/reader/probe' });
          probe = { status: res.status, body: res.body };
        }
        await sleep(FULL_MS - (Date.now() - fullAt));
        if (mounted) {
          freedAt = Date.now();
          sizeAtFreed = statSync(auditPath).size;
          rmSync(filler);
          await sleep(AFTER_FREED_MS);
        }
        load.stop();
        await running;
        console.info('audit full disk: answers:', Object.fromEntries([...load.answers].sort()));
        await waitStoreDrained(storeDb, DRAIN_TIMEOUT_MS);
      } finally {
        load.stop();
        uninstall();
      }

      // Fail closed: while the disk was full a request was refused, saying why, unless its records
      // fitted in what was left of the audit file's last page (and then they are in the file: below).
      const whileFull = log
        .startedBetween(fullAt, mounted ? freedAt : Infinity)
        .filter((a) => !mounted || a.endedAt < freedAt);
      const refused = whileFull.filter((a) => a.status === 503);
      const notRefused = whileFull.filter((a) => a.status !== 503);
      expect(whileFull.length, 'requests answered while the disk was full').toBeGreaterThan(20);
      expect(probe, 'a lookup once the audit file is full').toEqual({
        status: 503,
        body: { errors: ['audit log unavailable: request refused'] },
      });
      expect([...new Set(refused.map((a) => a.errorBody))], 'what the refusals said').toEqual([
        JSON.stringify({ errors: ['audit log unavailable: request refused'] }),
      ]);
      expect(
        notRefused.filter((a) => a.status === null || a.status >= 500),
        'failures other than the refusal while the disk was full',
      ).toEqual([]);

      const received = [...load.received.values()];
      // A credential issued but refused at its response record is taken back at once, not left to its TTL.
      const notReceived = await adminQuery<{ id: string; state: string; early: boolean }>(
        storeDb,
        `SELECT id, state, revoked_at < expires_at AS early FROM credbroker_leases WHERE NOT (id = ANY($1))`,
        [received.map((l) => l.id)],
      );
      expect(
        notReceived.filter((l) => !l.early).map((l) => `${l.id}: ${l.state}`),
        'leases no client received that were not revoked before their expiry',
      ).toEqual([]);
      const leasesNotReceived = notReceived.length;
      let figures: Record<string, unknown> = {
        sink: mounted ? `tmpfs size=${TMPFS_SIZE}` : '/dev/full',
        filler_bytes: fillerBytes,
        answers_while_full: whileFull.length,
        served_while_full: notRefused.length,
        leases_not_received: leasesNotReceived,
      };

      if (mounted) {
        // No torn record: every line is a whole JSON object, and every credential handed out has its response record.
        const text = readFileSync(auditPath, 'utf8');
        const lines = text.split('\n');
        expect(lines.pop(), 'the audit file ends with a newline').toBe('');
        const unparsable = lines.filter((line) => {
          try {
            return typeof JSON.parse(line) !== 'object';
          } catch {
            return true;
          }
        });
        expect(unparsable.slice(0, 3), 'audit lines that do not parse as JSON').toEqual([]);
        // Nothing was written past the space there was: at most the rest of the file's last page,
        // and each request served meanwhile needed two records there.
        const slack = Math.ceil(sizeAtFull / PAGE) * PAGE - sizeAtFull;
        expect(sizeAtFreed - sizeAtFull, 'bytes the audit file grew while the disk was full').toBeLessThanOrEqual(
          slack,
        );
        const shortestLine = Math.min(...lines.map((line) => Buffer.byteLength(line) + 1));
        expect(
          notRefused.length,
          `requests served while the disk was full (the page's last ${slack} bytes, ≥ ${2 * shortestLine} a request)`,
        ).toBeLessThanOrEqual(Math.floor(slack / (2 * shortestLine)));
        const audited = new Set(
          lines
            .map((line) => JSON.parse(line) as { type?: string; status?: number; lease_id?: string })
            .filter((r) => r.type === 'response' && r.status === 200 && r.lease_id)
            .map((r) => r.lease_id!),
        );
        expect(
          received.filter((l) => !audited.has(l.id)).map((l) => l.id),
          'credentials handed out without a response record in the audit log',
        ).toEqual([]);
        // Counted, not asserted: a reaper revocation made while the disk is full goes ahead without its event.
        const events = new Set(
          lines
            .map((line) => JSON.parse(line) as { type?: string; operation?: string; lease_id?: string })
            .filter((r) => r.type === 'event' && r.operation === 'revoked')
            .map((r) => r.lease_id),
        );
        const [{ ids: reaped }] = await adminQuery(
          storeDb,
          `SELECT coalesce(array_agg(id), '{}') AS ids FROM credbroker_leases WHERE revoke_reason = 'expired'`,
        );
        const reapedWithoutEvent = (reaped as string[]).filter((id) => !events.has(id)).length;

        // Space returned: the same process serves again.
        const firstIssue = log.answers
          .filter((a) => a.path.startsWith('/v1/db/creds/') && a.status === 200 && a.startedAt >= freedAt)
          .sort((a, b) => a.endedAt - b.endedAt)[0];
        expect(firstIssue, 'an issue answered 200 once the filler was removed').toBeDefined();
        const recoveredAfterMs = firstIssue!.endedAt - freedAt;
        expect(recoveredAfterMs, 'ms from the filler removed to the first issue answered 200').toBeLessThanOrEqual(
          RECOVERY_BOUND_MS,
        );
        expect({ pid: broker.child.pid, exitCode: broker.child.exitCode, signal: broker.child.signalCode }).toEqual({
          pid,
          exitCode: null,
          signal: null,
        });
        figures = {
          ...figures,
          audit_lines: lines.length,
          audit_bytes: statSync(auditPath).size,
          torn_lines: unparsable.length,
          reaped_without_event: reapedWithoutEvent,
          recovered_after_ms: recoveredAfterMs,
        };
      }

      const invariants = await checkInvariants({
        label: 'audit full disk',
        storeDb,
        targetDb: target.database,
        prefix: PREFIX,
        group: target.group,
        logTable: LOG_TABLE,
        received,
        maxOutliveMs: MAX_OUTLIVE_MS,
        minReceivedPerForm: mounted ? 10 : 0,
        minExpiredPerForm: mounted ? 5 : 0,
      });
      recordFigures('audit full disk', {
        answersWhileFull: Number(figures.answers_while_full),
        tornAuditLines: Number(figures.torn_lines ?? 0),
      });
      console.info('audit full disk figures:', JSON.stringify({ ...figures, ...invariants }));
    },
  );
});
