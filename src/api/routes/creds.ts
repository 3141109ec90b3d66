import type { JsonValue } from '../../engines.js';
import { UnknownPath } from '../../errors.js';
import type { Capability } from '../../auth/policy.js';
import type { LeaseService } from '../../leases/lease-service.js';
import { envelope } from '../envelope.js';
import { credsRequest, parseBody } from '../request-schemas.js';
import { issueRoutePattern } from '../../engine-paths.js';
import { authzOf, type Reply, type Route, type RouteContext } from './route.js';

/** Issuing credentials, and checking what a mount needs on its target. */
export function credsRoutes(leases: LeaseService): Route[] {
  return [
    {
      // Checks what the mount needs on its target (privileges, groups), each with its fix.
      pattern: /^([^/]+)\/config\/verify$/,
      methods: {
        GET: async (ctx) => {
          const [mount] = ctx.params as [string];
          if (mount === 'sys' || mount === 'auth') throw new UnknownPath(`${mount}/config/verify`);
          authzOf(ctx).require(`${mount}/config/verify`, ['read']);
          const report = await leases.verifyMount(mount);
          return {
            status: 200,
            body: envelope(ctx.requestId, { data: { ok: report.ok, checks: report.checks as unknown as JsonValue } }),
          };
        },
      },
    },
    {
      // `<mount>/<path>/<role>`, the paths derived from the engines (src/engine-paths.ts).
      pattern: issueRoutePattern(),
      methods: {
        GET: async (ctx) => issueReply(leases, ctx, ctx.req.query, ['read']),
        PUT: async (ctx) => issueReply(leases, ctx, ctx.req.body, ['update', 'create']),
      },
    },
  ];
}

async function issueReply(
  leases: LeaseService,
  ctx: RouteContext,
  input: unknown,
  capabilities: Capability[],
): Promise<Reply> {
  const [mount, path, role] = ctx.params as [string, string, string];
  if (mount === 'sys' || mount === 'auth') throw new UnknownPath(`${mount}/${path}/${role}`);
  const decision = authzOf(ctx).require(`${mount}/${path}/${role}`, capabilities);
  const { ttl, ...rest } = parseBody(credsRequest, input);
  const lease = await leases.issue(mount, role, {
    ttl,
    identity: authzOf(ctx).identity,
    path,
    params: rest,
    ttlCap: decision.allowedTtl,
  });
  ctx.audit.leaseId = lease.leaseId;
  ctx.audit.issued = true;
  return {
    status: 200,
    body: envelope(ctx.requestId, {
      leaseId: lease.leaseId,
      leaseDuration: lease.leaseDuration,
      renewable: lease.renewable,
      data: lease.data,
      warnings: lease.warnings,
    }),
  };
}
