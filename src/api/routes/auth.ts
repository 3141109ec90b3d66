import type { Request } from 'express';
import { z } from 'zod';
import type { AuthService } from '../../auth/auth-service.js';
import { peerCertificatesOf, type PeerSocket } from '../../auth/peer-certificates.js';
import type { TokenRow } from '../../auth/token-store.js';
import { InvalidRequest, PermissionDenied } from '../../errors.js';
import type { LeaseService } from '../../leases/lease-service.js';
import { secondsUntil } from '../../leases/ttl.js';
import { envelope } from '../envelope.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, type Route } from './route.js';
import { parseDurationSeconds } from '../../duration.js';

const loginRequest = z
  .object({ role: z.unknown().optional(), jwt: z.unknown().optional(), name: z.unknown().optional() })
  .passthrough();
const renewSelfRequest = z.object({ increment: z.union([z.number(), z.string()]).nullish() }).passthrough();

/** Vault's token data, as `lookup-self` answers it (without the token itself). */
function tokenData(row: TokenRow) {
  return {
    accessor: row.accessor,
    creation_time: Math.floor(row.issued_at.getTime() / 1000),
    display_name: `${row.identity.auth_mount}-${row.identity.display_name ?? row.identity.name}`,
    entity_id: '',
    expire_time: row.expires_at.toISOString(),
    explicit_max_ttl: Math.round((row.max_expires_at.getTime() - row.issued_at.getTime()) / 1000),
    issue_time: row.issued_at.toISOString(),
    meta: row.identity.metadata ?? {},
    num_uses: 0,
    orphan: true,
    path: `auth/${row.identity.auth_mount}/login`,
    policies: row.policies,
    renewable: true,
    ttl: secondsUntil(row.expires_at),
    type: 'service',
  };
}

/** The token the request presented (X-Vault-Token, or a bearer): the caller's own, which it may be shown. */
function presentedToken(req: Request): string {
  const bearer = req.get('authorization');
  return req.get('x-vault-token') || (bearer?.startsWith('Bearer ') ? bearer.slice(7) : '');
}

function authBlock(token: string, row: TokenRow) {
  return {
    client_token: token,
    accessor: row.accessor,
    policies: row.policies,
    token_policies: row.policies,
    metadata: row.identity.metadata ?? {},
    lease_duration: secondsUntil(row.expires_at),
    renewable: true,
    entity_id: '',
    token_type: 'service',
    orphan: true,
  };
}

/** Logins (jwt, kubernetes, cert) and Vault's token self-service routes. */
export function authRoutes(auth: AuthService, leases: LeaseService): Route[] {
  return [
    {
      pattern: /^auth\/token\/lookup-self$/,
      methods: {
        GET: async (ctx) => {
          const identity = authzOf(ctx).identity;
          if (identity.root)
            return {
              status: 200,
              body: envelope(ctx.requestId, {
                data: { display_name: 'root', policies: ['root'], ttl: 0, expire_time: null, meta: {} },
              }),
            };
          const row = await auth.tokens.find(presentedToken(ctx.req));
          if (!row) throw new PermissionDenied();
          return { status: 200, body: envelope(ctx.requestId, { data: tokenData(row) }) };
        },
      },
    },
    {
      pattern: /^auth\/token\/renew-self$/,
      methods: {
        PUT: async (ctx) => {
          const { increment } = parseBody(renewSelfRequest, ctx.req.body);
          const row = await auth.renewSelf(
            authzOf(ctx).identity,
            increment === undefined || increment === null ? undefined : parseDurationSeconds(increment, 'increment'),
          );
          // As Vault: the renewed token is the one presented, given back as client_token.
          return {
            status: 200,
            body: { ...envelope(ctx.requestId, {}), auth: authBlock(presentedToken(ctx.req), row) },
          };
        },
      },
    },
    {
      pattern: /^auth\/token\/revoke-self$/,
      methods: {
        PUT: async (ctx) => {
          const identity = authzOf(ctx).identity;
          if (identity.root)
            throw new InvalidRequest(
              'the root token cannot revoke itself: it is set in the broker config (root_token); change it there and restart the broker',
            );
          if (!identity.accessor) return { status: 204 };
          const row = await auth.tokens.revoke(identity.accessor);
          if (row?.revoke_leases) await leases.revokeByAccessor(row.accessor);
          return { status: 204 };
        },
      },
    },
    {
      pattern: /^auth\/([^/]+)\/login$/,
      auditFields: ['role', 'jwt', 'name'],
      public: true,
      methods: {
        PUT: async (ctx) => {
          const { token, row, identity } = await auth.login(
            ctx.params[0]!,
            parseBody(loginRequest, ctx.req.body),
            peerCertificatesOf(ctx.req.socket as PeerSocket),
          );
          ctx.audit.identity = identity;
          return { status: 200, body: { ...envelope(ctx.requestId, {}), auth: authBlock(token, row) } };
        },
      },
    },
  ];
}
