/**
 * TTL arithmetic, pure: no clock but the one passed in, no I/O. Lease expiries themselves are
 * computed by the store (its now()), so these only decide how many seconds to ask for and word
 * the warnings.
 */

/** Vault's warning text, kept verbatim because clients show it. */
export function ttlCapWarning(requested: number, max: number): string {
  return `TTL of "${requested}s" exceeded the effective max_ttl of "${max}s"; TTL value is capped accordingly`;
}

/**
 * The TTL an issue asks for: the request's (or the role's default), capped by the role's max_ttl
 * and by a policy's allowed_ttl, which may cap below it; with a warning when capped.
 */
export function issueTtl(
  requested: number | undefined,
  role: { default_ttl: number; max_ttl: number },
  policyCap?: number,
): { ttl: number; warnings: string[] } {
  const ttl = requested || role.default_ttl;
  const cap = Math.min(role.max_ttl, policyCap ?? Infinity);
  return ttl > cap ? { ttl: cap, warnings: [ttlCapWarning(ttl, cap)] } : { ttl, warnings: [] };
}

/**
 * What a renewal asks for (the request's increment, or the role's default) and the increment it
 * gets past a policy's allowed_ttl. The lease's own max_ttl caps it further, in the store.
 */
export function renewIncrement(
  requested: number | undefined,
  defaultTtl: number,
  policyCap?: number,
): { asked: number; increment: number } {
  const asked = requested || defaultTtl;
  return { asked, increment: Math.min(asked, policyCap ?? Infinity) };
}

/** Whole seconds left, never negative, as a lease_duration or ttl is answered. */
export function wholeSeconds(secondsLeft: number): number {
  return Math.max(0, Math.round(secondsLeft));
}

/** Whole seconds from `now` until `date`, never negative. */
export function secondsUntil(date: Date, now: number = Date.now()): number {
  return wholeSeconds((date.getTime() - now) / 1000);
}
