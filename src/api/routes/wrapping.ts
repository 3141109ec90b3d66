import { z } from 'zod';
import type { JsonValue } from '../../engines.js';
import { InvalidRequest } from '../../errors.js';
import type { WrapInfo, WrappingService } from '../../wrapping/wrapping-service.js';
import { envelope } from '../envelope.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, type Route, type RouteContext } from './route.js';

const tokenRequest = z.object({ token: z.string().max(200, 'token is too long').optional() }).passthrough();

/** Vault's wrapped answer: everything in `wrap_info`, nothing else. */
export function wrappedAnswer(requestId: string, wrapInfo: WrapInfo) {
  return { ...envelope(requestId, {}), wrap_info: wrapInfo };
}

/** The wrapping token: `token` in the body, else the request's own token (Vault takes either, not both). */
function wrappingToken(ctx: RouteContext): string | undefined {
  const { token } = parseBody(tokenRequest, ctx.req.body);
  if (token) return token;
  const bearer = ctx.req.get('authorization');
  return ctx.req.get('x-vault-token') || (bearer?.startsWith('Bearer ') ? bearer.slice(7) : undefined);
}

/**
 * Vault's sys/wrapping paths. Unwrap, lookup and rewrap authenticate by the wrapping token itself
 * (possession is the authority), so they are public, and their audit records keep only `token`,
 * HMAC'd like the request's own token. Wrap needs a broker token allowed `update` on its path.
 */
export function wrappingRoutes(wrapping: WrappingService): Route[] {
  const byToken: Pick<Route, 'public' | 'auditFields'> = { public: true, auditFields: ['token'] };
  return [
    {
      pattern: /^sys\/wrapping\/unwrap$/,
      ...byToken,
      methods: {
        PUT: async (ctx) => {
          const { answer, warnings } = await wrapping.unwrap(wrappingToken(ctx));
          if (typeof answer.lease_id === 'string' && answer.lease_id) {
            ctx.audit.leaseId = answer.lease_id;
            // The token is spent: if this answer cannot be audited and sent, no one will ever hold
            // its credential, so it is taken back like one just issued.
            ctx.audit.issued = true;
          }
          const kept = Array.isArray(answer.warnings) ? (answer.warnings as string[]) : [];
          const all = [...kept, ...warnings];
          return { status: 200, body: { ...answer, request_id: ctx.requestId, warnings: all.length ? all : null } };
        },
      },
    },
    {
      pattern: /^sys\/wrapping\/lookup$/,
      ...byToken,
      methods: {
        PUT: async (ctx) => ({
          status: 200,
          body: envelope(ctx.requestId, { data: await wrapping.lookup(wrappingToken(ctx)) }),
        }),
      },
    },
    {
      pattern: /^sys\/wrapping\/rewrap$/,
      ...byToken,
      methods: {
        PUT: async (ctx) => {
          const { wrapInfo, leaseId } = await wrapping.rewrap(wrappingToken(ctx));
          // As for unwrap: the old token is spent, so an answer that cannot be sent takes its lease back.
          if (leaseId) Object.assign(ctx.audit, { leaseId, issued: true });
          return { status: 200, body: wrappedAnswer(ctx.requestId, wrapInfo) };
        },
      },
    },
    {
      // The answer is the body itself, wrapped by the X-Vault-Wrap-TTL hook like any other answer.
      pattern: /^sys\/wrapping\/wrap$/,
      methods: {
        PUT: async (ctx) => {
          authzOf(ctx).require('sys/wrapping/wrap', ['update', 'create']);
          if (!ctx.req.get('x-vault-wrap-ttl'))
            throw new InvalidRequest(
              'sys/wrapping/wrap needs an X-Vault-Wrap-TTL header: the TTL of the wrapping token',
            );
          const data = parseBody(z.record(z.string(), z.unknown()), ctx.req.body) as Record<string, JsonValue>;
          return { status: 200, body: envelope(ctx.requestId, { data }) };
        },
      },
    },
  ];
}
