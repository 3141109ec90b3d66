import { InvalidRequest } from './errors.js';

/** Ten years: any longer TTL is a mistake, and would overflow date arithmetic further on. */
const MAX_SECONDS = 10 * 365 * 86400;

const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
const GO_DURATION = /^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$/;
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;

/**
 * Parses a TTL as Vault accepts it: whole seconds (`3600`, `"3600"`) or a Go-style
 * duration (`90s`, `1h30m`). Returns whole seconds; throws InvalidRequest on anything else.
 * @example parseDurationSeconds('1h30m') // 5400
 */
export function parseDurationSeconds(value: unknown, field = 'ttl'): number {
  return bounded(parse(value, field), field);
}

function parse(value: unknown, field: string): number {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0) return value;
  } else if (typeof value === 'string') {
    const s = value.trim();
    if (/^\d{1,12}$/.test(s)) return Number(s);
    if (s.length <= 32 && GO_DURATION.test(s)) {
      let total = 0;
      for (const [, n, unit] of s.matchAll(PART)) total += Number(n) * UNIT_SECONDS[unit!]!;
      return Math.floor(total);
    }
  }
  throw new InvalidRequest(`${field} must be a non-negative whole number of seconds or a duration like "90s", "1h"`);
}

function bounded(seconds: number, field: string): number {
  if (seconds > MAX_SECONDS)
    throw new InvalidRequest(`${field} is too large: at most ${MAX_SECONDS} seconds (10 years)`);
  return seconds;
}
