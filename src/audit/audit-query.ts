import type pg from 'pg';
import { InvalidRequest } from '../errors.js';
import { storeQuery } from '../store/query.js';

export const AUDIT_QUERY_DEFAULT_LIMIT = 100;
export const AUDIT_QUERY_MAX_LIMIT = 1000;

/** What `GET sys/broker/audit` selects from credbroker_audit; every filter given must hold. */
export interface AuditFilter {
  /** The identity's name (a Kubernetes subject, a JWT `sub`…), as recorded. */
  identity?: string;
  lease?: string;
  /** A database username: every record of the lease that issued it. */
  username?: string;
  /** A path prefix: `db/creds/` matches every role of that mount. */
  path?: string;
  since?: Date;
  until?: Date;
  outcome?: 'ok' | 'error' | 'denied';
  limit?: number;
  /** The `next` cursor of the page before. */
  after?: string;
}

/** One row of credbroker_audit, as the API answers it. */
export interface AuditRow {
  id: string;
  time: string;
  type: string;
  request_id: string;
  identity: Record<string, unknown> | null;
  remote_address: string | null;
  operation: string | null;
  path: string | null;
  lease_id: string | null;
  outcome: string | null;
  status: number | null;
  error: string | null;
  data: Record<string, unknown> | null;
}

export interface AuditPage {
  records: AuditRow[];
  /** Pass as `after` for the next page; null when this page was the last. */
  next: string | null;
}

/**
 * An instant as an RFC 3339 timestamp, or a duration before `now` (`90s`, `1h`, `7d`).
 * @example parseInstant('1h', 'since', new Date()) // an hour ago
 */
export function parseInstant(value: string, field: string, now: Date): Date {
  const relative = /^(\d{1,9})(s|m|h|d)$/.exec(value.trim());
  if (relative) {
    const seconds = Number(relative[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[relative[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now.getTime() - seconds * 1000);
  }
  // RFC 3339 needs the date, the time and an offset; Date.parse alone accepts far more.
  if (/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(value)) {
    const ms = Date.parse(value.replace(' ', 'T'));
    if (Number.isFinite(ms)) return new Date(ms);
  }
  throw new InvalidRequest(`${field} must be an RFC 3339 time (2026-01-31T02:00:00Z) or a duration ago like "1h"`);
}

/**
 * The cursor is the last row's (time in microseconds since the epoch, id): the order is
 * (time, id), and timestamptz keeps microseconds that a JavaScript Date would lose.
 */
const CURSOR = /^(\d{1,17})\.(\d{1,19})$/;

function parseCursor(after: string): { micros: string; id: string } {
  const m = CURSOR.exec(after);
  if (!m) throw new InvalidRequest('after must be the `next` cursor of an earlier page');
  return { micros: m[1]!, id: m[2]! };
}

/**
 * Builds the statement from fixed fragments only: user input goes in as parameters. Each
 * filter is a separate condition so the planner picks the index of the most selective one
 * (identity name, lease id, the username's partial index from migration 0011, or time).
 */
export function auditQueryStatement(filter: AuditFilter): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const param = (v: unknown) => `$${values.push(v)}`;
  const where: string[] = [];
  if (filter.identity !== undefined) where.push(`a.identity ->> 'name' = ${param(filter.identity)}`);
  if (filter.lease !== undefined) where.push(`a.lease_id = ${param(filter.lease)}`);
  if (filter.username !== undefined)
    where.push(
      `a.lease_id IN (SELECT i.lease_id FROM credbroker_audit i
         WHERE i.type = 'response' AND i.data -> 'data' ->> 'username' = ${param(filter.username)}
           AND i.data -> 'data' ->> 'username' IS NOT NULL AND i.lease_id IS NOT NULL)`,
    );
  if (filter.path !== undefined) where.push(`starts_with(a.path, ${param(filter.path)})`);
  if (filter.since !== undefined) where.push(`a.time >= ${param(filter.since)}`);
  if (filter.until !== undefined) where.push(`a.time < ${param(filter.until)}`);
  if (filter.outcome !== undefined) where.push(`a.outcome = ${param(filter.outcome)}`);
  if (filter.after !== undefined) {
    const { micros, id } = parseCursor(filter.after);
    where.push(
      `(a.time, a.id) > ('epoch'::timestamptz + ${param(micros)}::bigint * interval '1 microsecond', ${param(id)}::bigint)`,
    );
  }
  const limit = filter.limit ?? AUDIT_QUERY_DEFAULT_LIMIT;
  // Qualified: a bare `id` in ORDER BY would be the text output column, which no index sorts.
  const text = `
    SELECT a.id::text AS id, a.time, (extract(epoch FROM a.time) * 1000000)::bigint::text AS micros, a.type,
           a.request_id, a.identity, a.remote_address, a.operation, a.path, a.lease_id, a.outcome, a.status, a.error,
           a.data
      FROM credbroker_audit a
     ${where.length > 0 ? `WHERE ${where.join('\n       AND ')}` : ''}
     ORDER BY a.time, a.id
     LIMIT ${param(limit + 1)}`;
  return { text, values };
}

/** One page of the audit table, oldest first. */
export async function queryAudit(pool: pg.Pool, filter: AuditFilter): Promise<AuditPage> {
  const limit = filter.limit ?? AUDIT_QUERY_DEFAULT_LIMIT;
  const { rows } = await storeQuery<AuditRow & { time: Date; micros: string }>(pool, auditQueryStatement(filter));
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return {
    records: page.map(({ micros: _micros, time, ...row }) => ({ ...row, time: time.toISOString() })),
    next: rows.length > limit && last ? `${last.micros}.${last.id}` : null,
  };
}
