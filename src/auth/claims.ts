/** Reads a claim by name, or by JSON pointer when it starts with "/" (e.g. /kubernetes.io/namespace). */
export function claimValue(claims: Record<string, unknown>, selector: string): unknown {
  if (!selector.startsWith('/')) return claims[selector];
  let value: unknown = claims;
  for (const raw of selector.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!value || typeof value !== 'object' || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

/**
 * `*` matches any run of characters (none included); everything else is literal. Runs in time
 * linear in the value's length (times the pattern's, which config bounds), whatever either holds:
 * the value is a signed claim an attacker chooses, so no backtracking regex. Greedy leftmost
 * matching of the literal pieces between stars is exact for a pattern whose only wildcard is `*`.
 */
export function globMatches(pattern: string, value: string): boolean {
  const pieces = pattern.split('*');
  if (pieces.length === 1) return pattern === value;
  const first = pieces[0]!;
  const last = pieces[pieces.length - 1]!;
  if (value.length < first.length + last.length || !value.startsWith(first) || !value.endsWith(last)) return false;
  let at = first.length;
  const end = value.length - last.length;
  for (const piece of pieces.slice(1, -1)) {
    if (piece === '') continue;
    const found = value.indexOf(piece, at);
    if (found === -1 || found + piece.length > end) return false;
    at = found + piece.length;
  }
  return true;
}

/** True when the claim (a string, or a list of strings) matches one of the allowed patterns. */
export function claimMatches(value: unknown, allowed: string | string[]): boolean {
  const patterns = Array.isArray(allowed) ? allowed : [allowed];
  const values = Array.isArray(value) ? value : [value];
  return values.some((v) => typeof v === 'string' && patterns.some((p) => globMatches(p, v)));
}
