type Token = { literal: string } | { star: 'segment' | 'any' };

function tokenize(pattern: string): Token[] {
  const tokens: Token[] = [];
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] !== '*') tokens.push({ literal: pattern[i]! });
    else if (pattern[i + 1] === '*') {
      tokens.push({ star: 'any' });
      i++;
    } else tokens.push({ star: 'segment' });
  }
  return tokens;
}

/**
 * A glob for URIs such as SPIFFE IDs: `*` matches any run of characters within one path segment
 * (never a `/`), `**` any run at all; everything else is literal. The value comes from a client's
 * certificate, so this walks pattern positions as a set (no backtracking): time is the value's
 * length times the pattern's, which the config bounds.
 */
export function uriGlobMatches(pattern: string, value: string): boolean {
  const tokens = tokenize(pattern);
  let states: Uint8Array = new Uint8Array(tokens.length + 1);
  // A star may match nothing: reaching it also reaches what follows it.
  const close = (set: Uint8Array): Uint8Array => {
    for (let i = 0; i < tokens.length; i++) if (set[i] && 'star' in tokens[i]!) set[i + 1] = 1;
    return set;
  };
  states[0] = 1;
  close(states);
  // UTF-16 units on both sides, as the pattern was split.
  for (let at = 0; at < value.length; at++) {
    const ch = value[at]!;
    const next = new Uint8Array(tokens.length + 1);
    let alive = false;
    for (let i = 0; i < tokens.length; i++) {
      if (!states[i]) continue;
      const token = tokens[i]!;
      if ('literal' in token ? token.literal === ch : token.star === 'any' || ch !== '/') {
        // A literal moves on; a star stays where it is, to take the next character too.
        next['literal' in token ? i + 1 : i] = 1;
        alive = true;
      }
    }
    if (!alive) return false;
    states = close(next);
  }
  return states[tokens.length] === 1;
}
