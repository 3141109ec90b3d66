import { describe, expect, it } from 'vitest';
import { parseDurationSeconds } from '../../src/duration.js';
import { InvalidRequest } from '../../src/errors.js';

describe('parseDurationSeconds', () => {
  it.each([
    [3600, 3600],
    [0, 0],
    ['3600', 3600],
    ['90s', 90],
    ['15m', 900],
    ['1h30m', 5400],
    ['1d', 86400],
    ['2h0m5s', 7205],
    [' 90s ', 90],
  ])('accepts %j as %i seconds', (input, seconds) => {
    expect(parseDurationSeconds(input)).toBe(seconds);
  });

  it('rounds a sub-second remainder down to whole seconds', () => {
    expect(parseDurationSeconds('1500ms')).toBe(1);
    expect(parseDurationSeconds('1.5m')).toBe(90);
  });

  it.each([
    ['a negative number', -1],
    ['a fraction of a second', 1.5],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['a number past the safe integer range', Number.MAX_SAFE_INTEGER + 2],
    ['a word', 'abc'],
    ['an unknown unit', '1x'],
    ['an empty string', ''],
    ['a unit without a number', 'h'],
    ['a negative duration', '-5m'],
    ['a number of seconds with more than 12 digits', '1234567890123'],
    ['a duration string longer than 32 characters', '1s'.repeat(17)],
    ['a very long string', `${'9'.repeat(100_000)}s`],
    ['an object', { seconds: 5 }],
    ['an array', [60]],
    ['null', null],
    ['undefined', undefined],
    ['a boolean', true],
  ])('rejects %s', (_label, input) => {
    expect(() => parseDurationSeconds(input)).toThrow(InvalidRequest);
  });

  it('names the field in its error message', () => {
    expect(() => parseDurationSeconds('soon', 'increment')).toThrow(
      /^increment must be a non-negative whole number of seconds or a duration like "90s", "1h"$/,
    );
  });
});
