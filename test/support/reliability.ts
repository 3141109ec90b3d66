import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { expect } from 'vitest';
import { ROOT_TOKEN } from './broker.js';
import { adminQuery, pgUrl } from './pg.js';

/**
 * The reliability harness of issues 9 and 10: a load driver that records every lease a client
 * received, a drain that waits until the store holds nothing live, the invariant checker (a)-(f)
 * that reads the store, then the target, then the audit files afterwards, and the figures each
 * scenario records for the run's table and test/reliability/results/latest.json.
 */
export type Form = 'member_of' | 'statements';
export const ROLE_OF_FORM: Record<Form, string> = { member_of: 'reader', statements: 'granting' };
export const FORMS = ['member_of', 'statements'] as const;

export interface ReceivedLease {
  id: string;
  username: string;
  form: Form;
  /** The latest expiry a client was told: request start + lease_duration (rounded by the server). */
  toldExpiresAt: number;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
export const randomBetween = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

/**
 * The two roles of the load: one of the member_of form, one of the statements form whose
 * creation GRANTs on the target's table and whose revocation first writes a line to `logTable`,
 * in the transaction that drops the role (two lines for one name = a role dropped twice).
 */
export function loadRoles(opts: {
  group: string;
  logTable: string;
  ttlSeconds: number;
  maxTtlSeconds: number;
}): Record<string, Record<string, unknown>> {
  return {
    [ROLE_OF_FORM.member_of]: { member_of: [opts.group], default_ttl: opts.ttlSeconds, max_ttl: opts.maxTtlSeconds },
    [ROLE_OF_FORM.statements]: {
      default_ttl: opts.ttlSeconds,
      max_ttl: opts.maxTtlSeconds,
      creation_statements: [
        `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'`,
        'GRANT SELECT ON public.items TO "{{name}}"',
      ],
      revocation_statements: [
        `INSERT INTO ${opts.logTable} (name) VALUES ('{{name}}')`,
        'REVOKE ALL ON public.items FROM "{{name}}"',
        'DROP ROLE "{{name}}"',
      ],
    },
  };
}

export interface LoadOptions {
  clientLoops: number;
  ttlSeconds: number;
  requestTimeoutMs: number;
  /** Other brokers a call tries when one refuses the connection (replicas); 0 = count it and move on. */
  retriesOnConnectionError?: number;
}

/** Clients issuing, renewing and revoking against the brokers that are up, counting every answer. */
export class LoadDriver {
  /** The brokers up now; a call picks one at random. Empty while none is. */
  urls: string[] = [];
  readonly received = new Map<string, ReceivedLease>();
  readonly answers = new Map<string, number>();
  private stopped = false;
  private readonly followUps = new Set<Promise<void>>();

  constructor(private readonly opts: LoadOptions) {}

  private count(what: string) {
    this.answers.set(what, (this.answers.get(what) ?? 0) + 1);
  }

  private async call(
    verb: string,
    method: string,
    path: string,
    body: unknown,
  ): Promise<{ status: number; body: any } | null> {
    const tried = new Set<string>();
    for (let attempt = 0; ; attempt++) {
      const up = this.urls.filter((u) => !tried.has(u));
      const url = up[Math.floor(Math.random() * up.length)];
      if (!url) {
        this.count(`${verb} no-broker`);
        await sleep(50);
        return null;
      }
      tried.add(url);
      try {
        const res = await fetch(`${url}/v1/${path}`, {
          method,
          headers: { 'x-vault-token': ROOT_TOKEN, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(this.opts.requestTimeoutMs),
        });
        const text = await res.text();
        this.count(`${verb} ${res.status}`);
        return { status: res.status, body: text ? JSON.parse(text) : null };
      } catch {
        // The broker was killed under the request, or is restarting: expected, only counted.
        this.count(`${verb} connection-error`);
        if (attempt >= (this.opts.retriesOnConnectionError ?? 0)) return null;
      }
    }
  }

  private async issue(form: Form): Promise<void> {
    const started = Date.now();
    const res = await this.call(`issue ${form}`, 'PUT', `db/creds/${ROLE_OF_FORM[form]}`, {});
    if (res?.status !== 200) return;
    const lease: ReceivedLease = {
      id: res.body.lease_id,
      username: res.body.data.username,
      form,
      toldExpiresAt: started + res.body.lease_duration * 1000,
    };
    this.received.set(lease.id, lease);
    const dice = Math.random();
    if (dice < 0.3) this.later(randomBetween(300, 1500), () => this.renew(lease));
    else if (dice < 0.5) this.later(randomBetween(0, 1500), () => this.revoke(lease));
  }

  private async renew(lease: ReceivedLease): Promise<void> {
    const started = Date.now();
    const res = await this.call('renew', 'PUT', 'sys/leases/renew', {
      lease_id: lease.id,
      increment: this.opts.ttlSeconds,
    });
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
      Array.from({ length: this.opts.clientLoops }, async () => {
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

export function stats(values: number[]): { n: number; max: number; p99: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    max: sorted.at(-1) ?? 0,
    p99: sorted[Math.max(0, Math.ceil(sorted.length * 0.99) - 1)] ?? 0,
  };
}

/**
 * Waits until the store holds no live lease at all (none pending, revoking or active): with the
 * load stopped every lease expires within its TTL, so every lease of the run gets measured.
 * Throws if it does not happen within `timeoutMs`.
 */
export async function waitStoreDrained(storeDb: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [live] = await adminQuery(
      storeDb,
      `SELECT count(*) FILTER (WHERE state IN ('pending', 'revoking'))::int AS unfinished,
              count(*) FILTER (WHERE state = 'active' AND expires_at <= now())::int AS overdue,
              count(*) FILTER (WHERE state = 'active')::int AS active
         FROM credbroker_leases`,
    );
    if (live.unfinished === 0 && live.overdue === 0 && live.active === 0) return;
    if (Date.now() > deadline)
      throw new Error(`the store did not drain within ${timeoutMs} ms: ${JSON.stringify(live)}`);
    await sleep(100);
  }
}

/** Samples the claims (claimed_until) of every lease being revoked, so a late revocation can be explained. */
export function sampleClaims(storeDb: string, everyMs: number): { seen: Map<string, number[]>; stop(): Promise<void> } {
  const seen = new Map<string, number[]>();
  let sampling = true;
  const done = (async () => {
    const client = new pg.Client({ connectionString: pgUrl(storeDb) });
    await client.connect();
    try {
      while (sampling) {
        const { rows } = await client.query<{ id: string; claimed_until: Date }>(
          `SELECT id, claimed_until FROM credbroker_leases WHERE state = 'revoking' AND claimed_until IS NOT NULL`,
        );
        for (const r of rows) {
          const s = seen.get(r.id) ?? [];
          if (s.at(-1) !== r.claimed_until.getTime()) s.push(r.claimed_until.getTime());
          seen.set(r.id, s);
        }
        await sleep(everyMs);
      }
    } finally {
      await client.end();
    }
  })();
  return {
    seen,
    stop: async () => {
      sampling = false;
      await done;
    },
  };
}

export interface StoreLease {
  id: string;
  role: string;
  state: string;
  username: string;
  expires_at: Date;
  revoked_at: Date | null;
  revoke_reason: string | null;
}

export interface InvariantInput {
  label: string;
  storeDb: string;
  targetDb: string;
  prefix: string;
  /** The target's group role, which has the prefix but is no lease's. */
  group: string;
  logTable: string;
  received: ReceivedLease[];
  maxOutliveMs: number;
  /** Fewest leases of each form a client must have received, and fewest expired ones measured. */
  minReceivedPerForm: number;
  minExpiredPerForm: number;
  /** Called with the late revocations before (d) fails on them, to explain them. */
  explainLate?: (late: StoreLease[], droppedAt: Map<string, number>) => void;
  /** The brokers' audit files, for (f); without them (f) is not checked. */
  auditFiles?: string[];
}

export interface InvariantFigures {
  leases: number;
  received: number;
  rolesLeft: number;
  orphans: number;
  outlive: Record<Form, { n: number; max: number; p99: number }>;
  doubleDrops: number;
  /** Audit lines read for (f), and reaper revocations that were checked for their event. */
  auditLines: number;
  reaperRevocations: number;
}

/** What each invariant found wrong: every list is empty when the run kept its promises. */
export interface Violations {
  /** (a) leases a client received that the store does not know, or that end early. */
  lost: string[];
  endsEarly: string[];
  /** (b) roles with the prefix that no live lease owns. */
  orphans: string[];
  /** (c) leases left pending, revoking or irrevocable. */
  stuck: string[];
  /** (d) expired leases revoked later than maxOutliveMs after their expiry. */
  late: string[];
  /** (e) roles whose revocation committed twice; revoked leases whose revocation never committed. */
  doubleDrops: string[];
  undropped: string[];
  /** (f) audit lines that do not parse (torn or garbled); reaper revocations without their event. */
  tornAuditLines: string[];
  unaudited: string[];
}

/**
 * Reads the store, then the target, then the audit files, and reports every violation of
 * invariants (a)-(f) of issue 10 without asserting anything; checkInvariants asserts. Apart so
 * that a test can plant each violation and watch its checker catch it.
 */
export async function findViolations(
  input: InvariantInput,
): Promise<{ figures: InvariantFigures; violations: Violations; expired: StoreLease[]; drops: Map<string, number> }> {
  const { storeDb, prefix } = input;
  // Read the store first, then the target: a lease only becomes revoked after its role is
  // dropped, so a role seen now whose lease was already revoked (or unknown) is an orphan.
  const leases = await adminQuery<StoreLease>(
    storeDb,
    `SELECT id, role, state, revoke_handle->>'username' AS username, expires_at, revoked_at, revoke_reason FROM credbroker_leases`,
  );
  const roles = await adminQuery<{ rolname: string }>(
    'postgres',
    `SELECT rolname FROM pg_roles WHERE rolname LIKE $1 AND rolname <> $2`,
    [`${prefix}\\_%`, input.group],
  );
  const byId = new Map(leases.map((l) => [l.id, l]));
  const byUsername = new Map(leases.map((l) => [l.username, l]));
  const formOf = (role: string): Form => (role === ROLE_OF_FORM.statements ? 'statements' : 'member_of');
  const received = input.received;

  const lost = received.filter((l) => !byId.has(l.id)).map((l) => l.id);
  const endsEarly = received
    .filter((l) => byId.has(l.id) && byId.get(l.id)!.expires_at.getTime() < l.toldExpiresAt - 1000)
    .map((l) => l.id);

  const orphans = roles
    .map((r) => r.rolname)
    .filter((name) => {
      const lease = byUsername.get(name);
      return !lease || lease.state !== 'active' || lease.expires_at.getTime() <= Date.now();
    });

  const stuck = leases
    .filter((l) => l.state === 'pending' || l.state === 'revoking' || l.state === 'irrevocable')
    .map((l) => `${l.id}: ${l.state}`);

  const expired = leases.filter((l) => l.state === 'revoked' && l.revoke_reason === 'expired');
  const outlive = (l: StoreLease) => l.revoked_at!.getTime() - l.expires_at.getTime();
  const measured = {} as Record<Form, { n: number; max: number; p99: number }>;
  for (const form of FORMS) measured[form] = stats(expired.filter((l) => formOf(l.role) === form).map(outlive));
  const late = expired.filter((l) => outlive(l) > input.maxOutliveMs).map((l) => `${l.id}: ${outlive(l)} ms`);

  const dropRows = await adminQuery<{ name: string; n: number; at: Date }>(
    input.targetDb,
    `SELECT name, count(*)::int AS n, min(dropped_at) AS at FROM ${input.logTable} GROUP BY name`,
  );
  const doubleDrops = dropRows.filter((d) => d.n > 1).map((d) => d.name);
  const dropped = new Set(dropRows.map((d) => d.name));
  const undropped = received
    .filter((l) => l.form === 'statements' && byId.get(l.id)?.state === 'revoked' && !dropped.has(l.username))
    .map((l) => l.id);

  const audit = readAudit(input.auditFiles ?? []);
  // The reaper's own revocations (expiry, cleanup of a dead issue) are audited only as events.
  const reaperRevoked = leases.filter(
    (l) => l.state === 'revoked' && (l.revoke_reason === 'expired' || l.revoke_reason === 'cleanup'),
  );
  const unaudited = input.auditFiles
    ? reaperRevoked.filter((l) => !audit.revokedEvents.has(l.id)).map((l) => l.id)
    : [];

  return {
    figures: {
      leases: leases.length,
      received: received.length,
      rolesLeft: roles.length,
      orphans: orphans.length,
      outlive: measured,
      doubleDrops: doubleDrops.length,
      auditLines: audit.lines,
      reaperRevocations: input.auditFiles ? reaperRevoked.length : 0,
    },
    violations: {
      lost,
      endsEarly,
      orphans,
      stuck,
      late,
      doubleDrops,
      undropped,
      tornAuditLines: audit.torn,
      unaudited,
    },
    expired: expired.filter((l) => outlive(l) > input.maxOutliveMs),
    drops: new Map(dropRows.map((d) => [d.name, d.at.getTime()])),
  };
}

/** Every line of the audit files, each of which must be one whole JSON record ending in a newline. */
function readAudit(files: string[]): { lines: number; torn: string[]; revokedEvents: Set<string> } {
  const torn: string[] = [];
  const revokedEvents = new Set<string>();
  let lines = 0;
  for (const file of files) {
    if (!existsSync(file)) continue;
    const text = readFileSync(file, 'utf8');
    const parts = text.split('\n');
    // A file that does not end in a newline ends in a torn record.
    if (parts.at(-1) !== '') torn.push(`${file}: last line has no newline: ${parts.at(-1)!.slice(0, 80)}`);
    parts.pop();
    parts.forEach((line, i) => {
      lines++;
      try {
        const record = JSON.parse(line);
        if (record.type === 'event' && record.operation === 'revoked' && typeof record.lease_id === 'string')
          revokedEvents.add(record.lease_id);
      } catch {
        torn.push(`${file}:${i + 1}: ${line.slice(0, 80)}`);
      }
    });
  }
  return { lines, torn, revokedEvents };
}

/**
 * Checks invariants (a)-(f) of issue 10 once the store has drained, and prints the figures:
 * (a) every lease a client received is in the store and does not end before the client was told;
 * (b) no role with the prefix on the target that no live lease owns; (c) nothing pending,
 * revoking or irrevocable; (d) every expired lease revoked within maxOutliveMs of its expiry
 * (revoked_at - expires_at), per form; (e) the statements-form revocation committed exactly once
 * for every revoked statements-form lease a client received, never twice for any name; (f) when
 * auditFiles are given, every line of them parses and every reaper revocation has its event.
 */
export async function checkInvariants(input: InvariantInput): Promise<InvariantFigures> {
  const { label } = input;
  const { figures, violations: v, expired: late, drops } = await findViolations(input);
  // Recorded before any assertion, so a failed run's table shows what it found.
  recordFigures(label, invariantFigures(figures, v));
  for (const form of FORMS) {
    // A run whose clients got (almost) nothing proves nothing.
    expect(
      input.received.filter((l) => l.form === form).length,
      `leases of the ${form} form a client received`,
    ).toBeGreaterThanOrEqual(input.minReceivedPerForm);
  }
  console.info(
    `${label}: ${figures.leases} leases in the store, ${figures.received} received by clients, ${figures.rolesLeft} leased roles left, ${figures.orphans} orphans`,
  );
  for (const form of FORMS) {
    const m = figures.outlive[form];
    console.info(`${label} outlive (${form}): ${m.n} expired leases, max ${m.max} ms, p99 ${m.p99} ms`);
  }
  expect(v.lost, '(a) leases a client received that the store does not know').toEqual([]);
  expect(v.endsEarly, '(a) leases the store ends over 1 s before a client was told').toEqual([]);
  expect(v.orphans, '(b) roles with the prefix that no live lease owns').toEqual([]);
  expect(v.stuck, '(c) leases left pending, revoking or irrevocable').toEqual([]);
  if (late.length && input.explainLate) input.explainLate(late, drops);
  for (const form of FORMS)
    expect(figures.outlive[form].n, `expired leases of the ${form} form`).toBeGreaterThanOrEqual(
      input.minExpiredPerForm,
    );
  expect(v.late, `(d) expired leases revoked more than ${input.maxOutliveMs} ms after expiry`).toEqual([]);
  expect(v.doubleDrops, '(e) roles whose revocation statements committed twice').toEqual([]);
  expect(v.undropped, '(e) revoked statements-form leases whose revocation statements never committed').toEqual([]);
  expect(v.tornAuditLines, '(f) audit lines that do not parse').toEqual([]);
  expect(v.unaudited, '(f) reaper revocations without a revoked event in the audit log').toEqual([]);
  if (input.auditFiles)
    expect(figures.reaperRevocations, '(f) reaper revocations checked against the audit log').toBeGreaterThan(0);
  return figures;
}

/** SIGKILLs a child and waits for it to be gone. */
export async function killAndWait(child: import('node:child_process').ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Where each scenario leaves its figures, for the run's table (test/support/reliability-results.ts). */
export const RESULTS_DIR = fileURLToPath(new URL('../reliability/results/', import.meta.url));
export const PARTS_DIR = join(RESULTS_DIR, '.parts');

/** The figures issue 10 asks for; a scenario gives those it measures. */
export interface ScenarioFigures {
  form?: 'quick' | 'long';
  kills?: number;
  received?: number;
  lost?: number;
  orphans?: number;
  maxOutliveMs?: number;
  doubleDrops?: number;
  stuck?: number;
  tornAuditLines?: number;
  unaudited?: number;
  fuzzRequests?: number;
  fuzz5xx?: number;
  secretsChecked?: number;
  secretHits?: number;
  [other: string]: number | string | undefined;
}

/** Adds figures to the scenario's record for this run (merged with what it recorded before). */
export function recordFigures(scenario: string, figures: ScenarioFigures): void {
  mkdirSync(PARTS_DIR, { recursive: true });
  const file = join(PARTS_DIR, `${scenario.replace(/[^a-z0-9-]+/gi, '-')}.json`);
  const before = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const form = process.env.RELIABILITY_LONG === '1' ? 'long' : 'quick';
  writeFileSync(file, JSON.stringify({ ...before, scenario, form, ...figures }, null, 2));
}

/** The figures of a checkInvariants run, as recorded: violation counts, whatever they are. */
export function invariantFigures(figures: InvariantFigures, v: Violations): ScenarioFigures {
  return {
    received: figures.received,
    lost: v.lost.length + v.endsEarly.length,
    orphans: v.orphans.length,
    maxOutliveMs: Math.max(...FORMS.map((f) => figures.outlive[f].max)),
    doubleDrops: v.doubleDrops.length,
    stuck: v.stuck.length,
    tornAuditLines: v.tornAuditLines.length,
    unaudited: v.unaudited.length,
    ...(figures.auditLines ? { auditLines: figures.auditLines, reaperRevocations: figures.reaperRevocations } : {}),
  };
}
