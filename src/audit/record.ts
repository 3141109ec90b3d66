import { sanitizeError } from '../leases/guarded-target.js';
import { inspectJson, MAX_JSON_DEPTH } from '../json-limits.js';
import { hmacField } from './hmac.js';

/** One audit line. `data` holds request or response fields; secret-bearing ones are HMAC'd before writing. */
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
}

const SECRET_KEYS = ['password', 'secret_key', 'secret_access_key', 'session_token', 'client_token', 'token', 'jwt', 'secret', 'private_key'];

// Separators are ignored as well as case, so AWS's own spellings (SecretAccessKey, sessionToken) match too.
const normalizeKey = (key: string) => key.toLowerCase().replace(/[_-]/g, '');
const NORMALIZED_SECRET_KEYS = new Set(SECRET_KEYS.map(normalizeKey));

const isSecretKey = (key: string): boolean => NORMALIZED_SECRET_KEYS.has(normalizeKey(key));

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Hashes a secret-bearing value, element by element if it is an array; null stays null (there is nothing to hide). */
function hashSecret(value: Json, hash: (plain: string) => string, plaintexts: string[]): Json {
  if (value === null) return null;
  if (Array.isArray(value)) return value.map((v) => hashSecret(v, hash, plaintexts));
  const plain = typeof value === 'string' ? value : JSON.stringify(value);
  plaintexts.push(plain);
  return hash(plain);
}

function scrubJson(value: Json, hash: (plain: string) => string, plaintexts: string[]): Json {
  if (Array.isArray(value)) return value.map((v) => scrubJson(v, hash, plaintexts));
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k, isSecretKey(k) ? hashSecret(v, hash, plaintexts) : scrubJson(v, hash, plaintexts)]),
  );
}

/**
 * Returns a deep copy in which every secret-bearing field of `data`, at any depth, is replaced by
 * hmacField(key, value). The input is never mutated. An `error` text that quotes one of those
 * secrets (a target echoing a statement back) has it redacted too.
 */
export function scrubRecord(record: AuditRecord, key: string): AuditRecord {
  // The walks below recurse: data nested past the limit (the API refuses such bodies) is not copied.
  if (record.data !== undefined && inspectJson(record.data).tooDeep) record = { ...record, data: { truncated: `nested deeper than ${MAX_JSON_DEPTH} levels` } };
  // A JSON round trip is the deep copy, and it puts class instances, Dates and Buffers in the
  // shape every sink writes, so a secret inside one of them cannot slip past the walk below.
  const copy = JSON.parse(JSON.stringify(record)) as AuditRecord;
  const plaintexts: string[] = [];
  if (copy.data !== undefined) {
    copy.data = scrubJson(copy.data as Json, (plain) => hmacField(key, plain), plaintexts) as Record<string, unknown>;
  }
  if (copy.error !== undefined) copy.error = sanitizeError(copy.error, plaintexts);
  return copy;
}
