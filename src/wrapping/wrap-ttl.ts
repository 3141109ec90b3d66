import { parseDurationSeconds } from '../duration.js';
import { InvalidRequest } from '../errors.js';

/** Vault's shortest wrapping TTL. */
export const MIN_WRAP_TTL_SECONDS = 1;
/**
 * Our longest: 30 days. A wrapping token is for handing a secret over, not keeping it; Vault's
 * own ceiling is the system max TTL (32 days by default), and a policy may set a lower one.
 */
export const MAX_WRAP_TTL_SECONDS = 30 * 86400;

const RANGE = `X-Vault-Wrap-TTL must be a whole number of seconds or a duration like "60s" or "5m", from ${MIN_WRAP_TTL_SECONDS} second to ${MAX_WRAP_TTL_SECONDS} seconds (30 days)`;

/**
 * The TTL an `X-Vault-Wrap-TTL` header asks for, in whole seconds ("60", "60s", "5m"), or
 * undefined when the header is absent or empty (no wrapping). A bad or out-of-range value is a
 * 400, raised before the request does anything.
 */
export function parseWrapTtl(header: string | undefined): number | undefined {
  if (header === undefined || header.trim() === '') return undefined;
  if (header.trim().startsWith('-')) throw new InvalidRequest('requested wrap ttl cannot be negative');
  let seconds: number;
  try {
    seconds = parseDurationSeconds(header, 'X-Vault-Wrap-TTL');
  } catch {
    throw new InvalidRequest(RANGE);
  }
  if (seconds < MIN_WRAP_TTL_SECONDS || seconds > MAX_WRAP_TTL_SECONDS) throw new InvalidRequest(RANGE);
  return seconds;
}
