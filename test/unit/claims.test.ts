import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { claimMatches, claimValue, globMatches } from '../../src/auth/claims.js';

/** The obvious definition, as a regex: fine for the short inputs the property test uses. */
const reference = (pattern: string, value: string) =>
  new RegExp(
    `^${pattern
      .split('*')
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
    's',
  ).test(value);

describe('globMatches', () => {
  it.each([
    ['etl', 'etl', true],
    ['etl', 'etl-x', false],
    ['etl-*', 'etl-', true],
    ['etl-*', 'etl-reader', true],
    ['*-reader', 'etl-reader', true],
    ['*', '', true],
    ['a*b*c', 'abc', true],
    ['a*b*c', 'acb', false],
    ['a*a', 'a', false],
    ['ab*ba', 'aba', false],
    ['system:serviceaccount:*:reader', 'system:serviceaccount:etl:reader', true],
  ])('%s against %s: %s', (pattern, value, expected) => {
    expect(globMatches(pattern, value)).toBe(expected);
  });

  it('agrees with the regex definition on any pattern and value (fuzzed)', () => {
    const text = (max: number) => fc.string({ unit: fc.constantFrom('a', 'b', '*', '.', '\n'), maxLength: max });
    fc.assert(
      fc.property(
        text(8),
        fc.string({ unit: fc.constantFrom('a', 'b', '.', '*', '\n'), maxLength: 14 }),
        (pattern, value) => {
          expect(globMatches(pattern, value)).toBe(reference(pattern, value));
        },
      ),
      { numRuns: 5000 },
    );
  });

  it.each([
    ['many stars', '*a*a*a*a*a*a*a*a*b'],
    ['stars around a long piece', `*${'a'.repeat(50)}b*`],
    ['a prefix and a suffix that almost fit', `${'a'.repeat(100)}*${'a'.repeat(100)}c`],
  ])(
    'a 100 KB signed claim against %s is answered at once, not after seconds of backtracking',
    (_, pattern) => {
      const claim = 'a'.repeat(100_000);
      const started = performance.now();
      expect(globMatches(pattern, claim)).toBe(false);
      expect(claimMatches(claim, [pattern, 'x*'])).toBe(false);
      expect(performance.now() - started).toBeLessThan(200);
    },
    5000,
  );
});

describe('claimValue', () => {
  it('reads a claim by name or by JSON pointer, never through the prototype', () => {
    const claims = { sub: 's', 'kubernetes.io': { namespace: 'etl' }, 'a/b': { '~': 1 } };
    expect(claimValue(claims, 'sub')).toBe('s');
    expect(claimValue(claims, '/kubernetes.io/namespace')).toBe('etl');
    expect(claimValue(claims, '/a~1b/~0')).toBe(1);
    expect(claimValue(claims, '/kubernetes.io/constructor')).toBeUndefined();
  });
});
