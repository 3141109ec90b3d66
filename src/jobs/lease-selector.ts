import { z } from 'zod';
import { NAME_PATTERN, NAME_RULE } from '../config/mount-schema.js';
import { prefixUpperBound } from '../leases/sql/prefix-range.js';

/** Lease states an operator can select; revoked leases are history, never selected. */
export const SELECTABLE_STATES = ['pending', 'active', 'revoking', 'irrevocable'] as const;
/**
 * No state given: every lease whose credential may still work, irrevocable ones included (an
 * incident revocation tries them again; their attempts already ran out, so a failure keeps them irrevocable).
 */
export const DEFAULT_STATES = SELECTABLE_STATES;

const name = z.string().regex(NAME_PATTERN, NAME_RULE);
// Identity names and metadata come from tokens and certificates: any printable text, bounded.
const text = z.string().min(1).max(512);
const time = z.iso.datetime({ offset: true }).transform((s) => new Date(s));
const oneOrMany = <T extends z.ZodTypeAny>(item: T) =>
  z.union([item, z.array(item).min(1).max(64)]).transform((v) => (Array.isArray(v) ? v : [v]) as z.output<T>[]);

/**
 * Which leases an incident revocation or an operator listing is about. Every criterion given must
 * hold (AND); a list matches any of its values. An empty selector matches nothing: revoking every
 * lease takes `all: true`, said out loud.
 */
export const leaseSelectorSchema = z
  .object({
    identity: text.optional(),
    /** Identity metadata that must all match, e.g. {namespace: "etl"} or {service_account_name: "loader"}. */
    metadata: z.record(z.string().min(1).max(128), z.string().max(512)).optional(),
    auth_mount: name.optional(),
    accessor: text.optional(),
    mount: oneOrMany(name).optional(),
    role: oneOrMany(z.string().min(1).max(128)).optional(),
    engine: oneOrMany(z.string().min(1).max(64)).optional(),
    lease_prefix: z.string().min(1).max(1024).optional(),
    issued_before: time.optional(),
    issued_after: time.optional(),
    state: oneOrMany(z.enum(SELECTABLE_STATES)).optional(),
    all: z.literal(true).optional(),
  })
  .strict()
  .refine((s) => s.all || Object.entries(s).some(([k, v]) => k !== 'state' && v !== undefined), {
    message:
      'select leases with at least one of identity, metadata, auth_mount, accessor, mount, role, engine, lease_prefix, issued_before, issued_after (or all: true for every lease)',
  });

export type LeaseSelector = z.output<typeof leaseSelectorSchema>;

/** The selector as stored and shown: times as RFC 3339 text, defaults spelled out. */
export function selectorRecord(s: LeaseSelector): Record<string, unknown> {
  return {
    ...s,
    state: s.state ?? [...DEFAULT_STATES],
    ...(s.issued_before ? { issued_before: s.issued_before.toISOString() } : {}),
    ...(s.issued_after ? { issued_after: s.issued_after.toISOString() } : {}),
  };
}

/** A selector read back from the store (selectorRecord's output). */
export function selectorFromRecord(record: unknown): LeaseSelector {
  return leaseSelectorSchema.parse(record);
}

/**
 * The selector as a WHERE clause over credbroker_leases (alias-free), its values numbered from
 * `firstParam`. Every value is a parameter; only column names are written here. The identity
 * name and role criteria meet the live-lease indexes of migration 0004.
 */
export function selectorWhere(s: LeaseSelector, firstParam = 1): { sql: string; values: unknown[] } {
  const clauses: string[] = [];
  const values: unknown[] = [];
  const param = (value: unknown) => {
    values.push(value);
    return `$${firstParam + values.length - 1}`;
  };
  clauses.push(`state = ANY(${param(s.state ?? [...DEFAULT_STATES])}::text[])`);
  if (s.identity !== undefined) clauses.push(`identity->>'name' = ${param(s.identity)}`);
  if (s.auth_mount !== undefined) clauses.push(`identity->>'auth_mount' = ${param(s.auth_mount)}`);
  if (s.metadata && Object.keys(s.metadata).length)
    clauses.push(`identity->'metadata' @> ${param(JSON.stringify(s.metadata))}::jsonb`);
  if (s.accessor !== undefined) clauses.push(`token_accessor = ${param(s.accessor)}`);
  if (s.mount) clauses.push(`mount = ANY(${param(s.mount)}::text[])`);
  if (s.role) clauses.push(`role = ANY(${param(s.role)}::text[])`);
  if (s.engine) clauses.push(`engine = ANY(${param(s.engine)}::text[])`);
  if (s.lease_prefix !== undefined)
    clauses.push(`id >= ${param(s.lease_prefix)} AND id < ${param(prefixUpperBound(s.lease_prefix))}`);
  if (s.issued_before) clauses.push(`issued_at < ${param(s.issued_before)}`);
  if (s.issued_after) clauses.push(`issued_at > ${param(s.issued_after)}`);
  return { sql: clauses.join(' AND '), values };
}

/**
 * When the selector names whole roles and nothing narrower (no identity, token or prefix), a
 * target that can end every credential of a role issued before a time (AWS) may do so at once.
 */
export function selectsWholeRoles(s: LeaseSelector): boolean {
  return (
    s.identity === undefined &&
    s.auth_mount === undefined &&
    !(s.metadata && Object.keys(s.metadata).length) &&
    s.accessor === undefined &&
    s.lease_prefix === undefined &&
    s.issued_after === undefined
  );
}
