import { z } from 'zod';
import type { JsonValue } from '../../engines.js';
import { IdempotentLeaseExists, InvalidRequest, UnknownPath } from '../../errors.js';
import type { Capability } from '../../auth/policy.js';
import type { LeaseService } from '../../leases/lease-service.js';
import { envelope } from '../envelope.js';
import { errorReply } from '../error-response.js';
import { credsRequest, parseBody } from '../request-schemas.js';
import { issueRoutePattern } from '../../engine-paths.js';
import { authzOf, type Reply, type Route, type RouteContext } from './route.js';

/** The header a client names a creds request with, so that a retry gets the same lease (README). */
export const IDEMPOTENCY_KEY_HEADER = 'x-credbroker-idempotency-key';
/** Answered with a 409 for an idempotency key in use: the live lease that holds it. */
export const IDEMPOTENT_LEASE_HEADER = 'X-Credbroker-Lease-Id';

const idempotencyKey = z
  .string()
  .regex(
    /^[A-Za-z0-9._:/-]{1,128}$/,
    `${IDEMPOTENCY_KEY_HEADER} must be 1 to 128 characters of A-Z, a-z, 0-9 and . _ : / -`,
  )
  .optional();

function idempotencyKeyOf(ctx: RouteContext): string | undefined {
  const parsed = idempotencyKey.safeParse(ctx.req.headers[IDEMPOTENCY_KEY_HEADER]);
  if (!parsed.success) throw new InvalidRequest(parsed.error.issues[0]!.message);
  return parsed.data;
}

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
  const key = idempotencyKeyOf(ctx);
  const lease = await leases
    .issue(mount, role, {
      ttl,
      identity: authzOf(ctx).identity,
      path,
      params: rest,
      ttlCap: decision.allowedTtl,
      ...(key === undefined ? {} : { idempotencyKey: key }),
    })
    .catch((err: unknown) => {
      if (err instanceof IdempotentLeaseExists) return err;
      throw err;
    });
  if (lease instanceof IdempotentLeaseExists) return leaseInUseReply(ctx, lease);
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

/**
 * Vault's error body for a key in use, with the lease that holds it in `data` and in a header,
 * so that a client adopts it (lookup, renew) without parsing the message.
 */
function leaseInUseReply(ctx: RouteContext, err: IdempotentLeaseExists): Reply {
  ctx.audit.leaseId = err.leaseId;
  const { status, body } = errorReply(err, ctx.requestId);
  return {
    status,
    headers: { [IDEMPOTENT_LEASE_HEADER]: err.leaseId },
    body: { errors: body.errors, data: { lease_id: err.leaseId, state: err.state } },
  };
}
