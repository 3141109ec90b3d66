import type { Request } from 'express';
import type { Identity } from '../../auth/identity.js';
import type { Authz } from '../authz.js';

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
  /** A body sent as it is, not as JSON (its content-type in `headers`); never audited. */
  text?: string;
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

export const NO_CONTENT: Reply = { status: 204 };

export const iso = (d: Date | null) => (d ? d.toISOString() : null);
