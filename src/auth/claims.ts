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

/** `*` matches any run of characters; everything else is literal. */
export function globMatches(pattern: string, value: string): boolean {
  const regex = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return regex.test(value);
}

/** True when the claim (a string, or a list of strings) matches one of the allowed patterns. */
export function claimMatches(value: unknown, allowed: string | string[]): boolean {
  const patterns = Array.isArray(allowed) ? allowed : [allowed];
  const values = Array.isArray(value) ? value : [value];
  return values.some((v) => typeof v === 'string' && patterns.some((p) => globMatches(p, v)));
}
