/** How deep a JSON value may nest: far beyond any real request, far below a stack overflow. */
export const MAX_JSON_DEPTH = 64;

export interface JsonShape {
  /** Nested deeper than the limit (a scalar at top level has depth 0). */
  tooDeep: boolean;
  /** A string or object key contains U+0000, which PostgreSQL cannot store in text or jsonb. */
  hasNul: boolean;
}

/**
 * Inspects a parsed JSON value without recursion (an explicit stack), so a value nested thousands
 * deep is measured, not overflowed on. Stops walking once it is known to be too deep.
 */
export function inspectJson(value: unknown, maxDepth = MAX_JSON_DEPTH): JsonShape {
  let hasNul = false;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (typeof v === 'string') {
      hasNul ||= v.includes('\u0000');
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth >= maxDepth) return { tooDeep: true, hasNul };
    if (Array.isArray(v)) {
      for (const item of v) stack.push([item, depth + 1]);
      continue;
    }
    for (const [key, item] of Object.entries(v)) {
      hasNul ||= key.includes('\u0000');
      stack.push([item, depth + 1]);
    }
  }
  return { tooDeep: false, hasNul };
}
