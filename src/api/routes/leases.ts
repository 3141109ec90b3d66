import { identityRecord } from '../../auth/identity.js';
import type { Capability } from '../../auth/policy.js';
import { InvalidRequest, LeaseNotFound, PermissionDenied } from '../../errors.js';
import { validatePrefix } from '../../leases/lease-id.js';
import type { LeaseService } from '../../leases/lease-service.js';
import { envelope } from '../envelope.js';
import { issuedBeforeRequest, leaseRequest, parseBody, renewRequest } from '../request-schemas.js';
import { irrevocableData, lookupData } from './lease-data.js';
import { NO_CONTENT, authzOf, type Handler, type Route, type RouteContext } from './route.js';

/**
 * Extensions carried in headers, so that the statuses and bodies stay exactly Vault's (204, no
 * body) for Vault clients: what a lease revoke found (`revoked`, `already-revoked`, `not-found`),
 * and how many leases a revoke-prefix or revoke-force revoked.
 */
export const REVOKE_OUTCOME_HEADER = 'X-Credbroker-Revoke';
export const REVOKED_COUNT_HEADER = 'X-Credbroker-Revoked';

function requireLeaseId(fromBody: string | undefined, fromPath: string | undefined): string {
  const id = fromPath || fromBody;
  if (!id) throw new InvalidRequest('lease_id must be specified');
  return id;
}

/** Vault's sys/leases: lookup, list, renew, revoke one, revoke by prefix, revoke by force. */
export function leaseRoutes(leases: LeaseService): Route[] {
  const list: Handler = async (ctx) => {
    const prefix = validatePrefix(ctx.params[0] ?? '');
    const authz = authzOf(ctx);
    const keys = await leases.listChildren(
      prefix,
      authz.seesAllUnder(prefix) ? undefined : identityRecord(authz.identity),
    );
    if (keys.length === 0) return { status: 404, body: { errors: [] } };
    return { status: 200, body: envelope(ctx.requestId, { data: { keys } }) };
  };
  const lookup: Handler = async (ctx) => {
    const body = parseBody(leaseRequest, ctx.req.body);
    const lease = await leases.lookup(requireLeaseId(body.lease_id, undefined));
    ctx.audit.leaseId = lease.id;
    asIfUnknown(lease.id, () => authzOf(ctx).requireLease('lookup', lease, ['read', 'update']));
    return { status: 200, body: envelope(ctx.requestId, { data: lookupData(lease) }) };
  };
  const revokeBy =
    (op: 'revoke-prefix' | 'revoke-force', run: (prefix: string) => Promise<number>): Handler =>
    async (ctx) => {
      const prefix = validatePrefix(ctx.params[0]!);
      authzOf(ctx).require(`sys/leases/${op}/${prefix}`, ['sudo']);
      const revoked = await run(prefix);
      return { ...NO_CONTENT, headers: { [REVOKED_COUNT_HEADER]: String(revoked) } };
    };
  return [
    { pattern: /^sys\/leases\/lookup$/, methods: { PUT: lookup, LIST: list } },
    { pattern: /^sys\/leases\/lookup\/(.*)$/, methods: { LIST: list } },
    { pattern: /^sys\/leases\/renew(?:\/(.+))?$/, methods: { PUT: (ctx) => renew(leases, ctx) } },
    { pattern: /^sys\/leases\/revoke(?:\/(.+))?$/, methods: { PUT: (ctx) => revoke(leases, ctx) } },
    {
      pattern: /^sys\/leases\/revoke-prefix\/(.+)$/,
      methods: { PUT: revokeBy('revoke-prefix', async (p) => (await leases.revokePrefix(p)).revoked) },
    },
    {
      pattern: /^sys\/leases\/revoke-force\/(.+)$/,
      methods: { PUT: revokeBy('revoke-force', (p) => leases.revokeForce(p)) },
    },
  ];
}

/** Extensions under sys/broker, for incidents: what failed to revoke for good, and revoke by issue time. */
export function incidentRoutes(leases: LeaseService): Route[] {
  return [
    {
      // What failed to revoke for good, with the last error, for the operator to retry or force.
      pattern: /^sys\/broker\/irrevocable(?:\/(.*))?$/,
      methods: {
        GET: async (ctx) => {
          const prefix = validatePrefix(ctx.params[0] ?? '');
          authzOf(ctx).require(`sys/broker/irrevocable/${prefix}`, ['sudo', 'read']);
          const found = await leases.irrevocable(prefix);
          return { status: 200, body: envelope(ctx.requestId, { data: { leases: found.map(irrevocableData) } }) };
        },
      },
    },
    {
      // Every lease under the prefix issued before a time, default now.
      pattern: /^sys\/broker\/revoke-issued-before\/(.+)$/,
      methods: {
        PUT: async (ctx) => {
          const prefix = validatePrefix(ctx.params[0]!);
          authzOf(ctx).require(`sys/broker/revoke-issued-before/${prefix}`, ['sudo']);
          const { issued_before } = parseBody(issuedBeforeRequest, ctx.req.body);
          const { revoked } = await leases.revokePrefix(prefix, issued_before ?? new Date());
          return { status: 200, body: envelope(ctx.requestId, { data: { revoked } }) };
        },
      },
    },
  ];
}

async function renew(leases: LeaseService, ctx: RouteContext) {
  const body = parseBody(renewRequest, ctx.req.body);
  const leaseId = requireLeaseId(body.lease_id, ctx.params[0]);
  ctx.audit.leaseId = leaseId;
  // Someone else's lease renews as one that does not exist would.
  const ttlCap = await authorizeLease(ctx, leases, 'renew', leaseId, ['update']).catch((err: unknown) => {
    throw err instanceof PermissionDenied ? new LeaseNotFound(leaseId) : err;
  });
  const renewed = await leases.renew(leaseId, body.increment, ttlCap);
  return {
    status: 200,
    body: envelope(ctx.requestId, {
      leaseId: renewed.leaseId,
      leaseDuration: renewed.leaseDuration,
      renewable: true,
      warnings: renewed.warnings,
    }),
  };
}

async function revoke(leases: LeaseService, ctx: RouteContext) {
  const body = parseBody(leaseRequest, ctx.req.body);
  const leaseId = requireLeaseId(body.lease_id, ctx.params[0]);
  ctx.audit.leaseId = leaseId;
  await authorizeLease(ctx, leases, 'revoke', leaseId, ['update', 'revoke']);
  const before = await leases.find(leaseId);
  const { warnings } = await leases.revoke(leaseId);
  // Vault answers 204 even for an id that names no lease; the header tells a typo apart (the CLI says so).
  const headers = {
    [REVOKE_OUTCOME_HEADER]: !before ? 'not-found' : before.state === 'revoked' ? 'already-revoked' : 'revoked',
  };
  // A warning that the credential outlives its lease is worth a body.
  return warnings.length
    ? { status: 200, body: envelope(ctx.requestId, { warnings }), headers }
    : { ...NO_CONTENT, headers };
}

/**
 * A caller who may not see a lease is answered as if it did not exist (lookup's "invalid lease"),
 * so an answer never tells someone else's lease id from one never issued.
 */
function asIfUnknown<T>(leaseId: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof PermissionDenied) throw new LeaseNotFound(leaseId, 'invalid lease');
    throw err;
  }
}

/** Authorizes a lease operation against the lease itself; an unknown lease is left to the service's answer. */
async function authorizeLease(
  ctx: RouteContext,
  leases: LeaseService,
  op: string,
  leaseId: string,
  capabilities: Capability[],
): Promise<number | undefined> {
  if (authzOf(ctx).actsOnAnyLease(op)) return undefined; // nothing to check the lease against: spare the lookup
  const lease = await leases.find(leaseId);
  return lease ? authzOf(ctx).requireLease(op, lease, capabilities)?.allowedTtl : undefined;
}
