import type { Logger } from 'pino';
import { messageOf } from '../errors.js';
import type { LeaseService } from '../leases/lease-service.js';
import type { TokenStore } from './token-store.js';

/**
 * As in Vault, a token that expires takes its leases with it, unless its auth role said
 * otherwise (revoke_leases_with_token: false). A plain periodic function: the timer only calls it.
 */
export async function expireTokensOnce(
  tokens: TokenStore,
  leases: LeaseService,
  log: Logger,
  limit = 100,
): Promise<number> {
  let revoked = 0;
  for (const token of await tokens.claimExpired(limit)) {
    try {
      revoked += await leases.revokeByAccessor(token.accessor);
    } catch (err) {
      // The leases stay live until their own expiry; the reaper still ends them then.
      log.warn({ accessor: token.accessor, err: messageOf(err) }, 'could not revoke the leases of an expired token');
    }
  }
  return revoked;
}
