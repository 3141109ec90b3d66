import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { InvalidRequest, PermissionDenied, UnknownPath, UnsupportedOperation } from '../errors.js';
import type { LeaseService } from '../leases/lease-service.js';
import { withTimings } from '../timing.js';
import { sendError } from './error-response.js';
import { buildRoutes, type HealthState, type Method, type Route } from './routes.js';

export interface AppOptions {
  leases: LeaseService;
  rootToken: string;
  health: HealthState;
  log: Logger;
  /** Largest accepted request body. */
  bodyLimit?: string;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** The token from `X-Vault-Token` or `Authorization: Bearer`. */
function presentedToken(req: Request): string | undefined {
  const header = req.get('x-vault-token');
  if (header) return header;
  const auth = req.get('authorization');
  return auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
}

/** POST is PUT, `GET ?list=true` is LIST, as in Vault. */
function vaultMethod(req: Request): Method | null {
  switch (req.method) {
    case 'GET':
      return req.query.list === 'true' || req.query.list === '1' ? 'LIST' : 'GET';
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

/** The HTTP API: Vault's dynamic-secrets subset. Routing, validation and error mapping only. */
export function createApp(opts: AppOptions): express.Express {
  const routes = buildRoutes(opts.leases, opts.health);
  const rootDigest = digest(opts.rootToken);
  const isRoot = (token: string | undefined) => token !== undefined && timingSafeEqual(digest(token), rootDigest);

  const app = express();
  app.disable('x-powered-by');
  // Vault sends no ETag; without one, a small JSON answer leaves in a single write with its headers.
  app.set('etag', false);
  app.set('query parser', 'simple');
  // Timing starts before body parsing, so Server-Timing's `broker` covers all of our own work.
  app.use((req: Request, res: Response, next: NextFunction) => {
    res.locals.started = performance.now();
    next();
  });
  // Vault clients do not always send a JSON content type; any body is JSON here.
  app.use(express.json({ limit: opts.bodyLimit ?? '64kb', type: () => true, strict: true }));

  app.use('/v1', async (req: Request, res: Response) => {
    const requestId = randomUUID();
    const started: number = res.locals.started ?? performance.now();
    const { timings, result } = withTimings(() => dispatch(routes, req, requestId, isRoot));
    try {
      const reply = await result;
      const total = performance.now() - started;
      const broker = Math.max(0, total - timings.store - timings.target);
      res.set('Server-Timing', `store;dur=${timings.store.toFixed(2)}, target;dur=${timings.target.toFixed(2)}, broker;dur=${broker.toFixed(2)}`);
      if (reply.body === undefined) res.status(reply.status).end();
      else res.status(reply.status).json(reply.body);
    } catch (err) {
      sendError(res, err, opts.log, requestId);
    }
    opts.log.info({ request_id: requestId, method: req.method, path: req.path, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'request');
  });

  app.use((req: Request, res: Response) => {
    res.status(404).json({ errors: [] });
  });
  // Body-parser failures and anything else thrown before a route: a 4xx for the client's mistakes.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => sendError(res, err, opts.log));
  return app;
}

async function dispatch(routes: Route[], req: Request, requestId: string, isRoot: (t: string | undefined) => boolean) {
  const path = decodePath(req.path.replace(/^\//, ''));
  for (const route of routes) {
    const match = route.pattern.exec(path);
    if (!match) continue;
    if (!route.public && !isRoot(presentedToken(req))) throw new PermissionDenied();
    const method = vaultMethod(req);
    const handler = method ? route.methods[method] : undefined;
    if (!handler) throw new UnsupportedOperation();
    return handler({ req, requestId, params: match.slice(1).map((p) => p ?? ''), requester: 'root' });
  }
  if (!isRoot(presentedToken(req))) throw new PermissionDenied();
  throw new UnknownPath(path);
}
