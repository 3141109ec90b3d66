import type pg from 'pg';
import { z } from 'zod';
import { AUDIT_QUERY_MAX_LIMIT, parseInstant, queryAudit } from '../../audit/audit-query.js';
import { InvalidRequest } from '../../errors.js';
import type { JsonValue } from '../../engines.js';
import { envelope } from '../envelope.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, type Route } from './route.js';

// Names, ids and paths are short; the bound keeps a query string from becoming a large parameter.
const text = z.string().min(1).max(1024);

const auditQuery = z
  .object({
    identity: text.optional(),
    lease: text.optional(),
    username: text.optional(),
    path: text.optional(),
    since: text.optional(),
    until: text.optional(),
    outcome: z.enum(['ok', 'error', 'denied']).optional(),
    limit: z.coerce.number().int().min(1).max(AUDIT_QUERY_MAX_LIMIT).optional(),
    after: text.optional(),
  })
  .strict();

/**
 * sys/broker/audit: the postgres audit sink's table, filtered and paged by (time, id). `sudo` on
 * the path (root has it). `store` is null when no postgres sink is configured.
 */
export function auditRoutes(store: pg.Pool | null): Route[] {
  return [
    {
      pattern: /^sys\/broker\/audit$/,
      methods: {
        GET: async (ctx) => {
          authzOf(ctx).require('sys/broker/audit', ['sudo']);
          if (!store) throw new InvalidRequest('audit queries need the postgres audit sink: set audit.postgres: true');
          const q = parseBody(auditQuery, ctx.req.query);
          const now = new Date();
          const page = await queryAudit(store, {
            ...q,
            since: q.since === undefined ? undefined : parseInstant(q.since, 'since', now),
            until: q.until === undefined ? undefined : parseInstant(q.until, 'until', now),
          });
          return { status: 200, body: envelope(ctx.requestId, { data: page as unknown as Record<string, JsonValue> }) };
        },
      },
    },
  ];
}
