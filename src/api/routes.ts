import type { Request } from 'express';
import type { HandleFacts, JsonValue } from '../engines.js';
import { issueRoutePattern } from '../engine-paths.js';
import { InvalidRequest, LeaseNotFound, PermissionDenied, UnknownPath } from '../errors.js';
import { validatePrefix } from '../leases/lease-id.js';
import type { LeaseRow } from '../leases/lease-store.js';
import { identityRecord, type Identity } from '../auth/identity.js';
import type { Capability } from '../auth/policy.js';
import type { LeaseService } from '../leases/lease-service.js';
import type { Authz } from './authz.js';
import { envelope } from './envelope.js';
import { credsRequest, healthQuery, issuedBeforeRequest, leaseRequest, parseBody, renewRequest } from './request-schemas.js';

export type Method = 'GET' | 'HEAD' | 'PUT' | 'LIST';

export interface RouteContext {
  req: Request;
  requestId: string;
  /** Capture groups of the route's pattern, URL-decoded. */
  params: string[];
  /** The caller and what it may do; absent on public routes (health, login). */
  authz?: Authz;
  /** Fields worth an audit record beyond the path (a lease id…); the secrets among them are HMAC'd. */
  audit: { leaseId?: string; issued?: boolean; identity?: Identity };
}

/** The authorization of a route that is not public. */
export const authzOf = (ctx: RouteContext): Authz => ctx.authz!;

export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export type Handler = (ctx: RouteContext) => Promise<Reply>;

export interface Route {
  /** Matched against the path after `/v1/`. */
  pattern: RegExp;
  /** Health answers without a token; everything else needs one. */
  public?: boolean;
  /**
   * On a public route, the only request fields its audit record keeps: before anyone is
   * authenticated, the body is whatever the caller chose to fill the log with.
   */
  auditFields?: string[];
  methods: Partial<Record<Method, Handler>>;
}

export interface HealthState {
  storeReachable: () => Promise<boolean>;
  version: string;
  clusterName: string;
}

const NO_CONTENT: Reply = { status: 204 };

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

const iso = (d: Date | null) => (d ? d.toISOString() : null);

function lookupData(lease: LeaseRow, facts: HandleFacts): Record<string, JsonValue> {
  const live = lease.state === 'active';
  return {
    id: lease.id,
    issue_time: iso(lease.issued_at),
    expire_time: iso(lease.expires_at),
    last_renewal: iso(lease.last_renewal),
    renewable: live && lease.renewable,
    ttl: live ? Math.max(0, Math.round((lease.expires_at.getTime() - Date.now()) / 1000)) : 0,
    // Extensions: what an operator needs during an incident.
    state: lease.state,
    mount: lease.mount,
    role: lease.role,
    requester: lease.requester,
    max_expire_time: iso(lease.max_expires_at),
    revoked_at: iso(lease.revoked_at),
    revoke_reason: lease.revoke_reason,
    attempts: lease.attempts,
    last_error: lease.last_error,
    // A revocation disabled the credential (no login, no session) but its cleanup is pending.
    credential_disabled: lease.state !== 'revoked' && lease.credential_disabled_at !== null,
    revocable_before_expiry: facts.revocableBeforeExpiry,
    ...(facts.note ? { revocation_note: facts.note } : {}),
  };
}

/** Vault's health codes, honouring the query overrides clients send. This broker is always active. */
function healthStatus(query: Request['query'], storeOk: () => Promise<boolean>): Promise<{ status: number; storeOk: boolean }> {
  const { activecode } = parseBody(healthQuery, query); // a bad override is refused before anything is checked
  return storeOk().then((ok) => ({ status: ok ? (activecode ?? 200) : 503, storeOk: ok }));
}

export function buildRoutes(leases: LeaseService, health: HealthState): Route[] {
  const list: Handler = async (ctx) => {
    const { params, requestId } = ctx;
    const prefix = validatePrefix(params[0] ?? '');
    const authz = authzOf(ctx);
    const keys = await leases.listChildren(prefix, authz.seesAllUnder(prefix) ? undefined : identityRecord(authz.identity));
    if (keys.length === 0) return { status: 404, body: { errors: [] } };
    return { status: 200, body: envelope(requestId, { data: { keys } }) };
  };

  const healthCheck: Handler = async ({ req }) => {
    const { status, storeOk } = await healthStatus(req.query, health.storeReachable);
    return {
      status,
      body: {
        initialized: true,
        sealed: false,
        standby: false,
        performance_standby: false,
        replication_performance_mode: 'disabled',
        replication_dr_mode: 'disabled',
        server_time_utc: Math.floor(Date.now() / 1000),
        version: health.version,
        cluster_name: health.clusterName,
        lease_store: storeOk ? 'ok' : 'unreachable',
      },
    };
  };

  return [
    // HEAD only where it cannot have a side effect: a HEAD on creds would mint a credential nobody sees.
    { pattern: /^sys\/health$/, public: true, methods: { GET: healthCheck, HEAD: healthCheck } },
    {
      pattern: /^sys\/leases\/lookup$/,
      methods: {
        PUT: async (ctx) => {
          const body = parseBody(leaseRequest, ctx.req.body);
          const lease = await leases.lookup(requireLeaseId(body.lease_id, undefined));
          ctx.audit.leaseId = lease.id;
          asIfUnknown(lease.id, () => authzOf(ctx).requireLease('lookup', lease, ['read', 'update']));
          return { status: 200, body: envelope(ctx.requestId, { data: lookupData(lease, leases.facts(lease)) }) };
        },
        LIST: list,
      },
    },
    { pattern: /^sys\/leases\/lookup\/(.*)$/, methods: { LIST: list } },
    {
      pattern: /^sys\/leases\/renew(?:\/(.+))?$/,
      methods: {
        PUT: async (ctx) => {
          const { req, params, requestId } = ctx;
          const body = parseBody(renewRequest, req.body);
          const leaseId = requireLeaseId(body.lease_id, params[0]);
          ctx.audit.leaseId = leaseId;
          // Someone else's lease renews as one that does not exist would.
          const ttlCap = await authorizeLease(ctx, leases, 'renew', leaseId, ['update']).catch((err: unknown) => {
            throw err instanceof PermissionDenied ? new LeaseNotFound(leaseId) : err;
          });
          const renewed = await leases.renew(leaseId, body.increment, ttlCap);
          return {
            status: 200,
            body: envelope(requestId, { leaseId: renewed.leaseId, leaseDuration: renewed.leaseDuration, renewable: true, warnings: renewed.warnings }),
          };
        },
      },
    },
    {
      pattern: /^sys\/leases\/revoke(?:\/(.+))?$/,
      methods: {
        PUT: async (ctx) => {
          const { req, params, requestId } = ctx;
          const body = parseBody(leaseRequest, req.body);
          const leaseId = requireLeaseId(body.lease_id, params[0]);
          ctx.audit.leaseId = leaseId;
          await authorizeLease(ctx, leases, 'revoke', leaseId, ['update', 'revoke']);
          const before = await leases.find(leaseId);
          const { warnings } = await leases.revoke(leaseId);
          // Vault answers 204 even for an id that names no lease; the header tells a typo apart (the CLI says so).
          const headers = { [REVOKE_OUTCOME_HEADER]: !before ? 'not-found' : before.state === 'revoked' ? 'already-revoked' : 'revoked' };
          // A warning that the credential outlives its lease is worth a body.
          return warnings.length ? { status: 200, body: envelope(requestId, { warnings }), headers } : { ...NO_CONTENT, headers };
        },
      },
    },
    {
      pattern: /^sys\/leases\/revoke-prefix\/(.+)$/,
      methods: {
        PUT: async (ctx) => {
          const prefix = validatePrefix(ctx.params[0]!);
          authzOf(ctx).require(`sys/leases/revoke-prefix/${prefix}`, ['sudo']);
          const { revoked } = await leases.revokePrefix(prefix);
          return { ...NO_CONTENT, headers: { [REVOKED_COUNT_HEADER]: String(revoked) } };
        },
      },
    },
    {
      // Extension: what failed to revoke for good, with the last error, for the operator to retry or force.
      pattern: /^sys\/broker\/irrevocable(?:\/(.*))?$/,
      methods: {
        GET: async (ctx) => {
          const prefix = validatePrefix(ctx.params[0] ?? '');
          authzOf(ctx).require(`sys/broker/irrevocable/${prefix}`, ['sudo', 'read']);
          const leasesFound = await leases.irrevocable(prefix);
          const data = leasesFound.map((l) => ({
            lease_id: l.id,
            mount: l.mount,
            role: l.role,
            attempts: l.attempts,
            last_error: l.last_error,
            expire_time: iso(l.expires_at),
            revoke_reason: l.revoke_reason,
          }));
          return { status: 200, body: envelope(ctx.requestId, { data: { leases: data } }) };
        },
      },
    },
    {
      // Extension (incident): every lease under the prefix issued before a time, default now.
      pattern: /^sys\/broker\/revoke-issued-before\/(.+)$/,
      methods: {
        PUT: async (ctx) => {
          const { req, params, requestId } = ctx;
          const prefix = validatePrefix(params[0]!);
          authzOf(ctx).require(`sys/broker/revoke-issued-before/${prefix}`, ['sudo']);
          const { issued_before } = parseBody(issuedBeforeRequest, req.body);
          const { revoked } = await leases.revokePrefix(prefix, issued_before ?? new Date());
          return { status: 200, body: envelope(requestId, { data: { revoked } }) };
        },
      },
    },
    {
      pattern: /^sys\/leases\/revoke-force\/(.+)$/,
      methods: {
        PUT: async (ctx) => {
          const prefix = validatePrefix(ctx.params[0]!);
          authzOf(ctx).require(`sys/leases/revoke-force/${prefix}`, ['sudo']);
          const revoked = await leases.revokeForce(prefix);
          return { ...NO_CONTENT, headers: { [REVOKED_COUNT_HEADER]: String(revoked) } };
        },
      },
    },
    {
      // Checks what the mount needs on its target (privileges, groups), each with its fix.
      pattern: /^([^/]+)\/config\/verify$/,
      methods: {
        GET: async (ctx) => {
          const [mount] = ctx.params as [string];
          if (mount === 'sys' || mount === 'auth') throw new UnknownPath(`${mount}/config/verify`);
          authzOf(ctx).require(`${mount}/config/verify`, ['read']);
          const report = await leases.verifyMount(mount);
          return { status: 200, body: envelope(ctx.requestId, { data: { ok: report.ok, checks: report.checks as unknown as JsonValue } }) };
        },
      },
    },
    {
      pattern: issueRoutePattern(),
      methods: {
        GET: async (ctx) => issueReply(leases, ctx, ctx.req.query, ['read']),
        PUT: async (ctx) => issueReply(leases, ctx, ctx.req.body, ['update', 'create']),
      },
    },
  ];
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
async function authorizeLease(ctx: RouteContext, leases: LeaseService, op: string, leaseId: string, capabilities: Capability[]): Promise<number | undefined> {
  if (authzOf(ctx).actsOnAnyLease(op)) return undefined; // nothing to check the lease against: spare the lookup
  const lease = await leases.find(leaseId);
  return lease ? authzOf(ctx).requireLease(op, lease, capabilities)?.allowedTtl : undefined;
}

async function issueReply(leases: LeaseService, ctx: RouteContext, input: unknown, capabilities: Capability[]): Promise<Reply> {
  const [mount, path, role] = ctx.params as [string, string, string];
  if (mount === 'sys' || mount === 'auth') throw new UnknownPath(`${mount}/${path}/${role}`);
  const decision = authzOf(ctx).require(`${mount}/${path}/${role}`, capabilities);
  const { ttl, ...rest } = parseBody(credsRequest, input);
  const lease = await leases.issue(mount, role, { ttl, identity: authzOf(ctx).identity, path, params: rest, ttlCap: decision.allowedTtl });
  ctx.audit.leaseId = lease.leaseId;
  ctx.audit.issued = true;
  const requestId = ctx.requestId;
  return {
    status: 200,
    body: envelope(requestId, {
      leaseId: lease.leaseId,
      leaseDuration: lease.leaseDuration,
      renewable: lease.renewable,
      data: lease.data,
      warnings: lease.warnings,
    }),
  };
}
