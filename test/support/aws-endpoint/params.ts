// test-only: never shipped
/**
 * Query-protocol parameters: flat form fields such as `Tags.member.1.Key`, plus AWS-style input
 * validation ("1 validation error detected: Value 'x' at 'roleSessionName' failed to satisfy constraint: …").
 */
import { AwsError } from './errors.js';

export type Params = Record<string, string>;

/** Decodes an application/x-www-form-urlencoded body (or query string); later duplicates win. */
export function parseForm(text: string): Params {
  const out: Params = {};
  for (const [k, v] of new URLSearchParams(text)) out[k] = v;
  return out;
}

/** `Prefix.member.N` values, in N order. */
export function memberList(params: Params, prefix: string): string[] {
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.member\\.(\\d+)$`);
  return Object.entries(params)
    .flatMap(([k, v]) => {
      const m = re.exec(k);
      return m ? [[Number(m[1]), v] as const] : [];
    })
    .sort(([a], [b]) => a - b)
    .map(([, v]) => v);
}

/** `Prefix.member.N.Field` values grouped into one record per N, in N order. */
export function memberStructs(params: Params, prefix: string): Record<string, string>[] {
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.member\\.(\\d+)\\.(.+)$`);
  const byIndex = new Map<number, Record<string, string>>();
  for (const [k, v] of Object.entries(params)) {
    const m = re.exec(k);
    if (!m) continue;
    const n = Number(m[1]);
    byIndex.set(n, { ...byIndex.get(n), [m[2]!]: v });
  }
  return [...byIndex.entries()].sort(([a], [b]) => a - b).map(([, v]) => v);
}

export const NAME_PATTERN = /^[\w+=,.@-]*$/;

/** Collects constraint violations, then throws one 400 ValidationError listing them all, as AWS does. */
export class Validator {
  private readonly errors: string[] = [];

  private fail(value: string | undefined, member: string, constraint: string) {
    const shown = value === undefined ? 'null' : `'${value}'`;
    this.errors.push(`Value ${shown} at '${member}' failed to satisfy constraint: ${constraint}`);
  }

  /** A string member; returns it (or undefined) whether or not it was valid. */
  string(
    params: Params,
    field: string,
    rules: { required?: boolean; min?: number; max?: number; pattern?: RegExp; member?: string } = {},
  ): string | undefined {
    const member = rules.member ?? field.charAt(0).toLowerCase() + field.slice(1);
    const value = params[field];
    if (value === undefined) {
      if (rules.required) this.fail(undefined, member, 'Member must not be null');
      return undefined;
    }
    this.check(value, member, rules);
    return value;
  }

  check(value: string, member: string, rules: { min?: number; max?: number; pattern?: RegExp }) {
    if (rules.min !== undefined && value.length < rules.min) {
      this.fail(value, member, `Member must have length greater than or equal to ${rules.min}`);
    } else if (rules.max !== undefined && value.length > rules.max) {
      this.fail(value, member, `Member must have length less than or equal to ${rules.max}`);
    } else if (rules.pattern && !rules.pattern.test(value)) {
      this.fail(value, member, `Member must satisfy regular expression pattern: ${rules.pattern.source}`);
    }
  }

  /** An integer member within [min, max]. */
  integer(params: Params, field: string, min: number, max: number): number | undefined {
    const member = field.charAt(0).toLowerCase() + field.slice(1);
    const raw = params[field];
    if (raw === undefined) return undefined;
    if (!/^-?\d+$/.test(raw)) {
      this.fail(raw, member, 'Member must be an integer');
      return undefined;
    }
    const n = Number(raw);
    if (n < min) this.fail(raw, member, `Member must have value greater than or equal to ${min}`);
    else if (n > max) this.fail(raw, member, `Member must have value less than or equal to ${max}`);
    return n;
  }

  listSize(items: unknown[], member: string, max: number) {
    if (items.length > max)
      this.errors.push(
        `Value at '${member}' failed to satisfy constraint: Member must have length less than or equal to ${max}`,
      );
  }

  done(): void {
    const n = this.errors.length;
    if (n === 0) return;
    throw new AwsError(
      400,
      'ValidationError',
      `${n} validation error${n === 1 ? '' : 's'} detected: ${this.errors.join('; ')}`,
    );
  }
}

export interface Tag {
  Key: string;
  Value: string;
}

/** `Tags.member.N.Key/Value`, validated as IAM/STS tags (≤ 50, key 1–128, value ≤ 256, unique keys ignoring case). */
export function readTags(params: Params, v: Validator): Tag[] {
  const tags = memberStructs(params, 'Tags').map((t) => ({ Key: t.Key ?? '', Value: t.Value ?? '' }));
  v.listSize(tags, 'tags', 50);
  tags.forEach((t, i) => {
    v.check(t.Key, `tags.${i + 1}.member.key`, { min: 1, max: 128, pattern: /^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$/u });
    v.check(t.Value, `tags.${i + 1}.member.value`, { max: 256, pattern: /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u });
  });
  const lower = tags.map((t) => t.Key.toLowerCase());
  if (new Set(lower).size !== lower.length) {
    throw new AwsError(
      400,
      'InvalidParameterValue',
      'Duplicate tag keys found. Please note that Tag keys are case insensitive.',
    );
  }
  return tags;
}
