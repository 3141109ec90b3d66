import { randomUUID } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import type pg from 'pg';
import { AuditUnavailable, type Auditor } from '../audit/auditor.js';
import type { AuditRecord } from '../audit/record.js';
import type { AuthService } from '../auth/auth-service.js';
import { identityRecord, type Identity } from '../auth/identity.js';
import type { PolicySet } from '../auth/policy.js';
import {
  InvalidRequest,
  InvalidToken,
  PermissionDenied,
  StoreUnavailable,
  UnknownPath,
  UnsupportedOperation,
} from '../errors.js';
import type { LeaseService } from '../leases/lease-service.js';
import type { RevokeJobs } from '../jobs/revoke-jobs.js';
import type { ReaperPauseControl } from '../leases/reaper-pause.js';
import { BrokerMetrics } from '../metrics/broker-metrics.js';
import { withTimings } from '../timing.js';
import { parseWrapTtl } from '../wrapping/wrap-ttl.js';
import type { WrappingService } from '../wrapping/wrapping-service.js';
import { errorReply, sendError } from './error-response.js';
import { refuseUnstorableJson } from './body-shape.js';
import { oneRequestAtATimePerConnection } from './in-order.js';
import { Authz } from './authz.js';
import {
  buildRoutes,
  type DiscoveryDeps,
  type HealthState,
  type Method,
  type Reply,
  type Route,
  type RouteContext,
} from './routes.js';
import { wrappedAnswer } from './routes/wrapping.js';
import type { Sweeper } from '../sweep/sweeper.js';

export interface AppOptions {
  leases: LeaseService;
  auth: AuthService;
  policies: PolicySet;
  auditor: Auditor;
  health: HealthState;
  /** Seals the answers of requests sent with X-Vault-Wrap-TTL; serves sys/wrapping/*. */
  wrapping: WrappingService;
  /** The reaper's pause switch (sys/broker/reaper/*). */
  reaperPause: ReaperPauseControl;
  /** Incident revocation jobs and the operator's lease listing (sys/broker/revoke, jobs, leases). */
  jobs: RevokeJobs;
  /** The mounts and auth mounts that sys/mounts, sys/auth and `<mount>/roles` describe. */
  discovery: Omit<DiscoveryDeps, 'leases' | 'version'>;
  log: Logger;
  /** Largest accepted request body. */
  bodyLimit?: string;
  /** What sys/metrics serves and where denials are counted; one of its own if absent. */
  metrics?: BrokerMetrics;
  /** The store holding the postgres audit sink's table, for sys/broker/audit; absent when that sink is off. */
  auditStore?: pg.Pool | null;
  /** The orphan sweep, for sys/broker/sweep. */
  sweeper?: Sweeper;
}

/** The token from `X-Vault-Token` or `Authorization: Bearer`. */
function presentedToken(req: Request): string | undefined {
  const header = req.get('x-vault-token');
  if (header) return header;
  const auth = req.get('authorization');
  return auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
}

/** POST is PUT, `GET ?list=true` is LIST, as in Vault (a LIST request arrives so: see list-method.ts). */
function vaultMethod(req: Request): Method | null {
  switch (req.method) {
    case 'GET': {
      const list = [req.query.list].flat();
      return list.includes('true') || list.includes('1') ? 'LIST' : 'GET';
    }
    case 'HEAD':
      return 'HEAD';
    case 'PUT':
    case 'POST':
      return 'PUT';
    default:
      return null;
  }
}

function decodePath(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    throw new InvalidRequest('malformed URL encoding in the path');
  }
}

/** The HTTP API: Vault's dynamic-secrets subset. Routing, authentication, authorization, audit and error mapping. */
export function createApp(opts: AppOptions): express.Express {
  const metrics = opts.metrics ?? new BrokerMetrics();
  const routes = buildRoutes({
    metrics,
    leases: opts.leases,
    auth: opts.auth,
    health: opts.health,
    discovery: opts.discovery,
    wrapping: opts.wrapping,
    reaperPause: opts.reaperPause,
    jobs: opts.jobs,
    auditStore: opts.auditStore ?? null,
    sweeper: opts.sweeper,
  });
  const app = express();
  app.disable('x-powered-by');
  // Vault sends no ETag; without one, a small JSON answer leaves in a single write with its headers.
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.use(oneRequestAtATimePerConnection());
  // Timing starts before body parsing, so Server-Timing's `broker` covers all of our own work.
  app.use((_req: Request, res: Response, next: NextFunction) => {
    res.locals.started = performance.now();
    next();
  });
  // Liveness, for a kubelet's livenessProbe: this process answers HTTP. It reads neither the lease
  // store nor the request body, and writes no audit record (an audit sink may live in the store), so
  // a store outage makes every replica unready (`/v1/sys/health` answers 503) but restarts none of
  // them: a restart cannot bring the store back. Vault's sys/health has no such mode, hence an extension.
  app.get('/v1/sys/broker/live', (_req: Request, res: Response) => {
    res.status(200).json({ alive: true, version: opts.health.version });
  });
  // Vault clients do not always send a JSON content type; any body is JSON here.
  app.use(express.json({ limit: opts.bodyLimit ?? '64kb', type: () => true, strict: true }));
  app.use(refuseUnstorableJson);

  app.use('/v1', async (req: Request, res: Response) => {
    const requestId = randomUUID();
    const started: number = res.locals.started ?? performance.now();
    const call = new ApiCall(req, requestId, opts, metrics);
    const { timings, result } = withTimings(() => call.run(routes));
    try {
      const reply = await result;
      const total = performance.now() - started;
      const broker = Math.max(0, total - timings.store - timings.target);
      if (reply.headers) res.set(reply.headers);
      res.set(
        'Server-Timing',
        `store;dur=${timings.store.toFixed(2)}, target;dur=${timings.target.toFixed(2)}, broker;dur=${broker.toFixed(2)}`,
      );
      if (reply.text !== undefined) res.status(reply.status).send(reply.text);
      else if (reply.body === undefined) res.status(reply.status).end();
      else res.status(reply.status).json(reply.body);
    } catch (err) {
      sendError(res, err, opts.log, requestId);
    }
    opts.log.info(
      {
        request_id: requestId,
        method: req.method,
        path: req.path,
        status: res.statusCode,
        ms: Math.round(performance.now() - started),
      },
      'request',
    );
  });

  app.use((_req: Request, res: Response) => {
    res.status(404).json({ errors: [] });
  });
  // Body-parser failures and anything else thrown before a route: a 4xx for the client's mistakes.
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => sendError(res, err, opts.log));
  return app;
}

/**
 * One API request: route, authenticate, audit the request (fail closed: no record, no action),
 * run the handler, audit the response. A response that cannot be audited is not sent, and a
 * lease it would have carried is revoked.
 */
class ApiCall {
  private identity: Identity | undefined;
  private readonly audit: RouteContext['audit'] = {};
  private path = '';
  private operation = '';
  /** X-Vault-Wrap-TTL in seconds, once the route is known; undefined: the answer goes out as it is. */
  private wrapTtl: number | undefined;
  /** The token of this request's wrapped answer, once sealed. */
  private wrapToken: string | undefined;

  constructor(
    private readonly req: Request,
    private readonly requestId: string,
    private readonly opts: AppOptions,
    private readonly metrics: BrokerMetrics,
  ) {}

  async run(routes: Route[]): Promise<Reply> {
    try {
      const reply = await this.wrapped(await this.dispatch(routes));
      await this.recordResponse(reply.status, reply.body, undefined);
      return reply;
    } catch (err) {
      if (err instanceof AuditUnavailable) throw err;
      // Recorded as answered: the same status and first error the client gets.
      const answer = errorReply(err, this.requestId);
      if (answer.status === 403) this.metrics.denied(this.identity);
      await this.recordResponse(answer.status, undefined, answer.body.errors[0] ?? '');
      throw err;
    }
  }

  private async dispatch(routes: Route[]): Promise<Reply> {
    this.path = decodePath(this.req.path.replace(/^\//, ''));
    const method = vaultMethod(this.req);
    this.operation = OPERATIONS[method ?? 'GET'];
    for (const route of routes) {
      const match = route.pattern.exec(this.path);
      if (!match) continue;
      const ctx: RouteContext = {
        req: this.req,
        requestId: this.requestId,
        params: match.slice(1).map((p) => p ?? ''),
        audit: this.audit,
      };
      if (!route.public) {
        this.identity = await this.authenticate().catch(async (err) => {
          // Refused before anyone is known: the body is not recorded, so no one fills the log with it.
          await this.recordRequest([]);
          throw err;
        });
        ctx.authz = new Authz(this.identity, this.opts.policies);
      }
      await this.recordRequest(route.public ? (route.auditFields ?? []) : undefined);
      const handler = method ? route.methods[method] : undefined;
      if (!handler) throw new UnsupportedOperation();
      // Before the handler: a bad TTL must not cost a credential.
      this.wrapTtl = parseWrapTtl(this.req.get('x-vault-wrap-ttl'));
      return handler(ctx);
    }
    this.identity = await this.authenticate();
    throw new UnknownPath(this.path);
  }

  /**
   * The answer sealed under a wrapping token when the request asked for it (a 200 with a body
   * that is not already a wrapped answer); the audit record sees only `wrap_info`. If it cannot
   * be stored, what the answer carried (a lease, a login token) is taken back and the answer is 503.
   */
  private async wrapped(reply: Reply): Promise<Reply> {
    const body = reply.body as Record<string, unknown> | undefined;
    if (this.wrapTtl === undefined || reply.status !== 200 || !body || typeof body !== 'object' || body.wrap_info)
      return reply;
    try {
      const info = await this.opts.wrapping.wrap(body, { ttlSeconds: this.wrapTtl, creationPath: this.path });
      this.wrapToken = info.token;
      return { ...reply, body: wrappedAnswer(this.requestId, info) };
    } catch (err) {
      this.opts.log.warn(
        { request_id: this.requestId, code: (err as { code?: unknown }).code ?? (err as Error).name },
        'response wrapping failed; what the answer carried is taken back',
      );
      if (this.audit.issued && this.audit.leaseId)
        await this.opts.leases.revoke(this.audit.leaseId).catch(() => undefined);
      // A login names the token it minted as the request's identity; renew-self's own token is not taken.
      const minted = this.audit.identity?.accessor;
      if (minted) await this.opts.auth.tokens.revoke(minted).catch(() => undefined);
      throw new StoreUnavailable('the wrapped answer could not be stored; nothing was handed out', { cause: err });
    }
  }

  /** The caller; a token presented but refused is an InvalidToken, told apart from a policy refusal as Vault does. */
  private async authenticate(): Promise<Identity> {
    const token = presentedToken(this.req);
    return this.opts.auth.authenticate(token).catch((err: unknown) => {
      throw token && err instanceof PermissionDenied ? new InvalidToken() : err;
    });
  }

  private base(): Omit<AuditRecord, 'type'> {
    return {
      time: new Date().toISOString(),
      request_id: this.requestId,
      ...((this.identity ?? this.audit.identity)
        ? { identity: identityRecord((this.identity ?? this.audit.identity)!) }
        : {}),
      remote_address: this.req.ip,
      operation: this.operation,
      path: this.path,
      ...(this.audit.leaseId ? { lease_id: this.audit.leaseId } : {}),
    };
  }

  /** The request record; `fields`, when given, are the only body fields it keeps. */
  private recordRequest(fields?: string[]): Promise<void> {
    const parsed =
      this.req.body && typeof this.req.body === 'object' && !Array.isArray(this.req.body)
        ? (this.req.body as Record<string, unknown>)
        : {};
    const body = fields
      ? Object.fromEntries(fields.filter((f) => Object.hasOwn(parsed, f)).map((f) => [f, parsed[f]]))
      : parsed;
    return this.opts.auditor.record({
      type: 'request',
      ...this.base(),
      data: { ...body, ...(presentedToken(this.req) ? { client_token: presentedToken(this.req) } : {}) },
    });
  }

  /** `error`: the error answered, when the request failed. */
  private async recordResponse(status: number, body: unknown, error: string | undefined): Promise<void> {
    const record: AuditRecord = {
      type: 'response',
      ...this.base(),
      status,
      outcome: error === undefined ? 'ok' : status === 403 ? 'denied' : 'error',
      ...(error !== undefined ? { error } : {}),
      ...(body && typeof body === 'object' ? { data: body as Record<string, unknown> } : {}),
    };
    try {
      await this.opts.auditor.record(record);
    } catch (auditErr) {
      // The secret must not leave unrecorded: take back what this request created.
      if (error === undefined && this.audit.issued && this.audit.leaseId) {
        await this.opts.leases.revoke(this.audit.leaseId).catch(() => undefined);
      }
      if (this.wrapToken) await this.opts.wrapping.discard(this.wrapToken).catch(() => undefined);
      throw auditErr;
    }
  }
}

const OPERATIONS: Record<Method, string> = { GET: 'read', HEAD: 'read', PUT: 'update', LIST: 'list' };
