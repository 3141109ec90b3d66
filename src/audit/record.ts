import { engines as allEngines } from '../../engines/index.js';
import type { EngineRegistry } from '../engines.js';
import { sanitizeError } from '../leases/guarded-target.js';
import { hmacField } from './hmac.js';

/** One audit line. `data` holds request or response fields; every string in it is HMAC'd unless its key is known not to be secret. */
export interface AuditRecord {
  type: 'request' | 'response' | 'event';
  /** ISO 8601. */
  time: string;
  request_id: string;
  identity?: { name: string; auth_mount: string; accessor?: string; metadata?: Record<string, string>; root?: boolean };
  remote_address?: string;
  /** 'read' | 'update' | 'list' | 'delete' | 'login', or an engine event: 'revoked' | 'revoke-failed' | 'irrevocable' … */
  operation?: string;
  path?: string;
  lease_id?: string;
  outcome?: 'ok' | 'error' | 'denied';
  status?: number;
  error?: string;
  data?: Record<string, unknown>;
  /** Present when the record was cut to fit MAX_RECORD_BYTES: what was left out. */
  truncated?: { data_bytes?: number; fields?: string[] };
}

/**
 * As in Vault, every string value of `data` is HMAC'd, at any depth, except under the broker's
 * own keys below (names, ids, durations and flags that are never secret and that an operator
 * searches for) and under the credential fields each engine declares plain (`secrets.plain`).
 * A key not listed (an engine's new credential field, a client's `secret_id`) is hashed, and so
 * is every field an engine declares secret, even where another engine keeps that name plain.
 */
const BROKER_NON_SECRET_KEYS = [
  'id',
  'lease_id',
  'request_id',
  'lease_duration',
  'renewable',
  'ttl',
  'increment',
  'role',
  'path',
  'prefix',
  'mount',
  'accessor',
  'policies',
  'token_policies',
  'warnings',
  'errors',
  'reason',
  'state',
  'issue_time',
  'expire_time',
  'last_renewal',
  'issued_before',
  // Response wrapping's metadata (wrap_info, sys/wrapping/lookup): where and when, never the token.
  'creation_path',
  'creation_time',
  'creation_ttl',
  'wrapped_accessor',
  // An alert's event (src/alerts/): names, counts and addresses the detectors wrote, never a request's values.
  'detector',
  'severity',
  'subject',
  'summary',
  'remote_address',
  // The orphan sweep's findings: an object's name on a target (a role, a user), never a secret.
  'object',
  'first_seen',
  'created_at',
];

/**
 * Tokens are hashed whatever an engine declares plain: a broker token (`client_token`) and a
 * wrapping token (`wrap_info.token`, the `token` of sys/wrapping/*) each open a secret.
 */
const ALWAYS_SECRET_KEYS = ['token', 'client_token'];

// Separators are ignored as well as case, so AWS's own spellings (AccessKeyId) match too.
const normalizeKey = (key: string) => key.toLowerCase().replace(/[_-]/g, '');

/** Which keys of a record's `data` keep their strings plain. */
export interface AuditFields {
  isPlain(key: string): boolean;
}

/** The audit's plain keys for a broker running `engines`: the broker's own and the engines' plain fields, less every engine's secrets. */
export function auditFieldsFor(engines: EngineRegistry): AuditFields {
  const declared = Object.values(engines).map((engine) => engine.secrets);
  const secret = new Set(
    [
      ...ALWAYS_SECRET_KEYS,
      ...declared.flatMap((s) => [...s.credential, ...Object.keys(s.mount), ...Object.keys(s.role ?? {})]),
    ].map(normalizeKey),
  );
  const plain = new Set(
    [...BROKER_NON_SECRET_KEYS, ...declared.flatMap((s) => s.plain ?? [])]
      .map(normalizeKey)
      .filter((key) => !secret.has(key)),
  );
  return { isPlain: (key) => plain.has(normalizeKey(key)) };
}

/** For every engine in engines/index.ts. */
export const DEFAULT_AUDIT_FIELDS = auditFieldsFor(allEngines);

/** Deeper than this, a value is replaced by TOO_DEEP: Vault's answers are a few levels deep, and the walk must stay bounded. */
export const MAX_DEPTH = 32;
export const TOO_DEEP = `[audit: nested deeper than ${MAX_DEPTH} levels, not recorded]`;

/** Plaintexts shorter than this are not searched for in the error text: a 1-letter value would shred it. */
const MIN_REDACTED_LENGTH = 4;

/** What JSON.stringify would make of a value at the start: toJSON() applied (Dates, Buffers). */
function jsonValue(value: unknown): unknown {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return (value as { toJSON: () => unknown }).toJSON();
  }
  return value;
}

/**
 * A JSON-shaped deep copy of `data` with every string HMAC'd unless it sits (directly or in an
 * array) under a non-secret key. Iterative, with a depth cap, so a body nested thousands deep
 * neither overflows the stack nor fills the log.
 */
function scrubData(data: unknown, hash: (plain: string) => string, plaintexts: string[], fields: AuditFields): unknown {
  const scalar = (value: unknown, plain: boolean): unknown => {
    if (typeof value === 'string') {
      if (plain) return value;
      plaintexts.push(value);
      return hash(value);
    }
    if (typeof value === 'number') return Number.isFinite(value) ? value : null;
    if (typeof value === 'boolean' || value === null) return value;
    if (typeof value === 'bigint') return scalar(String(value), plain);
    return undefined; // undefined, functions, symbols: JSON leaves them out
  };
  const root: { value?: unknown } = {};
  // Each entry: the value to copy, where to put its copy, whether its strings stay plain, its depth.
  const stack: { value: unknown; put: (v: unknown) => void; plain: boolean; depth: number }[] = [
    { value: data, put: (v) => (root.value = v), plain: false, depth: 0 },
  ];
  while (stack.length > 0) {
    const { value: raw, put, plain, depth } = stack.pop()!;
    const value = jsonValue(raw);
    if (value === null || typeof value !== 'object') {
      put(scalar(value, plain));
      continue;
    }
    if (depth >= MAX_DEPTH) {
      put(TOO_DEEP);
      continue;
    }
    if (Array.isArray(value)) {
      const out: unknown[] = new Array(value.length).fill(null);
      put(out);
      value.forEach((item, i) =>
        stack.push({ value: item, put: (v) => (out[i] = v === undefined ? null : v), plain, depth: depth + 1 }),
      );
      continue;
    }
    const out: Record<string, unknown> = {};
    put(out);
    // Pushed last to first, so siblings are copied (and keys created) in their original order.
    for (const [k, v] of Object.entries(value).reverse()) {
      // defineProperty: a key "__proto__" stays a plain key of the copy.
      stack.push({
        value: v,
        put: (c) =>
          c !== undefined &&
          Object.defineProperty(out, k, { value: c, enumerable: true, writable: true, configurable: true }),
        plain: fields.isPlain(k),
        depth: depth + 1,
      });
    }
  }
  return root.value;
}

/**
 * Returns a copy in which every string of `data`, at any depth, is replaced by
 * hmacField(key, value), except under the keys `fields` keeps plain. The input is never mutated and no
 * object is shared with it. An `error` text that quotes one of the hashed values (a target
 * echoing a statement back) has it redacted too.
 */
export function scrubRecord(record: AuditRecord, key: string, fields: AuditFields = DEFAULT_AUDIT_FIELDS): AuditRecord {
  const { data, ...rest } = record;
  // The fields outside data are shallow: a JSON round trip is their deep copy.
  const copy = JSON.parse(JSON.stringify(rest)) as AuditRecord;
  const plaintexts: string[] = [];
  if (data !== undefined) {
    const scrubbed = scrubData(data, (plain) => hmacField(key, plain), plaintexts, fields);
    copy.data =
      scrubbed !== null && typeof scrubbed === 'object' && !Array.isArray(scrubbed)
        ? (scrubbed as Record<string, unknown>)
        : { value: scrubbed };
  }
  if (copy.error !== undefined)
    copy.error = sanitizeError(
      copy.error,
      plaintexts.filter((p) => p.length >= MIN_REDACTED_LENGTH),
    );
  return copy;
}

/**
 * Largest serialized record. A request body may be 64 KB and a JWT claim larger; one client
 * must not fill the disk at that rate, and a line this size still goes out in one write.
 */
export const MAX_RECORD_BYTES = 16 * 1024;
/** Length each long string field is cut to when dropping `data` was not enough. */
const MAX_FIELD_CHARS = 1024;

const bytes = (record: AuditRecord) => Buffer.byteLength(JSON.stringify(record), 'utf8');
const cut = (s: string) => (s.length > MAX_FIELD_CHARS ? `${s.slice(0, MAX_FIELD_CHARS)}…[truncated]` : s);

/**
 * A scrubbed record cut to MAX_RECORD_BYTES: first `data` is dropped (its size kept under
 * `truncated.data_bytes`), then long string fields are shortened (named in `truncated.fields`).
 */
export function capRecord(record: AuditRecord, max = MAX_RECORD_BYTES): AuditRecord {
  if (bytes(record) <= max) return record;
  const out: AuditRecord = { ...record, truncated: {} };
  if (out.data !== undefined) {
    out.truncated!.data_bytes = Buffer.byteLength(JSON.stringify(out.data), 'utf8');
    delete out.data;
    if (bytes(out) <= max) return out;
  }
  const fields: string[] = [];
  for (const field of ['path', 'error', 'remote_address', 'operation', 'lease_id'] as const) {
    const value = out[field];
    if (typeof value === 'string' && value.length > MAX_FIELD_CHARS) {
      (out as unknown as Record<string, string>)[field] = cut(value);
      fields.push(field);
    }
  }
  if (out.identity) {
    const identity = { ...out.identity, name: cut(out.identity.name) };
    if (identity.name !== out.identity.name) fields.push('identity.name');
    if (out.identity.metadata) {
      identity.metadata = Object.fromEntries(
        Object.entries(out.identity.metadata)
          .slice(0, 32)
          .map(([k, v]) => [cut(k), cut(v)]),
      );
      if (JSON.stringify(identity.metadata) !== JSON.stringify(out.identity.metadata)) fields.push('identity.metadata');
    }
    out.identity = identity;
  }
  out.truncated!.fields = fields;
  // Still too big only if the limit is tiny; then keep what always fits.
  if (bytes(out) > max)
    return {
      type: out.type,
      time: out.time,
      request_id: cut(out.request_id),
      truncated: { ...out.truncated, fields: [...fields, 'identity', 'path', 'error'] },
      ...(out.status !== undefined ? { status: out.status } : {}),
      ...(out.outcome ? { outcome: out.outcome } : {}),
    };
  return out;
}
