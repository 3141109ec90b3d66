import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { TestBrokerOptions } from '../support/broker.js';
import { startBrokerProcess } from '../support/broker-process.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';
import {
  checkInvariants,
  killAndWait,
  recordFigures,
  LoadDriver,
  loadRoles,
  randomBetween,
  sampleClaims,
  sleep,
  waitStoreDrained,
} from '../support/reliability.js';

/**
 * The kill storm of issue 9 section 6: one broker process, reaper on its real one-second timer,
 * SIGKILLed at random moments while clients issue, renew and revoke short leases of both role
 * forms; restarted on the same store each time. Afterwards every lease must be accounted for and
 * every expired role must have been revoked within 5 s of its expiry.
 */
const PREFIX = 'kstorm';
const DIST_BROKER = fileURLToPath(new URL('../../dist/src/broker.js', import.meta.url));

const LONG = process.env.RELIABILITY_LONG === '1';
const KILLS = LONG ? 50 : 10;
/** How long each broker lives before its SIGKILL: random in this range. */
const UPTIME_MS = [800, 2000] as const;
const CLIENT_LOOPS = 4;
const TTL_SECONDS = 3;
const MAX_TTL_SECONDS = 8;
/**
 * The bound issue 9 asks for: a role outlives its lease by at most this, even under a kill every
 * 0.8-2 s. It holds because a killed replica's claims are taken over at the next tick (its process
 * lock on the store is gone), not after their TTL: chained TTL waits measured 5-8 s before that.
 */
const MAX_OUTLIVE_MS = 5000;
const DRAIN_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 10_000;
const LOG_TABLE = 'public.kstorm_drops';
const CLAIM_SAMPLE_MS = 100;

let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
let storeDb: string;
let options: TestBrokerOptions;
/** One audit file for every broker of the storm: each appends whole lines to it. */
const auditFile = join(mkdtempSync(join(tmpdir(), 'kstorm-audit-')), 'audit.log');
const children = new Set<ChildProcess>();

beforeAll(async () => {
  if (!existsSync(DIST_BROKER)) throw new Error(`${DIST_BROKER} is missing: run \`npm run build\` before this test`);
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('kstorm');
  // Written by the statements form's revocation, in the transaction that drops the role.
  await adminQuery(
    target.database,
    `CREATE TABLE ${LOG_TABLE} (name text NOT NULL, dropped_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );
  options = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    // pending_grace must exceed engine_timeout; both short so a killed issue is cleaned up fast.
    engineTimeout: 2,
    reaper: { pending_grace: 3 },
    audit: { hmac_key: 'kill-storm-audit-hmac-key-0123456789abcdef', file: { path: auditFile } },
    roles: loadRoles({
      group: target.group,
      logTable: LOG_TABLE,
      ttlSeconds: TTL_SECONDS,
      maxTtlSeconds: MAX_TTL_SECONDS,
    }),
  };
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  // Whatever is still valid (or left behind by a failure above) goes with the prefix.
  await dropRolesWithPrefix(PREFIX);
});

/** Starts a broker process with its reaper scheduled; resolves with its URL once it listens. */
const brokerProcess = () => startBrokerProcess(options, children, { reaper: true });

describe('a broker SIGKILLed at random moments while clients issue, renew and revoke', () => {
  it(
    'loses no lease, leaves no orphan role, and revokes every expired role within 5 s of its expiry, for both role forms',
    { timeout: LONG ? 300_000 : 90_000 },
    async () => {
      const load = new LoadDriver({
        clientLoops: CLIENT_LOOPS,
        ttlSeconds: TTL_SECONDS,
        requestTimeoutMs: REQUEST_TIMEOUT_MS,
      });
      const timeline: { what: string; at: number }[] = [{ what: 'start', at: Date.now() }];
      let broker = await brokerProcess();
      timeline.push({ what: 'ready', at: Date.now() });
      load.urls = [broker.url];
      const running = load.run();
      // The claims seen on each lease being revoked, so a late revocation can be explained.
      const claims = sampleClaims(storeDb, CLAIM_SAMPLE_MS);

      try {
        for (let kill = 0; kill < KILLS; kill++) {
          await sleep(randomBetween(...UPTIME_MS));
          load.urls = [];
          timeline.push({ what: 'kill', at: Date.now() });
          await killAndWait(broker.child);
          broker = await brokerProcess();
          timeline.push({ what: 'ready', at: Date.now() });
          load.urls = [broker.url];
        }
        await sleep(randomBetween(...UPTIME_MS));
        load.stop();
        await running;

        console.info('kill storm answers:', Object.fromEntries([...load.answers].sort()));

        // The last broker drains: every lease issued in the storm gets measured.
        await waitStoreDrained(storeDb, DRAIN_TIMEOUT_MS);
      } finally {
        load.stop();
        await claims.stop();
      }

      recordFigures('kill storm', { kills: KILLS });
      await checkInvariants({
        label: 'kill storm',
        auditFiles: [auditFile],
        storeDb,
        targetDb: target.database,
        prefix: PREFIX,
        group: target.group,
        logTable: LOG_TABLE,
        received: [...load.received.values()],
        maxOutliveMs: MAX_OUTLIVE_MS,
        minReceivedPerForm: 20,
        minExpiredPerForm: 10,
        // Where each late revocation sits among the kills, for whoever has to explain it: the
        // claims it went through (claimed_until) and, for the statements form, when its role was
        // really dropped on the target.
        explainLate: (late, droppedAt) => {
          const at = (t: number) => `+${t - timeline[0]!.at}ms`;
          console.info('kill storm timeline:', timeline.map((e) => `${e.what} ${at(e.at)}`).join(', '));
          for (const l of late) {
            const dropped = droppedAt.get(l.username);
            console.info(
              `late: ${l.id} (${l.role}) expired ${at(l.expires_at.getTime())}, revoked ${at(l.revoked_at!.getTime())} (${l.revoked_at!.getTime() - l.expires_at.getTime()} ms)` +
                `${dropped ? `, role dropped ${at(dropped)}` : ''}; claimed until ${(claims.seen.get(l.id) ?? []).map(at).join(', ') || '(no claim seen)'}`,
            );
          }
        },
      });
    },
  );
});
