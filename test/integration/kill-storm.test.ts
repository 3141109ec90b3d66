import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, type TestBrokerOptions } from '../support/broker.js';
import { startBrokerProcess } from '../support/broker-process.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';

/**
 * The kill storm of issue 9 section 6: one broker process, reaper on its real one-second timer,
 * SIGKILLed at random moments while clients issue, renew and revoke short leases of both role
 * forms; restarted on the same store each time. Afterwards every lease must be accounted for and
 * every expired role must have been revoked within 5 s of its expiry.
 */
const PREFIX = 'kstorm';
const DIST_BROKER = fileURLToPath(new URL('../../dist/src/broker.js', import.meta.url));

const KILLS = 9;
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

type Form = 'member_of' | 'statements';
const ROLE_OF_FORM: Record<Form, string> = { member_of: 'reader', statements: 'granting' };

interface ReceivedLease {
  id: string;
  username: string;
  form: Form;
  /** The latest expiry a client was told: request start + lease_duration (rounded by the server). */
  toldExpiresAt: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const randomBetween = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
let storeDb: string;
let options: TestBrokerOptions;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  if (!existsSync(DIST_BROKER)) throw new Error(`${DIST_BROKER} is missing: run \`npm run build\` before this test`);
  target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('kstorm');
  // Written by the statements form's revocation, in the transaction that drops the role.
  await adminQuery(target.database, `CREATE TABLE ${LOG_TABLE} (name text NOT NULL, dropped_at timestamptz NOT NULL DEFAULT clock_timestamp())`);
  options = {
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    // pending_grace must exceed engine_timeout; both short so a killed issue is cleaned up fast.
    engineTimeout: 2,
    reaper: { pending_grace: 3 },
    roles: {
      [ROLE_OF_FORM.member_of]: { member_of: [target.group], default_ttl: TTL_SECONDS, max_ttl: MAX_TTL_SECONDS },
      [ROLE_OF_FORM.statements]: {
        default_ttl: TTL_SECONDS,
        max_ttl: MAX_TTL_SECONDS,
        creation_statements: [
          `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`,
          'GRANT SELECT ON public.items TO "{{name}}"',
        ],
        revocation_statements: [`INSERT INTO ${LOG_TABLE} (name) VALUES ('{{name}}')`, 'REVOKE ALL ON public.items FROM "{{name}}"', 'DROP ROLE "{{name}}"'],
      },
    },
  };
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  // Whatever is still valid (or left behind by a failure above) goes with the prefix.
  await dropRolesWithPrefix(PREFIX);
});

/** Starts a broker process with its reaper scheduled; resolves with its URL once it listens. */
const brokerProcess = () => startBrokerProcess(options, children, { reaper: true });

async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Clients issuing, renewing and revoking against whichever broker is up, counting every answer. */
class LoadDriver {
  url: string | null = null;
  readonly received = new Map<string, ReceivedLease>();
  readonly answers = new Map<string, number>();
  private stopped = false;
  private readonly followUps = new Set<Promise<void>>();

  private count(what: string) {
    this.answers.set(what, (this.answers.get(what) ?? 0) + 1);
  }

  private async call(verb: string, method: string, path: string, body: unknown): Promise<{ status: number; body: any } | null> {
    const url = this.url;
    if (!url) {
      this.count(`${verb} no-broker`);
      await sleep(50);
      return null;
    }
    try {
      const res = await fetch(`${url}/v1/${path}`, {
        method,
        headers: { 'x-vault-token': ROOT_TOKEN, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const text = await res.text();
      this.count(`${verb} ${res.status}`);
      return { status: res.status, body: text ? JSON.parse(text) : null };
    } catch {
      // The broker was killed under the request, or is restarting: expected, only counted.
      this.count(`${verb} connection-error`);
      return null;
    }
  }

  private async issue(form: Form): Promise<void> {
    const started = Date.now();
    const res = await this.call(`issue ${form}`, 'PUT', `db/creds/${ROLE_OF_FORM[form]}`, {});
    if (res?.status !== 200) return;
    const lease: ReceivedLease = { id: res.body.lease_id, username: res.body.data.username, form, toldExpiresAt: started + res.body.lease_duration * 1000 };
    this.received.set(lease.id, lease);
    const dice = Math.random();
    if (dice < 0.3) this.later(randomBetween(300, 1500), () => this.renew(lease));
    else if (dice < 0.5) this.later(randomBetween(0, 1500), () => this.revoke(lease));
  }

  private async renew(lease: ReceivedLease): Promise<void> {
    const started = Date.now();
    const res = await this.call('renew', 'PUT', 'sys/leases/renew', { lease_id: lease.id, increment: TTL_SECONDS });
    if (res?.status !== 200) return;
    lease.toldExpiresAt = Math.max(lease.toldExpiresAt, started + res.body.lease_duration * 1000);
    if (Math.random() < 0.5) this.later(randomBetween(300, 1500), () => this.renew(lease));
  }

  private async revoke(lease: ReceivedLease): Promise<void> {
    await this.call('revoke', 'PUT', 'sys/leases/revoke', { lease_id: lease.id });
  }

  private later(ms: number, work: () => Promise<void>) {
    if (this.stopped) return;
    const p = sleep(ms)
      .then(() => (this.stopped ? undefined : work()))
      .finally(() => this.followUps.delete(p));
    this.followUps.add(p);
  }

  /** Runs until stop(); resolves once every loop and follow-up has finished. */
  async run(): Promise<void> {
    await Promise.all(
      Array.from({ length: CLIENT_LOOPS }, async () => {
        while (!this.stopped) {
          await this.issue(Math.random() < 0.5 ? 'member_of' : 'statements');
          await sleep(randomBetween(20, 120));
        }
      }),
    );
    while (this.followUps.size) await Promise.all([...this.followUps]);
  }

  stop() {
    this.stopped = true;
  }
}

function stats(values: number[]): { n: number; max: number; p99: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { n: sorted.length, max: sorted.at(-1) ?? 0, p99: sorted[Math.max(0, Math.ceil(sorted.length * 0.99) - 1)] ?? 0 };
}

describe('a broker SIGKILLed at random moments while clients issue, renew and revoke', () => {
  it('loses no lease, leaves no orphan role, and revokes every expired role within 5 s of its expiry, for both role forms', { timeout: 90_000 }, async () => {
    const load = new LoadDriver();
    const timeline: { what: string; at: number }[] = [{ what: 'start', at: Date.now() }];
    let broker = await brokerProcess();
    timeline.push({ what: 'ready', at: Date.now() });
    load.url = broker.url;
    const running = load.run();
    // The claims seen on each lease being revoked, so a late revocation can be explained.
    const claimsSeen = new Map<string, number[]>();
    let sampling = true;
    const sampler = (async () => {
      const client = new pg.Client({ connectionString: pgUrl(storeDb) });
      await client.connect();
      try {
        while (sampling) {
          const { rows } = await client.query<{ id: string; claimed_until: Date }>(`SELECT id, claimed_until FROM credbroker_leases WHERE state = 'revoking' AND claimed_until IS NOT NULL`);
          for (const r of rows) {
            const seen = claimsSeen.get(r.id) ?? [];
            if (seen.at(-1) !== r.claimed_until.getTime()) seen.push(r.claimed_until.getTime());
            claimsSeen.set(r.id, seen);
          }
          await sleep(CLAIM_SAMPLE_MS);
        }
      } finally {
        await client.end();
      }
    })();

    try {
      for (let kill = 0; kill < KILLS; kill++) {
        await sleep(randomBetween(...UPTIME_MS));
        load.url = null;
        timeline.push({ what: 'kill', at: Date.now() });
        await killAndWait(broker.child);
        broker = await brokerProcess();
        timeline.push({ what: 'ready', at: Date.now() });
        load.url = broker.url;
      }
      await sleep(randomBetween(...UPTIME_MS));
      load.stop();
      await running;

      console.info('kill storm answers:', Object.fromEntries([...load.answers].sort()));

      // The last broker drains. With the load stopped every lease expires within TTL_SECONDS, so
      // this waits until none is live at all: every lease issued in the storm gets measured.
      const deadline = Date.now() + DRAIN_TIMEOUT_MS;
      for (;;) {
        const [live] = await adminQuery(
          storeDb,
          `SELECT count(*) FILTER (WHERE state IN ('pending', 'revoking'))::int AS unfinished,
                  count(*) FILTER (WHERE state = 'active' AND expires_at <= now())::int AS overdue,
                  count(*) FILTER (WHERE state = 'active')::int AS active
             FROM credbroker_leases`,
        );
        if (live.unfinished === 0 && live.overdue === 0 && live.active === 0) break;
        if (Date.now() > deadline) throw new Error(`the store did not drain within ${DRAIN_TIMEOUT_MS} ms: ${JSON.stringify(live)}`);
        await sleep(100);
      }
    } finally {
      load.stop();
      sampling = false;
      await sampler;
    }

    // Read the store first, then the target: a lease only becomes revoked after its role is
    // dropped, so a role seen now whose lease was already revoked (or unknown) is an orphan.
    const leases = await adminQuery<{ id: string; role: string; state: string; username: string; expires_at: Date; revoked_at: Date | null; revoke_reason: string | null }>(
      storeDb,
      `SELECT id, role, state, revoke_handle->>'username' AS username, expires_at, revoked_at, revoke_reason FROM credbroker_leases`,
    );
    const roles = await adminQuery<{ rolname: string }>('postgres', `SELECT rolname FROM pg_roles WHERE rolname LIKE $1 AND rolname <> $2`, [`${PREFIX}\\_%`, target.group]);
    const byId = new Map(leases.map((l) => [l.id, l]));
    const byUsername = new Map(leases.map((l) => [l.username, l]));

    const formOf = (role: string): Form => (role === ROLE_OF_FORM.statements ? 'statements' : 'member_of');
    const received = [...load.received.values()];
    for (const form of ['member_of', 'statements'] as const) {
      // A storm whose clients got (almost) nothing proves nothing.
      expect(received.filter((l) => l.form === form).length, `leases of the ${form} form a client received`).toBeGreaterThanOrEqual(20);
    }

    // (a) Every lease a client received is in the store, and never ends before the client was told.
    expect(received.filter((l) => !byId.has(l.id)).map((l) => l.id), 'leases a client received that the store does not know').toEqual([]);
    const endsEarly = received.filter((l) => byId.get(l.id)!.expires_at.getTime() < l.toldExpiresAt - 1000);
    expect(endsEarly.map((l) => l.id), 'leases the store ends over 1 s before a client was told').toEqual([]);

    // (b) No role on the target without a live lease.
    const orphans = roles.map((r) => r.rolname).filter((name) => {
      const lease = byUsername.get(name);
      return !lease || lease.state !== 'active' || lease.expires_at.getTime() <= Date.now();
    });
    console.info(`kill storm: ${leases.length} leases in the store, ${received.length} received by clients, ${roles.length} leased roles left, ${orphans.length} orphans`);
    expect(orphans, 'roles with the prefix that no live lease owns').toEqual([]);

    // (c) Nothing left half done, nothing given up on.
    const stuck = leases.filter((l) => l.state === 'pending' || l.state === 'revoking' || l.state === 'irrevocable');
    expect(stuck.map((l) => `${l.id}: ${l.state}`), 'leases left pending, revoking or irrevocable').toEqual([]);

    // (d) Expired leases were revoked within MAX_OUTLIVE_MS of their expiry, per form.
    const reasons: Record<string, number> = {};
    for (const l of leases) reasons[`${l.state}/${l.revoke_reason}`] = (reasons[`${l.state}/${l.revoke_reason}`] ?? 0) + 1;
    console.info('kill storm: leases by state/reason', reasons);
    const expired = leases.filter((l) => l.state === 'revoked' && l.revoke_reason === 'expired');
    const outlive = (l: (typeof leases)[number]) => l.revoked_at!.getTime() - l.expires_at.getTime();
    const measured = (['member_of', 'statements'] as const).map((form) => {
      const s = stats(expired.filter((l) => formOf(l.role) === form).map(outlive));
      console.info(`kill storm outlive (${form}): ${s.n} expired leases, max ${s.max} ms, p99 ${s.p99} ms`);
      return { form, ...s };
    });
    const late = expired.filter((l) => outlive(l) > MAX_OUTLIVE_MS);
    if (late.length) {
      // Where each late revocation sits among the kills, for whoever has to explain it: the
      // claims it went through (claimed_until) and, for the statements form, when its role was
      // really dropped on the target.
      const at = (t: number) => `+${t - timeline[0]!.at}ms`;
      const droppedAt = new Map(
        (await adminQuery<{ name: string; at: Date }>(target.database, `SELECT name, min(dropped_at) AS at FROM ${LOG_TABLE} GROUP BY name`)).map((r) => [r.name, r.at.getTime()]),
      );
      console.info('kill storm timeline:', timeline.map((e) => `${e.what} ${at(e.at)}`).join(', '));
      for (const l of late) {
        const dropped = droppedAt.get(l.username);
        console.info(
          `late: ${l.id} (${formOf(l.role)}) expired ${at(l.expires_at.getTime())}, revoked ${at(l.revoked_at!.getTime())} (${outlive(l)} ms)` +
            `${dropped ? `, role dropped ${at(dropped)}` : ''}; claimed until ${(claimsSeen.get(l.id) ?? []).map(at).join(', ') || '(no claim seen)'}`,
        );
      }
    }
    for (const m of measured) {
      expect(m.n, `expired leases of the ${m.form} form`).toBeGreaterThanOrEqual(10);
      expect(m.max, `the longest a ${m.form} role outlived its lease (ms)`).toBeLessThanOrEqual(MAX_OUTLIVE_MS);
    }

    // (e) The statements-form revocation ran once per role: never twice for a name, and exactly
    // once for every role a client received and the store shows revoked.
    const drops = await adminQuery<{ name: string; n: number }>(target.database, `SELECT name, count(*)::int AS n FROM ${LOG_TABLE} GROUP BY name`);
    expect(drops.filter((d) => d.n > 1), 'roles whose revocation statements committed twice').toEqual([]);
    const dropped = new Set(drops.map((d) => d.name));
    const undropped = received.filter((l) => l.form === 'statements' && byId.get(l.id)!.state === 'revoked' && !dropped.has(l.username));
    expect(undropped.map((l) => l.id), 'revoked statements-form leases whose revocation statements never committed').toEqual([]);
  });
});
