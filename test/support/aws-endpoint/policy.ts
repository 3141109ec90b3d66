// test-only: never shipped
/**
 * Policy documents: JSON/grammar checks, IAM's size measure (characters other than whitespace),
 * and a deliberately small Deny evaluator used to test revocation of assumed-role sessions.
 *
 * Evaluator scope (anything else is out of scope, on purpose):
 *  - only statements with "Effect": "Deny" are looked at; this endpoint allows everything not denied;
 *  - "Action" (string or list, `*` / `?` wildcards, case-insensitive) must match `<service>:<Action>`;
 *    a statement with "NotAction" is ignored; "Resource" / "NotResource" are not evaluated;
 *  - "Condition": every operator block must match (AND), every key within a block must match (AND),
 *    any of a key's values may match (OR). A missing context key never matches;
 *  - supported operators: StringEquals, StringLike (case-sensitive, `*`/`?`), DateLessThan.
 *    A statement using any other operator (StringNotEquals, …IfExists, ForAnyValue:…, Null, …) is
 *    IGNORED as a whole, i.e. it denies nothing — a test relying on it will notice;
 *  - context keys (names case-insensitive): aws:PrincipalTag/<key> (session tags, key case-insensitive),
 *    aws:SourceIdentity and sts:SourceIdentity, aws:TokenIssueTime (session issue time, ms precision).
 */
import { AwsError } from './errors.js';

export interface Statement {
  Effect?: unknown;
  Action?: unknown;
  NotAction?: unknown;
  Condition?: unknown;
}

/** IAM counts policy size without whitespace. */
export const packedLength = (document: string) => document.replace(/\s/g, '').length;

/** Parses a session policy (STS): any JSON object is accepted. */
export function parseSessionPolicy(text: string): unknown {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new AwsError(400, 'MalformedPolicyDocument', 'The policy is not in the valid JSON format.');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new AwsError(400, 'MalformedPolicyDocument', 'The policy is not in the valid JSON format.');
  }
  return doc;
}

/** Validates an identity policy (IAM Put*Policy): JSON object with Statement(s) having Effect and Action/NotAction. */
export function validateIdentityPolicy(text: string): Statement[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new AwsError(400, 'MalformedPolicyDocument', 'This policy contains invalid Json');
  }
  const statements = statementsOf(doc);
  const bad =
    !statements ||
    statements.length === 0 ||
    statements.some(
      (s) => (s.Effect !== 'Allow' && s.Effect !== 'Deny') || (s.Action === undefined && s.NotAction === undefined),
    );
  if (bad) throw new AwsError(400, 'MalformedPolicyDocument', 'Syntax errors in policy.');
  return statements!;
}

function statementsOf(doc: unknown): Statement[] | undefined {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return undefined;
  const s = (doc as { Statement?: unknown }).Statement;
  const list = Array.isArray(s) ? s : s === undefined ? [] : [s];
  return list.every((x) => typeof x === 'object' && x !== null && !Array.isArray(x))
    ? (list as Statement[])
    : undefined;
}

const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);

function globToRegExp(glob: string, flags: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`, flags);
}

function parseDate(value: unknown): number | undefined {
  if (typeof value === 'number') return value * 1000;
  if (typeof value !== 'string') return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : t;
}

type Operator = (contextValue: string, policyValue: unknown) => boolean;

const OPERATORS: Record<string, Operator> = {
  StringEquals: (c, p) => typeof p === 'string' && c === p,
  StringLike: (c, p) => typeof p === 'string' && globToRegExp(p, '').test(c),
  DateLessThan: (c, p) => {
    const [ct, pt] = [parseDate(c), parseDate(p)];
    return ct !== undefined && pt !== undefined && ct < pt;
  },
};

/** Request context: lower-cased condition key -> its single value. */
export type ConditionContext = Map<string, string>;

function conditionMatches(condition: unknown, context: ConditionContext): boolean | 'unsupported' {
  if (condition === undefined) return true;
  if (typeof condition !== 'object' || condition === null) return 'unsupported';
  for (const [operator, block] of Object.entries(condition)) {
    const op = OPERATORS[operator];
    if (!op || typeof block !== 'object' || block === null) return 'unsupported';
    for (const [key, values] of Object.entries(block)) {
      const contextValue = context.get(key.toLowerCase());
      if (contextValue === undefined) return false;
      if (!asList(values).some((v) => op(contextValue, v))) return false;
    }
  }
  return true;
}

/**
 * Name of the first inline policy with a Deny statement that applies to `action` in this context,
 * or undefined when nothing denies it.
 */
export function findDeny(policies: Map<string, string>, action: string, context: ConditionContext): string | undefined {
  for (const [name, text] of policies) {
    let statements: Statement[] | undefined;
    try {
      statements = statementsOf(JSON.parse(text));
    } catch {
      continue;
    }
    for (const s of statements ?? []) {
      if (s.Effect !== 'Deny' || s.NotAction !== undefined) continue;
      const actions = asList(s.Action).filter((a): a is string => typeof a === 'string');
      if (!actions.some((a) => globToRegExp(a, 'i').test(action))) continue;
      if (conditionMatches(s.Condition, context) === true) return name;
    }
  }
  return undefined;
}
