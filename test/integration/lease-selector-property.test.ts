import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { leaseSelectorSchema, selectorWhere, type LeaseSelector } from '../../src/jobs/lease-selector.js';
import { adminQuery, freshStoreDatabase } from '../support/pg.js';

/**
 * Any selector an operator can send (including hostile text in identity names and metadata) is
 * one parameterized WHERE clause that selects exactly what a plain reading of the selector says:
 * checked against the real store's rows for a few hundred generated selectors.
 */
const MOUNTS = ['db', 'wh', 'aws'];
const ROLES = ['reader', 'loader'];
const ENGINES = ['postgres', 'aws'];
const STATES = ['pending', 'active', 'revoking', 'irrevocable', 'revoked'] as const;
const NAMES = ['system:serviceaccount:etl:loader', "o'brien", 'a"b', 'x; DROP TABLE credbroker_leases; --', 'ünï'];
const NAMESPACES = ['etl', 'web', "it's", '%_'];
const AUTH = ['k8s', 'ci'];

interface Row {
  id: string;
  mount: string;
  role: string;
  engine: string;
  state: (typeof STATES)[number];
  identity: { name: string; auth_mount: string; metadata: Record<string, string> } | null;
  token_accessor: string | null;
  issued_at: Date;
}

let storeDb: string;
const rows: Row[] = [];
const base = Date.parse('2026-06-01T00:00:00Z');

beforeAll(async () => {
  storeDb = await freshStoreDatabase('selprop');
  const rnd = fc.sample(fc.nat(1000), { numRuns: 600, seed: 42 });
  for (let i = 0; i < 120; i++) {
    const pick = <T>(xs: readonly T[], k: number) => xs[rnd[(i * 5 + k) % rnd.length]! % xs.length]!;
    const mount = pick(MOUNTS, 0);
    const row: Row = {
      id: `${mount}/creds/${pick(ROLES, 1)}/${String(i).padStart(24, '0')}`,
      mount,
      role: pick(ROLES, 1),
      engine: mount === 'aws' ? 'aws' : 'postgres',
      state: pick(STATES, 2),
      identity:
        i % 7 === 0
          ? null
          : {
              name: pick(NAMES, 3),
              auth_mount: pick(AUTH, 4),
              metadata: { service_account_namespace: pick(NAMESPACES, 0), ...(i % 3 ? { run: String(i % 4) } : {}) },
            },
      token_accessor: i % 5 === 0 ? null : `acc${i % 6}`,
      issued_at: new Date(base + i * 60_000),
    };
    row.id = `${row.mount}/creds/${row.role}/${String(i).padStart(24, '0')}`;
    rows.push(row);
    const terminal = row.state === 'revoked' || row.state === 'irrevocable';
    await adminQuery(
      storeDb,
      `INSERT INTO credbroker_leases (id, mount, role, engine, state, revoke_handle, issued_at, expires_at, max_expires_at,
         next_attempt_at, identity, token_accessor)
       VALUES ($1, $2, $3, $4, $5, '{}', $6, $6::timestamptz + interval '1 hour', $6::timestamptz + interval '1 hour', $7, $8, $9)`,
      [
        row.id,
        row.mount,
        row.role,
        row.engine,
        row.state,
        row.issued_at,
        terminal ? null : new Date(base + 3_600_000),
        row.identity ? JSON.stringify(row.identity) : null,
        row.token_accessor,
      ],
    );
  }
});

/** The selector read plainly, row by row: what the SQL must agree with. */
function matches(s: LeaseSelector, r: Row): boolean {
  const states: readonly string[] = s.state ?? ['pending', 'active', 'revoking', 'irrevocable'];
  if (!states.includes(r.state)) return false;
  if (s.identity !== undefined && r.identity?.name !== s.identity) return false;
  if (s.auth_mount !== undefined && r.identity?.auth_mount !== s.auth_mount) return false;
  if (s.metadata && Object.keys(s.metadata).length) {
    const meta = r.identity?.metadata;
    if (!meta || !Object.entries(s.metadata).every(([k, v]) => meta[k] === v)) return false;
  }
  if (s.accessor !== undefined && r.token_accessor !== s.accessor) return false;
  if (s.mount && !s.mount.includes(r.mount)) return false;
  if (s.role && !s.role.includes(r.role)) return false;
  if (s.engine && !s.engine.includes(r.engine)) return false;
  if (s.lease_prefix !== undefined && !r.id.startsWith(s.lease_prefix)) return false;
  if (s.issued_before && !(r.issued_at < s.issued_before)) return false;
  if (s.issued_after && !(r.issued_at > s.issued_after)) return false;
  return true;
}

const maybe = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 2 });
const someOf = <T>(xs: T[]) => fc.oneof(fc.constantFrom(...xs), fc.subarray(xs, { minLength: 1 }));
const time = fc.integer({ min: -10, max: 130 }).map((m) => new Date(base + m * 60_000 + 30_000).toISOString());

const selectorInput = fc.record(
  {
    identity: maybe(fc.oneof(fc.constantFrom(...NAMES), fc.string({ minLength: 1, maxLength: 20 }))),
    metadata: maybe(
      fc.oneof(
        fc.record({ service_account_namespace: fc.constantFrom(...NAMESPACES) }),
        fc.dictionary(
          fc.constantFrom('service_account_namespace', 'run', "k'ey"),
          fc.constantFrom('etl', '1', '2', "it's"),
        ),
      ),
    ),
    auth_mount: maybe(fc.constantFrom(...AUTH)),
    accessor: maybe(fc.constantFrom('acc0', 'acc1', 'acc5', "acc'")),
    mount: maybe(someOf(MOUNTS)),
    role: maybe(someOf(ROLES)),
    engine: maybe(someOf(ENGINES)),
    lease_prefix: maybe(fc.constantFrom('db/', 'db/creds/reader/', 'aws/creds/loader/0000', 'w', '%')),
    issued_before: maybe(time),
    issued_after: maybe(time),
    state: maybe(someOf(['pending', 'active', 'revoking', 'irrevocable'])),
    all: fc.constantFrom(true, undefined),
  },
  { requiredKeys: [] },
);

describe('the lease selector against the real store', () => {
  it('selects exactly the rows a plain reading of any selector names', async () => {
    let checked = 0;
    await fc.assert(
      fc.asyncProperty(selectorInput, async (input) => {
        const parsed = leaseSelectorSchema.safeParse(
          Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)),
        );
        if (!parsed.success) return; // refused at the edge (e.g. no criterion): nothing to run
        const where = selectorWhere(parsed.data);
        const got = (
          await adminQuery<{ id: string }>(
            storeDb,
            `SELECT id FROM credbroker_leases WHERE ${where.sql} ORDER BY id`,
            where.values,
          )
        ).map((r) => r.id);
        const want = rows
          .filter((r) => matches(parsed.data, r))
          .map((r) => r.id)
          .sort();
        expect(got).toEqual(want);
        checked++;
      }),
      { numRuns: 300, seed: 1414 },
    );
    expect(checked).toBeGreaterThan(200);
    // And no selector touched the table.
    expect((await adminQuery(storeDb, 'SELECT count(*)::int AS n FROM credbroker_leases'))[0].n).toBe(rows.length);
  });

  it('refuses an empty selector, one with only a state, and unknown keys', () => {
    expect(leaseSelectorSchema.safeParse({}).success).toBe(false);
    expect(leaseSelectorSchema.safeParse({ state: 'active' }).success).toBe(false);
    expect(leaseSelectorSchema.safeParse({ mount: 'db', whatever: 1 }).success).toBe(false);
    expect(leaseSelectorSchema.safeParse({ all: true }).success).toBe(true);
  });
});
