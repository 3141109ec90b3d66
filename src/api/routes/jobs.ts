import { z } from 'zod';
import { InvalidRequest, UnknownPath } from '../../errors.js';
import type { JsonValue } from '../../engines.js';
import { leaseSelectorSchema } from '../../jobs/lease-selector.js';
import { jobData, type RevokeJobs } from '../../jobs/revoke-jobs.js';
import { envelope } from '../envelope.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, iso, type Route } from './route.js';

const revokeRequest = z.object({
  dry_run: z.boolean().optional(),
  /** For the job's record and the audit log: why (an incident number). */
  reason: z.string().max(1024).optional(),
});

const LIST_MAX = 1000;

/**
 * A query string as a selector: `mount`, `role`, `engine` and `state` may repeat; `metadata` is
 * `key=value` and may repeat. Paging: `after` (a lease id) and `limit`.
 */
function selectorFromQuery(query: Record<string, unknown>): {
  selector: Record<string, unknown>;
  after: string;
  limit: number;
} {
  const { metadata, after, limit, all, ...rest } = query;
  const selector: Record<string, unknown> = { ...rest };
  if (metadata !== undefined) {
    const pairs = (Array.isArray(metadata) ? metadata : [metadata]).map(String);
    selector.metadata = Object.fromEntries(
      pairs.map((pair) => {
        const eq = pair.indexOf('=');
        if (eq <= 0) throw new InvalidRequest(`metadata must be key=value, got "${pair.slice(0, 64)}"`);
        return [pair.slice(0, eq), pair.slice(eq + 1)];
      }),
    );
  }
  if (all !== undefined) selector.all = all === 'true' || all === '1' || all === '' ? true : all;
  const n = limit === undefined ? 100 : Number(limit);
  if (!Number.isInteger(n) || n < 1 || n > LIST_MAX) throw new InvalidRequest(`limit must be 1 to ${LIST_MAX}`);
  if (after !== undefined && typeof after !== 'string') throw new InvalidRequest('after must be one lease id');
  // Without any criterion a listing shows every live lease: reading is not revoking.
  if (Object.keys(selector).every((k) => k === 'state')) selector.all = true;
  return { selector, after: after ?? '', limit: n };
}

/**
 * Incident revocation and the operator's view of leases, under sys/broker (`sudo` on each path;
 * root has it): PUT revoke (a job, or a dry run), jobs and one job's report, and the lease listing.
 */
export function jobRoutes(jobs: RevokeJobs): Route[] {
  return [
    {
      pattern: /^sys\/broker\/revoke$/,
      methods: {
        PUT: async (ctx) => {
          const authz = authzOf(ctx);
          authz.require('sys/broker/revoke', ['sudo']);
          const body = (ctx.req.body ?? {}) as Record<string, unknown>;
          const { dry_run, reason, ...selectorBody } = typeof body === 'object' && !Array.isArray(body) ? body : {};
          const opts = parseBody(revokeRequest, { dry_run, reason });
          const selector = parseBody(leaseSelectorSchema, selectorBody);
          if (opts.dry_run) {
            const dry = await jobs.dryRun(selector);
            return {
              status: 200,
              body: envelope(ctx.requestId, {
                data: { dry_run: true, ...dry } as unknown as Record<string, JsonValue>,
              }),
            };
          }
          const job = await jobs.start(
            selector,
            `${authz.identity.authMount}/${authz.identity.name}`,
            opts.reason ?? null,
          );
          return {
            status: 202,
            headers: { Location: `/v1/sys/broker/jobs/${job.id}` },
            body: envelope(ctx.requestId, { data: jobData(job) as Record<string, JsonValue> }),
          };
        },
      },
    },
    {
      pattern: /^sys\/broker\/jobs\/?$/,
      methods: {
        GET: async (ctx) => {
          authzOf(ctx).require('sys/broker/jobs', ['sudo']);
          const { limit } = parseBody(
            z.object({ limit: z.coerce.number().int().min(1).max(500).optional() }),
            ctx.req.query,
          );
          const recent = await jobs.recent(limit ?? 50);
          return {
            status: 200,
            body: envelope(ctx.requestId, {
              data: { keys: recent.map((j) => j.id), jobs: recent.map((j) => jobData(j)) } as Record<string, JsonValue>,
            }),
          };
        },
      },
    },
    {
      pattern: /^sys\/broker\/jobs\/([A-Za-z0-9-]{1,64})$/,
      methods: {
        GET: async (ctx) => {
          const id = ctx.params[0]!;
          authzOf(ctx).require(`sys/broker/jobs/${id}`, ['sudo']);
          const q = parseBody(z.object({ failures_after: z.string().max(1024).optional() }), ctx.req.query);
          const report = await jobs.report(id, q.failures_after ?? '');
          if (!report) throw new UnknownPath(`sys/broker/jobs/${id}`, [`no job ${id}`]);
          return {
            status: 200,
            body: envelope(ctx.requestId, {
              data: {
                ...jobData(report.job),
                failures: report.failures,
                failures_truncated: report.failuresTruncated,
              } as Record<string, JsonValue>,
            }),
          };
        },
      },
    },
    {
      pattern: /^sys\/broker\/leases$/,
      methods: {
        GET: async (ctx) => {
          authzOf(ctx).require('sys/broker/leases', ['sudo']);
          const q = selectorFromQuery(ctx.req.query as Record<string, unknown>);
          const selector = parseBody(leaseSelectorSchema, q.selector);
          const leases = await jobs.list(selector, q.after, q.limit + 1);
          const page = leases.slice(0, q.limit);
          return {
            status: 200,
            body: envelope(ctx.requestId, {
              data: {
                leases: page.map((l) => ({ ...l, issued_at: iso(l.issued_at), expires_at: iso(l.expires_at) })),
                next_after: leases.length > q.limit ? page[page.length - 1]!.lease_id : null,
              } as unknown as Record<string, JsonValue>,
            }),
          };
        },
      },
    },
  ];
}
